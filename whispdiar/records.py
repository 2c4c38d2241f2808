"""Plain records passed between the stages: turns, words, segments, speakers, results.

Times are seconds (float) from the start of the audio everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Turn:
    """A stretch of time during which one speaker talks (diarization output)."""

    start: float
    end: float
    speaker: str  # diarization label, e.g. "SPEAKER_00"

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass(slots=True)
class Word:
    """One recognised word; start/end are None when the recogniser gave no timing."""

    text: str
    start: float | None
    end: float | None
    probability: float | None = None
    speaker: str | None = None  # display label after alignment/naming


@dataclass(slots=True)
class Segment:
    """A run of words by one speaker (or a whisper segment before alignment)."""

    start: float
    end: float
    text: str
    speaker: str | None = None
    words: list[Word] = field(default_factory=list)


@dataclass(slots=True)
class Speaker:
    """A speaker as shown to the user."""

    label: str  # diarization label (SPEAKER_00)
    name: str  # "Jan" if recognised, else "Speaker 1"
    confidence: float | None = None  # similarity to the enrolled voiceprint, if named
    speech_seconds: float = 0.0
    enrolled: bool = False


@dataclass(frozen=True, slots=True)
class AudioSource:
    """Which file a result was made from: enough to find it again and to notice a change."""

    path: str  # absolute
    size: int  # bytes
    sha256: str  # of the whole file (hex)
    channel: int | None = None  # the channel transcribed, None = the mix


@dataclass(slots=True)
class Timings:
    asr: float | None = None
    diarization: float | None = None
    total: float = 0.0


@dataclass(slots=True)
class Result:
    """Everything the writers need for one recording."""

    audio: str
    duration: float
    language: str | None
    segments: list[Segment]
    speakers: list[Speaker] = field(default_factory=list)
    turns: list[Turn] = field(default_factory=list)  # diarization turns (with overlap)
    models: dict[str, str] = field(default_factory=dict)
    timings: Timings = field(default_factory=Timings)
    source: AudioSource | None = None  # the audio file (None for stdin)

    def speaker_name(self, label: str | None) -> str | None:
        """Display name for a diarization label (None stays None)."""
        if label is None:
            return None
        for s in self.speakers:
            if s.label == label:
                return s.name
        return label
