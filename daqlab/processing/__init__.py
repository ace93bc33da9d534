"""Processing steps (run -> run), exact across chunks and lazy on dask, and pipelines of them.

Every step equals a scipy or pandas reference applied to the whole series,
whatever the chunking (see each function); unusable samples (NaN/inf or BAD)
follow the rules in :mod:`daqlab.processing._quality`: bridged, never
poisoning the series, and flagged wherever they reach.
"""

from daqlab.processing._align import align
from daqlab.processing._average import moving_average
from daqlab.processing._filters import bandpass, decimate, highpass, lowpass
from daqlab.processing._pipeline import (
    BandPass,
    Calibrate,
    Decimate,
    HighPass,
    LowPass,
    MovingAverage,
    Pipeline,
    Processor,
    Resample,
    calibrate,
)
from daqlab.processing._resample import resample
from daqlab.processing._runs import HISTORY_KEY, history

__all__ = [
    "HISTORY_KEY",
    "BandPass",
    "Calibrate",
    "Decimate",
    "HighPass",
    "LowPass",
    "MovingAverage",
    "Pipeline",
    "Processor",
    "Resample",
    "align",
    "bandpass",
    "calibrate",
    "decimate",
    "highpass",
    "history",
    "lowpass",
    "moving_average",
    "resample",
]
