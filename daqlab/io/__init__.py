"""Saving and opening runs."""

from daqlab.io._open import FORMATS, open_run, save

__all__ = ["FORMATS", "open_run", "save"]
