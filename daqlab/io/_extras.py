"""Optional libraries (the readers of other tools' files, LSL), imported when first used.

``import daqlab`` never imports them; a reader calls :func:`require` inside its function, and
a missing library is a :class:`~daqlab.MissingExtraError` naming the extra that installs it.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from daqlab.errors import MissingExtraError

__all__ = ["require"]


def require(module: str, extra: str, what: str) -> ModuleType:
    """The module ``module`` (e.g. ``"nptdms"``), or a MissingExtraError saying that ``what``
    (e.g. ``"reading TDMS files"``) needs ``pip install 'daqlab[extra]'``."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(
            f"{what} needs the Python package {module!r}, which is not installed ({exc}); "
            f"install it with: pip install 'daqlab[{extra}]'") from None
