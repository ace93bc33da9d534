"""Live views and plots in notebooks (bokeh + ipywidgets). The only package that loads them:
``import daqlab`` does not import this; ``daqlab.LiveView`` and ``run.daq.plot()`` load it on use."""

from daqlab.view._browser import RunBrowser
from daqlab.view._decimate import MinMaxColumns, minmax
from daqlab.view._live import LiveView
from daqlab.view._pacer import FramePacer
from daqlab.view._spectrum import SpectrumView, welch_psd
from daqlab.view._static import RunPlot

__all__ = ["FramePacer", "LiveView", "MinMaxColumns", "RunBrowser", "RunPlot", "SpectrumView", "minmax",
           "welch_psd"]
