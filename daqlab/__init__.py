"""daqlab: acquire, watch, record and analyse measurement data in Jupyter.

>>> import daqlab as dl
>>> run = dl.make_run([[0.0, 1.0]], ["ai0"], sample_rate=10.0)
>>> dl.validate(run).daq.channel_names
['ai0']
"""

from daqlab import events, sources
from daqlab._version import __version__
from daqlab.accessor import DaqAccessor
from daqlab.acquisition import AcquisitionConfig, DataManager
from daqlab.buffer import Block, Reader, RingBuffer
from daqlab.errors import (
    AcquisitionError,
    AlreadyCalibratedError,
    CalibrationError,
    ChannelError,
    ChannelNotFoundError,
    ConfigurationError,
    DaqlabError,
    DataRangeError,
    FormatError,
    NotCalibratedError,
    SchemaError,
    ShapeError,
    SourceError,
    StorageError,
)
from daqlab.io import Recorder, open_recording, open_run, open_runs, save
from daqlab.model import Calibration, Channel, Quality
from daqlab.run import SCHEMA_VERSION, calibrate, empty_run, make_run, uncalibrate, validate

__all__ = [
    "SCHEMA_VERSION",
    "AcquisitionConfig",
    "AcquisitionError",
    "AlreadyCalibratedError",
    "Block",
    "Calibration",
    "CalibrationError",
    "Channel",
    "ChannelError",
    "ChannelNotFoundError",
    "ConfigurationError",
    "DaqAccessor",
    "DaqlabError",
    "DataManager",
    "DataRangeError",
    "FormatError",
    "NotCalibratedError",
    "Quality",
    "Reader",
    "Recorder",
    "RingBuffer",
    "SchemaError",
    "ShapeError",
    "SourceError",
    "StorageError",
    "__version__",
    "calibrate",
    "empty_run",
    "events",
    "make_run",
    "open_recording",
    "open_run",
    "open_runs",
    "save",
    "sources",
    "uncalibrate",
    "validate",
]
