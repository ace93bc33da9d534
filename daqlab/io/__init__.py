"""Saving and opening runs; the streaming recorder."""

from daqlab.io._open import FORMATS, open_run, save
from daqlab.io._recorder import Recorder, is_recording, open_recording

__all__ = ["FORMATS", "Recorder", "is_recording", "open_recording", "open_run", "save"]
