"""What a live session reports, in order: one event type per kind of news."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..records import Word


@dataclass(slots=True)
class LiveUtterance:
    """A finished utterance as shown live (kept for the instant tier)."""

    index: int
    start: float  # s from the start of the stream
    end: float
    text: str
    words: list[Word]  # times in stream seconds; speaker filled in by the writers' alignment
    label: str  # online speaker, SPEAKER_00 ...
    name: str  # as shown: enrolled name or "Speaker N"
    speech_seconds: float
    embedding: np.ndarray | None = field(default=None, repr=False)  # CAM++ of its speech frames
    transcribed: bool = True  # False: the session fell too far behind and left its text out

    @property
    def speech_start(self) -> float:
        """When its first word starts (the cut opens 0.2 s before the speech onset): the
        time its line shows, as a transcript segment starts at its first word."""
        first = next((w.start for w in self.words if w.start is not None), self.start)
        return min(max(first, self.start), self.end)  # a word cut at a boundary may lead it


@dataclass(frozen=True, slots=True)
class Partial:
    """The utterance in progress, decoded so far (replaced by the next Partial or Final)."""

    start: float
    end: float
    text: str


@dataclass(frozen=True, slots=True)
class Final:
    utterance: LiveUtterance


@dataclass(frozen=True, slots=True)
class SpeakerUpdate:
    """A speaker was heard for the first time (named if enrolled), or an anonymous speaker
    was recognised as an enrolled one (``previous``: the name it was shown with)."""

    label: str
    name: str
    enrolled: bool
    similarity: float | None
    previous: str | None = None  # set when an anonymous speaker was recognised: its old name


@dataclass(frozen=True, slots=True)
class Degraded:
    """The session changed how it keeps up: ``level`` 0 normal, 1 partial lines off,
    2 several utterances per whisper chunk, 3 oldest utterances left without text."""

    level: int
    behind: float  # s the oldest waiting utterance ended before now
    message: str


@dataclass(frozen=True, slots=True)
class Finished:
    utterances: int
    seconds: float  # audio seen
    aborted: bool  # closed before the input was fully processed


Event = Partial | Final | SpeakerUpdate | Degraded | Finished
