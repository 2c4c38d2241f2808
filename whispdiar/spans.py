"""Part of a recording (``--start`` / ``--end``): parse times, check the span, and put
results back into the recording's time.

The engines (VAD, whisper, diarization) read the span as a file of its own: a temporary
16 kHz mono float WAV streamed from ``audio.stream(start=, end=)`` (no decoding of the
rest, memory flat). Every time in the result is then moved by the span's start, so all
outputs stay in the file's time.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf

from .audio import read as audio
from .cancel import EventLike, check
from .errors import UsageError
from .records import Result

_CLOCK = re.compile(r"^(?:(?:(\d+):)?(\d+):)?(\d+(?:\.\d*)?|\.\d+)$")


def parse_time(text: str) -> float:
    """Seconds from ``"90"``, ``"90.5"``, ``"1:30"`` (mm:ss) or ``"1:02:03.5"`` (hh:mm:ss)."""
    body = text.strip()
    sign = -1.0 if body.startswith("-") else 1.0  # refused by make_span with its own message
    m = _CLOCK.match(body.removeprefix("-"))
    if m is None:
        raise UsageError(f"bad time {text!r} (give seconds, mm:ss or hh:mm:ss, e.g. 90, 1:30, 1:02:03.5)")
    h, mnt, s = m.groups()
    if (mnt is not None and float(s) >= 60) or (h is not None and int(mnt) >= 60):
        raise UsageError(f"bad time {text!r} (seconds and minutes in mm:ss / hh:mm:ss go up to 59)")
    return sign * (int(h or 0) * 3600 + int(mnt or 0) * 60 + float(s))


@dataclass(frozen=True, slots=True)
class Span:
    """Seconds of the recording to work on; ``end`` None: to the end of the file."""

    start: float = 0.0
    end: float | None = None

    @property
    def whole(self) -> bool:
        return self.start == 0.0 and self.end is None

    def describe(self) -> str:
        return f"{self.start:g}-{'end' if self.end is None else f'{self.end:g}'} s"


WHOLE = Span()


def make_span(start: float | None = None, end: float | None = None) -> Span:
    """Check what can be checked without the file: not negative, end after start."""
    s = 0.0 if start is None else float(start)
    if s < 0 or (end is not None and end < 0):
        raise UsageError("--start and --end must not be negative")
    if end is not None and end <= s:
        raise UsageError(f"--end ({end:g} s) must be after --start ({s:g} s)")
    return Span(s, None if end is None else float(end))


def clip_span(span: Span, duration: float, name: str) -> Span:
    """The span inside a file of ``duration`` seconds: an end past the file's end is the
    file's end; a start at or past it is an error."""
    if span.start >= duration:
        raise UsageError(f"{name}: --start {span.start:g} s is at or past the end of the recording "
                         f"({duration:.2f} s)")
    end = None if span.end is None or span.end >= duration else span.end
    return Span(span.start, end)


def span_to_tempfile(path: str | os.PathLike[str], span: Span, cancel: EventLike | None = None,
                     channel: int | None = None) -> Path:
    """The span of a file (its mix, or one ``channel``) as a temporary 16 kHz mono float WAV (streamed block by block);
    the caller deletes it. ``cancel`` is checked between blocks (raises ``Cancelled``,
    leaving no file), so a long span does not hold up Ctrl-C."""
    fd, tmp = tempfile.mkstemp(suffix=".wav", prefix="whispdiar-span-")
    os.close(fd)
    try:
        with sf.SoundFile(tmp, "w", samplerate=audio.SAMPLE_RATE, channels=1, subtype="FLOAT", format="WAV") as out:
            for block in audio.stream(path, channel=channel, start=span.start, end=span.end):
                check(cancel)
                out.write(block)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def shift_result(result: Result, offset: float) -> None:
    """Move every time in ``result`` (segments, words, turns) by ``offset`` seconds, in place."""
    if not offset:
        return

    def moved(t: float | None) -> float | None:
        return None if t is None else t + offset

    done: set[int] = set()  # a Word shared by two segments moves once
    for seg in result.segments:
        seg.start, seg.end = seg.start + offset, seg.end + offset
        for w in seg.words:
            if id(w) not in done:
                done.add(id(w))
                w.start, w.end = moved(w.start), moved(w.end)
    result.turns = [dataclasses.replace(t, start=moved(t.start), end=moved(t.end)) for t in result.turns]
