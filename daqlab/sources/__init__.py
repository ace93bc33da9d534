"""Sources of samples: simulated, replayed, pushed by a driver, or your own.

A source is any object that follows the :class:`Source` protocol.
"""

from daqlab.sources._lsl import LSL
from daqlab.sources._lsl_outlet import LSLOutlet, publish_lsl
from daqlab.sources._protocol import Samples, Source
from daqlab.sources._push import Push
from daqlab.sources._replay import Replay
from daqlab.sources._simulated import Chirp, Noise, Simulated, Sine, Square, Waveform

__all__ = ["LSL", "Chirp", "LSLOutlet", "Noise", "Push", "Replay", "Samples", "Simulated", "Sine", "Source",
           "Square", "Waveform", "publish_lsl"]
