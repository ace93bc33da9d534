"""daqlab: acquire, watch, record and analyse measurement data in Jupyter.

>>> import daqlab as dl
>>> run = dl.make_run([[0.0, 1.0]], ["ai0"], sample_rate=10.0)
>>> dl.validate(run).daq.channel_names
['ai0']
"""

from typing import TYPE_CHECKING, Any

from daqlab import events, sources
from daqlab._version import __version__
from daqlab.accessor import DaqAccessor
from daqlab.acquisition import AcquisitionConfig, DataManager
from daqlab.buffer import Block, Reader, RingBuffer
from daqlab.captures import Captures
from daqlab.errors import (
    AcquisitionError,
    AlreadyCalibratedError,
    CalibrationError,
    CaptureTimeout,
    ChannelError,
    ChannelNotFoundError,
    ConfigurationError,
    DaqlabError,
    DataRangeError,
    DatasetNotFoundError,
    FormatError,
    IncompleteFileWarning,
    MissingExtraError,
    NotCalibratedError,
    NotFoundError,
    ProcessingError,
    RunsLeftOutWarning,
    SaveErrors,
    SchemaError,
    ShapeError,
    SourceError,
    SourceNotFoundError,
    StorageError,
)
from daqlab.io import Recorder, open_recording, open_run, open_runs, open_tree, save
from daqlab.model import Calibration, Channel, Quality
from daqlab.run import SCHEMA_VERSION, calibrate, empty_run, make_run, uncalibrate, validate
from daqlab.trigger import Trigger

if TYPE_CHECKING:
    from daqlab import processing
    from daqlab.catalog import Catalog
    from daqlab.processing import Pipeline, Processor, align
    from daqlab.view import LiveView, SpectrumView

_LAZY = {
    "processing": ("daqlab.processing", None),
    "Catalog": ("daqlab.catalog", "Catalog"),
    "Pipeline": ("daqlab.processing", "Pipeline"),
    "Processor": ("daqlab.processing", "Processor"),
    "align": ("daqlab.processing", "align"),
    "LiveView": ("daqlab.view", "LiveView"),
    "SpectrumView": ("daqlab.view", "SpectrumView"),
}


def __getattr__(name: str) -> Any:
    """Load processing (scipy) and views (bokeh, ipywidgets) on first use: ``import daqlab`` stays quick."""
    if name not in _LAZY:
        raise AttributeError(f"module 'daqlab' has no attribute {name!r}")
    import importlib

    module_name, attr = _LAZY[name]
    module = importlib.import_module(module_name)
    return module if attr is None else getattr(module, attr)

__all__ = [
    "SCHEMA_VERSION",
    "AcquisitionConfig",
    "AcquisitionError",
    "AlreadyCalibratedError",
    "Block",
    "Calibration",
    "CalibrationError",
    "CaptureTimeout",
    "Captures",
    "Catalog",
    "Channel",
    "ChannelError",
    "ChannelNotFoundError",
    "ConfigurationError",
    "DaqAccessor",
    "DaqlabError",
    "DataManager",
    "DataRangeError",
    "DatasetNotFoundError",
    "FormatError",
    "IncompleteFileWarning",
    "LiveView",
    "MissingExtraError",
    "NotCalibratedError",
    "NotFoundError",
    "Pipeline",
    "ProcessingError",
    "Processor",
    "Quality",
    "Reader",
    "Recorder",
    "RingBuffer",
    "RunsLeftOutWarning",
    "SaveErrors",
    "SchemaError",
    "ShapeError",
    "SourceError",
    "SourceNotFoundError",
    "SpectrumView",
    "StorageError",
    "Trigger",
    "__version__",
    "align",
    "calibrate",
    "empty_run",
    "events",
    "make_run",
    "open_recording",
    "open_run",
    "open_runs",
    "open_tree",
    "processing",
    "save",
    "sources",
    "uncalibrate",
    "validate",
]
