"""Every notebook in notebooks/ runs top to bottom in a real kernel without errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.notebook

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


@pytest.mark.timeout(300)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path: Path, tmp_path: Path) -> None:
    work = tmp_path / path.name
    shutil.copy(path, work)
    nb = nbformat.read(work, as_version=4)  # type: ignore[no-untyped-call]
    NotebookClient(nb, timeout=240, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors, errors
    if path.stem == "01_quickstart":
        assert list((tmp_path / "daqlab-runs").glob("*.nc")), "the notebook saved no run"
    if path.stem == "02_live_view":  # the views drew from their threads while the cells ran
        shown = [o for c in nb.cells for o in c.get("outputs", [])
                 if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
        assert len(shown) >= 3, shown


def test_there_are_notebooks() -> None:
    assert NOTEBOOKS, "notebooks/ is empty"
