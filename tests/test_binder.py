"""Binder builds: binder/ pins a Python daqlab supports, installs, and runs every notebook.

Binder itself needs Docker and the internet, so the suite checks the two halves apart:
repo2docker's Dockerfile (``--no-build``, offline) and a fresh venv built from binder/.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import nbformat
import pytest
from packaging.specifiers import SpecifierSet

from tests.helpers import require_tool

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
# What git ignores (environments, caches, build output): a copy of the work tree leaves it out, so
# new, not yet committed modules are still installed.
_NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "*.egg-info", "__pycache__", ".*_cache",
                                     ".hypothesis", "daqlab-runs", "build", "dist", "test-artifacts")
_PROBE = "BINDER-PROBE"


def _pinned_python() -> str:
    """The ``X.Y`` Python version binder/runtime.txt pins, in the syntax repo2docker accepts."""
    runtime = REPO / "binder" / "runtime.txt"
    assert runtime.is_file(), ("binder/runtime.txt is missing: without it repo2docker builds with its "
                               "default Python (3.10), below daqlab's requires-python")
    text = runtime.read_text().strip()
    # repo2docker wants exactly major.minor: it picks its conda lock file by that name.
    match = re.fullmatch(r"python-(\d+\.\d+)", text)
    assert match, f"binder/runtime.txt says {text!r}; repo2docker wants 'python-X.Y', e.g. 'python-3.11'"
    return match.group(1)


def _copy_repo(dst: Path) -> Path:
    shutil.copytree(REPO, dst, ignore=_NOT_SOURCE)
    return dst


def _contents(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None,
         timeout: float = 600.0) -> subprocess.CompletedProcess[str]:
    """Run ``cmd``; fail with the tail of its output unless it exits with 0."""
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                          check=False)
    assert done.returncode == 0, (f"{' '.join(cmd)} exited with {done.returncode}:\n"
                                  f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


def _unescape(text: str) -> str:
    """Undo repo2docker's escaping of file names in ``COPY`` lines (``-2e`` is ``.``)."""
    return re.sub(r"-([0-9a-f]{2})", lambda m: chr(int(m.group(1), 16)), text)


def _requires_python() -> SpecifierSet:
    return SpecifierSet(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"])


def test_runtime_pin_is_a_python_daqlab_supports() -> None:
    pinned, requires = _pinned_python(), _requires_python()
    assert pinned in requires, f"binder/runtime.txt pins Python {pinned}, outside daqlab's {requires}"


def test_repo2docker_builds_a_supported_python_and_runs_postbuild(tmp_path: Path) -> None:
    repo2docker = require_tool("repo2docker")
    repo = _copy_repo(tmp_path / "repo")
    before = _contents(repo)

    done = _run([repo2docker, "--no-build", "--debug", str(repo)], cwd=tmp_path, timeout=120.0)

    # The Python is fixed by the conda lock file the Dockerfile copies in.
    locks = re.findall(r"environment\.py-(\d+\.\d+)-linux-\w+\.lock", _unescape(done.stdout))
    assert len(locks) == 1, f"expected one conda lock file in the Dockerfile, found {locks}"
    assert locks[0] in _requires_python(), (
        f"the Dockerfile installs Python {locks[0]}; daqlab requires {_requires_python()}")
    pinned = _pinned_python()
    assert locks[0] == pinned, f"the Dockerfile installs Python {locks[0]}, binder/runtime.txt pins {pinned}"
    assert f"Building conda environment for python={pinned}\n" in done.stderr, done.stderr
    assert 'pip install --no-cache-dir -r "binder/requirements.txt"' in done.stdout, done.stdout
    assert "RUN ./binder/postBuild" in done.stdout, done.stdout
    assert _contents(repo) == before, "repo2docker --no-build wrote into the repository"


def _python(version: str) -> str:
    """An interpreter of Python ``version``: the running one, else ``pythonX.Y`` on PATH."""
    for candidate in (sys.executable, shutil.which(f"python{version}")):
        if candidate is None:
            continue
        # A pyenv shim is on PATH even where its version is not selected: ask the interpreter.
        got = subprocess.run([candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                             capture_output=True, text=True, timeout=60, check=False)
        if got.returncode == 0 and got.stdout.strip() == version:
            return candidate
    msg = f"Python {version} (binder/runtime.txt) is not installed; install it to check Binder's env"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(msg)
    pytest.skip(msg)


@pytest.mark.notebook
@pytest.mark.timeout(1200)  # installs JupyterLab and daqlab's dependencies into a fresh venv
def test_binder_env_installs_and_runs_every_notebook(tmp_path: Path) -> None:
    assert NOTEBOOKS, "notebooks/ is empty"
    repo = _copy_repo(tmp_path / "repo")  # postBuild's editable install writes daqlab.egg-info here
    venv = tmp_path / "venv"
    _run([_python(_pinned_python()), "-m", "venv", str(venv)], cwd=tmp_path)
    assert "include-system-site-packages = false" in (venv / "pyvenv.cfg").read_text()
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "CONDA_PREFIX", "JUPYTER_PATH")}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", VIRTUAL_ENV=str(venv),
               PYTHONNOUSERSITE="1",
               # byte-compiling ~100 packages is most of the install time; what runs is the same
               PIP_NO_COMPILE="1")
    # Keep Jupyter away from the user's own kernels and settings: the kernel must be the venv's.
    for var in ("JUPYTER_DATA_DIR", "JUPYTER_CONFIG_DIR", "JUPYTER_RUNTIME_DIR", "IPYTHONDIR"):
        env[var] = str(tmp_path / "home" / var.lower())

    # What repo2docker's Dockerfile runs, in its order, from the repository's root.
    _run([str(venv / "bin" / "python"), "-m", "pip", "install", "-r", "binder/requirements.txt"],
         cwd=repo, env=env)
    _run(["bash", "binder/postBuild"], cwd=repo, env=env)

    work = tmp_path / "work"
    work.mkdir()
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)  # type: ignore[no-untyped-call]
        probe = f"import sys, daqlab\nprint({_PROBE!r}, sys.prefix, daqlab.__file__)"
        nb.cells.append(nbformat.v4.new_code_cell(probe))  # type: ignore[no-untyped-call]
        nbformat.write(nb, work / path.name)  # type: ignore[no-untyped-call]
    out = tmp_path / "out"
    _run([str(venv / "bin" / "jupyter"), "nbconvert", "--to", "notebook", "--execute",
          "--ExecutePreprocessor.timeout=240", "--ExecutePreprocessor.kernel_name=python3",
          "--output-dir", str(out), *(p.name for p in NOTEBOOKS)], cwd=work, env=env, timeout=900.0)

    for path in NOTEBOOKS:
        nb = nbformat.read(out / path.name, as_version=4)  # type: ignore[no-untyped-call]
        outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
        errors = [o for o in outputs if o.get("output_type") == "error"]
        assert not errors, (path.name, errors)
        probes = [o["text"].split() for o in outputs if o.get("text", "").startswith(_PROBE)]
        assert len(probes) == 1, (path.name, probes)
        _, prefix, module = probes[0]
        assert Path(prefix).resolve() == venv.resolve(), f"{path.name} ran in {prefix}, not the venv"
        assert Path(module).resolve().is_relative_to(repo.resolve()), module
    assert list((work / "daqlab-runs").glob("*.nc")), "the quickstart saved no run in its working folder"


def test_readme_binder_link_opens_jupyterlab_on_the_notebooks() -> None:
    readme = (REPO / "README.md").read_text()
    links = re.findall(r"https://mybinder\.org/v2/gh/[^\s`)]+", readme)
    assert links, "the README has no Binder link"
    for link in links:
        assert link.endswith("/HEAD?urlpath=lab/tree/notebooks"), link
    assert (REPO / "notebooks").is_dir()
