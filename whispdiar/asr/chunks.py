"""Chunk plans: speech regions packed into chunks of at most ~29 s, one whisper window each.

See ``whisper`` for why whisper gets packed speech rather than the whole file.
"""

from __future__ import annotations

import os
from bisect import bisect_right
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..audio.read import SAMPLE_RATE, stream
from .vad import FRAME_SECONDS, SpeechRegion

MAX_CHUNK_SECONDS = 29.0  # whisper sees 30 s windows; stay just under so a chunk is one window
JOIN_SILENCE = 0.2  # zeros inserted between packed regions
# Zeros before the first region: with speech right at 0 s whisper's DTW path (anchored at
# the window start) misplaced the first words by ~1 s on sample.wav; 0.3 s lead-in fixed it.
LEAD_IN = 0.3
MERGE_GAP = 0.6  # regions closer than this are kept together with their real pause
FILL_MIN = 2.0  # fill a chunk with part of the next region when at least this much room is left


# --------------------------------------------------------------------------- chunk plan


@dataclass(frozen=True, slots=True)
class Piece:
    """A stretch of the recording placed at ``packed`` seconds inside a chunk."""

    start: float  # in the recording
    end: float
    packed: float  # where it begins in the chunk's signal

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass(slots=True)
class Chunk:
    pieces: list[Piece] = field(default_factory=list)
    index: int = 0  # position in the plan

    @property
    def length(self) -> float:
        return self.pieces[-1].packed + self.pieces[-1].duration if self.pieces else 0.0

    @property
    def speech(self) -> float:
        return sum(p.duration for p in self.pieces)

    def to_source(self, t: float, prefer: str = "next") -> float:
        """Map a time inside the packed chunk to the recording.

        Times in the inserted silence snap to the following piece's start (``prefer="next"``,
        for word starts) or the preceding piece's end (``"prev"``, for word ends).
        """
        packs = [p.packed for p in self.pieces]
        i = max(0, bisect_right(packs, t) - 1)
        p = self.pieces[i]
        if t < p.packed:  # in the lead-in before the first piece
            return p.start
        if t <= p.packed + p.duration:
            return p.start + max(0.0, t - p.packed)
        if prefer == "next" and i + 1 < len(self.pieces):
            return self.pieces[i + 1].start
        return p.end

    def piece_of(self, start: float) -> int:
        """Index of the piece a word starting at packed time ``start`` belongs to."""
        packs = [p.packed for p in self.pieces]
        i = max(0, bisect_right(packs, start) - 1)
        p = self.pieces[i]
        gap_start = p.packed + p.duration
        if start > gap_start and i + 1 < len(self.pieces) and self.pieces[i + 1].packed - start <= start - gap_start:
            i += 1
        return i

    def word_span(self, start: float, end: float, piece: int | None = None) -> tuple[float, float]:
        """Map a word's packed (start, end) to the recording, inside one piece
        (``piece``, when the caller already has ``piece_of(start)``).

        Neighbouring pieces are at least ``MERGE_GAP`` of silence apart in the recording,
        or unrelated (a given-back tail leads a chunk of much later speech), so no word
        spans two. A start in the inserted silence between pieces belongs to the nearer
        piece: DTW puts a piece's last word a little late as often as a next piece's first
        word a little early, and snapping every such start forward moved a last word by
        the whole distance to the next piece (30 s once, dragging the words after it).
        """
        p = self.pieces[self.piece_of(start) if piece is None else piece]

        def clamp(t: float) -> float:
            return p.start + min(max(0.0, t - p.packed), p.duration)

        s = clamp(start)
        return s, max(s, clamp(end))


def _merge_regions(regions: Sequence[SpeechRegion], merge_gap: float, max_seconds: float) -> list[SpeechRegion]:
    """Regions in time order, those closer than ``merge_gap`` joined (their real pause kept)."""
    merged: list[SpeechRegion] = []
    for r in sorted(regions, key=lambda r: r.start):
        if r.end <= r.start:
            continue
        if merged and r.start - merged[-1].end < merge_gap and r.end - merged[-1].start <= max_seconds:
            merged[-1] = SpeechRegion(merged[-1].start, max(merged[-1].end, r.end))
        else:
            merged.append(r)
    return merged


def _quiet_cut(r: SpeechRegion, probs: np.ndarray | None, room: float) -> float:
    """Where to cut ``r`` so its first part fits in ``room`` seconds: its least speech-like
    frame in the second half of the room (later frames win ties), else at the limit."""
    lo, hi = r.start + room * 0.5, r.start + room
    if probs is not None and len(probs):
        a, b = int(lo / FRAME_SECONDS), min(len(probs), int(hi / FRAME_SECONDS))
        if b > a:
            w = probs[a:b][::-1]
            return min(hi, (b - 1 - int(np.argmin(w)) + 0.5) * FRAME_SECONDS)
    return hi


class ChunkPlanner:
    """Packs speech regions into whisper chunks of at most ``max_seconds``, on demand.

    Each chunk starts with ``lead_in`` seconds of zeros; regions closer than ``merge_gap``
    stay one piece (the real pause is kept), longer pauses become ``join_silence`` of
    zeros. Chunks are filled: a region that does not fit is cut at a quiet frame when at
    least ``fill_min`` seconds of room are left, since whisper's encoder costs the same for
    a full 30 s window as for a half-empty one.

    ``give_back``: whisper sometimes ends its output before the end of a chunk (an early
    end-of-text, or a last segment it left open). Plain whisper.cpp then runs a second
    30 s encoder pass over the few seconds left; here that audio goes back to the queue and
    leads a later chunk instead. Audio is given back at most once, so the plan always ends.

    Chunks may be decoded ``delay`` at a time. For the same plan whatever the timing, the
    tail of chunk ``k`` always leads chunk ``k + delay``, and chunk ``j`` may only be
    planned once chunk ``j - delay`` is finished (``may_plan``).
    """

    def __init__(
        self,
        regions: Sequence[SpeechRegion],
        probs: np.ndarray | None = None,
        max_seconds: float = MAX_CHUNK_SECONDS,
        join_silence: float = JOIN_SILENCE,
        merge_gap: float = MERGE_GAP,
        lead_in: float = LEAD_IN,
        fill_min: float = FILL_MIN,
        delay: int = 1,
    ):
        self.probs = probs
        self.max_seconds = max_seconds
        self.join_silence = join_silence
        self.lead_in = lead_in
        self.fill_min = fill_min
        self.delay = max(1, delay)
        self._queue: deque[SpeechRegion] = deque(_merge_regions(regions, merge_gap, max_seconds - lead_in))
        self.speech = sum(r.duration for r in self._queue)
        self.planned = 0  # chunks handed out so far
        self._deferred: dict[int, list[SpeechRegion]] = {}  # chunk index -> tails that lead it
        self._retried: list[tuple[float, float]] = []  # audio already given back once

    def __iter__(self) -> Iterator[Chunk]:
        while (chunk := self.next()) is not None:
            yield chunk

    @property
    def pending(self) -> bool:
        """Audio left to plan (queued or given back)."""
        return bool(self._queue or self._deferred)

    def may_plan(self, finished: set[int]) -> bool:
        j = self.planned - self.delay
        return j < 0 or j in finished

    def next(self) -> Chunk | None:
        for i in sorted(k for k in self._deferred if k <= self.planned):
            self._queue.extendleft(reversed(self._deferred.pop(i)))
        if not self._queue and self._deferred:  # nothing else left: the next tail leads now
            self._queue.extend(self._deferred.pop(min(self._deferred)))
        cur = Chunk(index=self.planned)
        while self._queue:
            r = self._queue[0]
            at = cur.length + self.join_silence if cur.pieces else self.lead_in
            room = self.max_seconds - at
            if r.duration <= room:
                cur.pieces.append(Piece(r.start, r.end, at))
                self._queue.popleft()
                continue
            if not cur.pieces or room >= self.fill_min:
                cut = _quiet_cut(r, self.probs, room)
                cur.pieces.append(Piece(r.start, cut, at))
                self._queue[0] = SpeechRegion(cut, r.end)
            break
        if not cur.pieces:
            return None
        self.planned += 1
        return cur

    def give_back(self, chunk: Chunk, covered: float, min_tail: float = 1.0) -> float:
        """Whisper transcribed ``chunk`` only up to ``covered`` (chunk seconds): queue the
        speech after it again, unless it is under ``min_tail`` seconds or was already
        given back once. Returns the seconds of speech given back (0.0: none)."""
        start = chunk.to_source(covered, "next")
        if any(a <= start < b for a, b in self._retried):
            return 0.0
        tail = [SpeechRegion(max(p.start, start), p.end) for p in chunk.pieces if p.end > start]
        seconds = sum(r.duration for r in tail)
        if seconds < min_tail:
            return 0.0
        self._deferred[chunk.index + self.delay] = tail
        self._retried.append((start, chunk.pieces[-1].end))
        return seconds


def energy_probabilities(path: str | os.PathLike[str], channel: int | None = None) -> np.ndarray:
    """A crude speech-likeness per VAD frame from loudness, for cutting blocks without a VAD."""
    frames: list[np.ndarray] = []
    rest = np.zeros(0, np.float32)
    n = int(round(FRAME_SECONDS * SAMPLE_RATE))
    for block in stream(path, channel=channel):
        x = np.concatenate([rest, block])
        k = len(x) // n
        frames.append(np.sqrt(np.mean(x[: k * n].reshape(k, n) ** 2, axis=1) + 1e-12))
        rest = x[k * n:]
    if len(rest):
        frames.append(np.sqrt(np.array([np.mean(rest**2) + 1e-12])))
    rms = np.concatenate(frames) if frames else np.zeros(0)
    if not len(rms):
        return rms.astype(np.float32)
    db = 20 * np.log10(rms)
    lo, hi = np.percentile(db, 5), np.percentile(db, 95)
    return np.clip((db - lo) / max(hi - lo, 1e-3), 0, 1).astype(np.float32)


