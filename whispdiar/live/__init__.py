"""``whispdiar live``: transcription with speakers while the audio arrives (docs/live.md)."""

from .events import Degraded, Event, Final, Finished, LiveUtterance, Partial, SpeakerUpdate
from .session import LiveConfig, LiveEngines, LiveSession
from .utterances import EndpointConfig

__all__ = ["Degraded", "EndpointConfig", "Event", "Final", "Finished", "LiveConfig", "LiveEngines", "LiveSession",
           "LiveUtterance", "Partial", "SpeakerUpdate"]
