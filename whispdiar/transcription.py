"""Speech to text with whisper.cpp (pywhispercpp's low-level binding), with word times.

Why not hand whisper the whole file: its own segment/token clock is anchored to
30 s windows and drifts (on a call starting at 6.7 s it reported words from 0 s
in whole-second steps). Instead we

1. find speech with a VAD (or, without one, cut fixed blocks at quiet points),
2. pack speech regions into chunks of at most ~29 s (one whisper window each), joined
   by a short stretch of silence and filled to the brim (the encoder costs the same for
   a full window as for a half-empty one); whisper decodes each chunk in one pass
   (``single_segment``), and speech after its last closed segment goes back into the
   next chunk instead of costing a second encoder pass,
3. take word times from whisper.cpp's DTW over cross-attention alignment heads
   (``t_dtw``), which follows the audio, not the timestamp tokens, and
4. map packed times back to the recording, keeping every word inside speech.

This also keeps memory flat on long recordings (one chunk in memory at a time),
gives cancellation and progress points between chunks, and skips silence.
whisper_full releases the GIL, so a diarization thread runs meanwhile.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import math
import os
import threading
import time
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .audio import SAMPLE_RATE, info, load, stream
from .cancel import AnyEvent, EventLike
from .cancel import Cancelled as BaseCancelled
from .errors import ModelError, UsageError
from .ggml import WhisperHeader, read_header
from .records import Segment, Word
from .vad import FRAME_SECONDS, SileroVad, SpeechRegion, speech_regions

log = logging.getLogger(__name__)

ProgressFn = Callable[[str, float, float], None]

MAX_CHUNK_SECONDS = 29.0  # whisper sees 30 s windows; stay just under so a chunk is one window
JOIN_SILENCE = 0.2  # zeros inserted between packed regions
# Zeros before the first region: with speech right at 0 s whisper's DTW path (anchored at
# the window start) misplaced the first words by ~1 s on sample.wav; 0.3 s lead-in fixed it.
LEAD_IN = 0.3
MERGE_GAP = 0.6  # regions closer than this are kept together with their real pause
FILL_MIN = 2.0  # fill a chunk with part of the next region when at least this much room is left
SPLIT_GAP = 2.0  # s: a whisper segment whose words jump further than this in the recording is cut
CLOSE_WAIT = 2.0  # s close() waits for running decodes to stop (they abort within one decoder step)
MAX_BEAM = 8  # whisper.cpp's WHISPER_MAX_DECODERS: whisper_full refuses wider beams


class Cancelled(BaseCancelled):
    """Raised when the cancel event is set or the transcriber is closed; the pipeline
    turns it into its own error."""


# --------------------------------------------------------------------------- model file


def _aheads_preset(pw, header: WhisperHeader):  # noqa: ANN001 - binding enum
    """The alignment-head preset matching the model (these are OpenAI's per-model heads)."""
    presets = pw.whisper_alignment_heads_preset
    name = header.name.replace(".", "_").replace("-", "_").upper()
    preset = getattr(presets, f"WHISPER_AHEADS_{name}", None)
    # Unknown shapes: fall back to all heads of the top text layers (less sharp, still sane).
    return preset if preset is not None else presets.WHISPER_AHEADS_N_TOP_MOST


_log_lock = threading.Lock()
_log_installed = False


def _quiet_whisper_logs() -> None:
    """Route whisper.cpp's C logging into Python logging (never stdout/stderr directly).

    The hook is process-wide by nature (whisper.cpp has one logger). It is removed at
    exit because a Python callback must not run while the interpreter shuts down.
    """
    global _log_installed  # the C library's logger is global; mirror that once
    import _pywhispercpp as pw

    with _log_lock:
        if _log_installed:
            return
        wlog = logging.getLogger("whispdiar.whispercpp")

        def forward(level: int, text: str) -> None:
            # ggml levels: 1 debug, 2 info, 3 warn, 4 error
            wlog.log(logging.WARNING if level == 3 else logging.DEBUG, "%s", text.rstrip())

        pw.whisper_log_set(forward)
        atexit.register(pw.whisper_log_set, None)
        _log_installed = True


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


# --------------------------------------------------------------------------- tokens → words


@dataclass(slots=True)
class RawSegment:
    """Whisper's output between two timestamp tokens, times in chunk seconds."""

    t0: float
    t1: float | None  # None: whisper never closed it
    text: str
    tokens: list[Token]


@dataclass(slots=True)
class Token:
    text: bytes
    p: float
    t_dtw: float | None  # seconds in the chunk
    t0: float  # whisper's own token timestamps (seconds in the chunk), used when DTW is off
    t1: float


def _is_punct(b: bytes) -> bool:
    s = b.decode("utf-8", errors="ignore").strip()
    return bool(s) and all(not c.isalnum() for c in s)


def tokens_to_words(
    tokens: Sequence[Token], next_time: float | None, timing: str
) -> list[tuple[str, float | None, float | None, float]]:
    """Group sub-word tokens into words: (text, start, end, probability) in chunk seconds.

    A token starting with a space opens a word; punctuation tokens stick to the word before.
    With ``timing="dtw"``: start = DTW time of the word's first token, end = DTW time of the
    token after its letters (trailing punctuation, else the next word), as the DTW jump into
    a token marks when it begins. ``next_time`` closes the last word (e.g. the next
    segment's first token). With ``timing="tokens"``: whisper's own t0/t1.
    """
    groups: list[list[Token]] = []
    for t in tokens:
        if not t.text:
            continue
        if not groups or (t.text.startswith(b" ") and not _is_punct(t.text)):
            groups.append([t])
        else:
            groups[-1].append(t)
    out: list[tuple[str, float | None, float | None, float]] = []
    for gi, g in enumerate(groups):
        text = b"".join(t.text for t in g).decode("utf-8", errors="replace").strip()
        if not text:
            continue
        prob = float(np.mean([t.p for t in g]))
        if timing == "tokens":
            out.append((text, g[0].t0, g[-1].t1, prob))
            continue
        if timing != "dtw" or g[0].t_dtw is None:
            out.append((text, None, None, prob))
            continue
        n_letters = len(g)
        while n_letters > 1 and _is_punct(g[n_letters - 1].text):
            n_letters -= 1
        trailing = [t.t_dtw for t in g[n_letters:] if t.t_dtw is not None]
        if trailing:
            end = trailing[0]
        elif gi + 1 < len(groups) and groups[gi + 1][0].t_dtw is not None:
            end = groups[gi + 1][0].t_dtw
        else:
            end = next_time
        start = g[0].t_dtw
        if end is None or end < start:
            end = start
        out.append((text, start, end, prob))
    return out


# --------------------------------------------------------------------------- VAD refinement


def speech_mask(probs: np.ndarray, on: float = 0.5, off: float = 0.35) -> np.ndarray:
    """Per-frame speech flags with hysteresis (enter at ``on``, leave below ``off``)."""
    mask = np.zeros(len(probs), bool)
    active = False
    for i, p in enumerate(probs):
        active = p >= on if not active else p >= off
        mask[i] = active
    return mask


def speech_onsets(mask: np.ndarray, min_silence: float = 0.2) -> np.ndarray:
    """Times (s) where speech starts after at least ``min_silence`` of non-speech."""
    need = max(1, int(round(min_silence / FRAME_SECONDS)))
    out, quiet = [], need  # the file start counts as silence
    for i, m in enumerate(mask):
        if m:
            if quiet >= need:
                out.append(i * FRAME_SECONDS)
            quiet = 0
        else:
            quiet += 1
    return np.array(out)


def _onset_matches(starts: Sequence[float], onsets: np.ndarray, lo: float, hi: float) -> list[tuple[float, int]]:
    """(onset, index of the first word starting at or after onset + lo) within ``hi``."""
    out = []
    for o in onsets:
        i = bisect_right(starts, o + lo - 1e-9)
        if i < len(starts) and starts[i] - o <= hi:
            out.append((float(o), i))
    return out


def estimate_lag(
    word_starts: Sequence[float], onsets: np.ndarray, lo: float = -0.15, hi: float = 1.0, prior: int = 3
) -> float:
    """How late DTW word starts are: median over speech onsets of (first word start - onset),
    shrunk toward 0 by ``prior`` pseudo-onsets (few onsets are weak evidence).

    DTW times from whisper's alignment heads lag the audio by a model-dependent amount
    (about 0.1-0.2 s for base, 0.45 s for tiny.en here); speech onsets after pauses are
    where a word must begin, so they calibrate the lag per recording.
    """
    starts = sorted(word_starts)
    diffs = [starts[i] - o for o, i in _onset_matches(starts, onsets, lo, hi)]
    if not diffs:
        return 0.0
    n = len(diffs)
    return float(np.clip(np.median(diffs), -0.2, 0.8)) * n / (n + prior)


def refine_word_times(segments: Sequence[Segment], probs: np.ndarray, prior: int = 3) -> float:
    """Correct DTW word times with the VAD's speech frames (in place); returns the lag used.

    1. Shift every word back by the estimated lag (``estimate_lag``).
    2. A word starting in non-speech moves to the nearer speech edge: back to the end of
       the speech before it (ending there), or to the next speech onset; a word ends at the
       first pause (>= 0.2 s of non-speech) inside it, or at its last speech frame when it
       ends in non-speech (pauses belong to no word, so a speaker change in a pause
       cannot drag words across).
    3. The first word after a pause starts at the pause's end (the speech onset) when
       it starts within 0.8 s after it and the word before ended before the onset.
    Times stay monotonic.
    """
    words = [w for s in segments for w in s.words if w.start is not None and w.end is not None]
    if not words or not len(probs):
        return 0.0
    mask = speech_mask(probs)
    onsets = speech_onsets(mask)
    lag = estimate_lag([w.start for w in words], onsets, prior=prior)
    n = len(mask)

    def frame(t: float) -> int:
        return min(n - 1, max(0, int(t / FRAME_SECONDS)))

    pause = max(1, int(round(0.2 / FRAME_SECONDS)))
    prev_end = 0.0
    for w in words:
        s, e = max(0.0, w.start - lag), max(0.0, w.end - lag)
        a, b = frame(s), frame(max(s, e - 1e-6))
        if not mask[a]:
            # Starts in a pause: it belongs to the nearer speech edge. Back to the end of
            # the speech before (DTW was late) when that is nearer than the next onset.
            before = np.flatnonzero(mask[:a])
            after = np.flatnonzero(mask[a:b + 1])
            p_end = (before[-1] + 1) * FRAME_SECONDS if len(before) else None
            q = (a + after[0]) * FRAME_SECONDS if len(after) else None
            if p_end is not None and p_end > prev_end and (q is None or s - p_end < q - s):
                w.start, w.end = max(prev_end, p_end - (e - s)), p_end
                prev_end = w.end
                continue
        inside = np.flatnonzero(mask[a:b + 1])
        if len(inside):
            if not mask[a]:
                a += int(inside[0])
                s = a * FRAME_SECONDS
            # the word ends where its speech ends: at the first pause inside it, or at its
            # last speech frame when it ends in non-speech
            quiet = 0
            for k in range(a, b + 1):
                quiet = 0 if mask[k] else quiet + 1
                if quiet >= pause:
                    e = min(e, (k - quiet + 1) * FRAME_SECONDS)
                    break
            else:
                if not mask[b]:
                    e = min(e, (a + int(np.flatnonzero(mask[a:b + 1])[-1]) + 1) * FRAME_SECONDS)
        w.start, w.end = s, max(s, e)
        prev_end = w.end
    tol = FRAME_SECONDS
    for o, i in _onset_matches([w.start for w in words], onsets, -tol, 0.8):
        prev_end = words[i - 1].end if i else 0.0
        if prev_end <= o + tol and words[i].start > o:
            words[i].start = o
    last = 0.0
    for w in words:  # keep order after snapping
        w.start = round(max(w.start, last), 3)
        w.end = round(max(w.end, w.start), 3)
        last = w.end
    for s in segments:
        timed = [w for w in s.words if w.start is not None]
        if timed:
            s.start, s.end = timed[0].start, max(w.end for w in timed)
    return lag


# --------------------------------------------------------------------------- transcriber


@dataclass(slots=True)
class Transcript:
    segments: list[Segment]
    language: str | None
    duration: float
    speech: list[SpeechRegion] = field(default_factory=list)
    model: str = ""
    lag: float = 0.0  # seconds the DTW word times were shifted back (refine_word_times)
    translated: bool = False  # the text is English (``translate``); ``language`` is the spoken one


class Transcriber:
    """A loaded whisper.cpp model. Reuse one instance for many files (loading costs seconds)."""

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        threads: int = 2,
        vad: SileroVad | None = None,
        timing: str = "dtw",
        beam_size: int = 0,
        refine: bool = True,
        lanes: int = 2,
    ):
        """``timing``: "dtw" (default: alignment-head DTW word times), "tokens" (whisper's own
        token timestamps, less accurate), or "none" (no word times: segment level only).
        ``beam_size``: 0 or 1 decode greedily (the default), 2-8 with beam search of that
        width (slower; docs/benchmarks.md "2026-12-01: beam search").
        ``refine``: correct the DTW lag and snap word times onto VAD speech (needs ``vad``).
        ``lanes``: at most this many chunks decoded at once, each by its own whisper.cpp
        context (a second copy of the model, loaded when first needed), see ``transcribe``."""
        if timing not in ("dtw", "tokens", "none"):
            raise ValueError(f"timing must be dtw, tokens or none, not {timing!r}")
        check_beam_size(beam_size)
        import _pywhispercpp as pw

        self._pw = pw
        self.path = Path(model_path)
        self.header = read_header(self.path)
        self.threads = max(1, threads)
        self.vad = vad
        self.timing = timing
        self.beam_size = beam_size
        self.refine = refine
        self.lanes = max(1, lanes)
        _quiet_whisper_logs()
        cp = pw.whisper_context_default_params()
        cp.use_gpu = False
        cp.flash_attn = False  # DTW needs the attention weights flash attention never materialises
        if timing == "dtw":
            cp.dtw_token_timestamps = True
            cp.dtw_aheads_preset = _aheads_preset(pw, self.header)
        self._cp = cp
        # A context belongs to the lane decoding on it until _release: close() frees only
        # idle ones, and a context still busy then is freed by its lane when it returns.
        self._lock = threading.Condition()  # guards the context lists and _closed
        self._contexts: list = []  # every loaded, not yet freed context
        self._idle: list = []  # contexts not decoding right now
        self._closed = False
        self._closing = threading.Event()  # running decodes abort at their next decoder step
        ctx = self._load_context()
        self.multilingual = bool(pw.whisper_is_multilingual(ctx))
        self._eot = pw.whisper_token_eot(ctx)
        self._beg = pw.whisper_token_beg(ctx)

    @property
    def name(self) -> str:
        return self.header.name

    def close(self, wait: float = CLOSE_WAIT) -> None:
        """Stop running decodes (they abort at their next decoder step) and free the
        contexts. Waits up to ``wait`` seconds for busy contexts; one still busy then is
        freed by its lane when whisper_full returns, never under it."""
        lock = getattr(self, "_lock", None)
        if lock is None:
            return  # __init__ failed before any context existed
        self._closing.set()
        deadline = time.monotonic() + max(0.0, wait)
        with lock:
            self._closed = True
            while len(self._idle) < len(self._contexts) and (left := deadline - time.monotonic()) > 0:
                lock.wait(left)
            idle, self._idle = self._idle, []
            self._contexts = [c for c in self._contexts if not any(c is i for i in idle)]
        for ctx in idle:
            self._pw.whisper_free(ctx)

    def _load_context(self):  # noqa: ANN202 - binding handle
        try:
            ctx = self._pw.whisper_init_from_file_with_params(str(self.path), self._cp)
        except Exception as e:  # the binding raises RuntimeError/ValueError variants
            raise ModelError(f"{self.path}: whisper.cpp could not load it ({e})") from None
        if ctx is None:
            raise ModelError(f"{self.path}: whisper.cpp could not load it (corrupt or unsupported file)")
        with self._lock:
            closed = self._closed
            if not closed:
                self._contexts.append(ctx)
                self._idle.append(ctx)
        if closed:  # closed while this copy loaded: nobody else has it
            self._pw.whisper_free(ctx)
            raise Cancelled("transcriber closed")
        return ctx

    def _acquire(self):  # noqa: ANN202
        """An idle context, loading another copy of the model if none is idle."""
        while True:
            with self._lock:
                if self._closed:
                    raise Cancelled("transcriber closed")
                if self._idle:
                    return self._idle.pop()
            self._load_context()

    def _release(self, ctx) -> None:  # noqa: ANN001
        with self._lock:
            free = self._closed
            if free:
                self._contexts = [c for c in self._contexts if c is not ctx]
            else:
                self._idle.append(ctx)
            self._lock.notify_all()
        if free:  # close() came while this lane decoded: the lane frees what it held
            self._pw.whisper_free(ctx)

    def __enter__(self) -> Transcriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown: the binding may be gone
            self.close(wait=0.0)

    # -- public --------------------------------------------------------------------

    def check_language(self, language: str | None) -> str | None:
        """Normalise a language option: None/"auto" → None (detect); else a whisper code."""
        if language is None or language.lower() in ("", "auto"):
            return None if self.multilingual else "en"
        lid = self._pw.whisper_lang_id(language.lower())
        if lid < 0:
            raise UsageError(f"unknown language {language!r} (use a code such as en, de, fr, or auto)")
        code = self._pw.whisper_lang_str(lid)
        if not self.multilingual and code != "en":
            raise UsageError(f"model {self.name} is English-only; cannot transcribe language {code!r}")
        return code

    def detect_language(self, signal: np.ndarray, threads: int | None = None) -> tuple[str | None, float]:
        """(language, probability) whisper hears in the first 30 s of ``signal`` (16 kHz):
        one encoder pass, no decoding. ``(None, 0.0)`` for an English-only model or silence."""
        if not self.multilingual or not len(signal):
            return None, 0.0
        pw = self._pw
        ctx = self._acquire()
        try:
            n = max(1, threads or self.threads)
            if pw.whisper_pcm_to_mel(ctx, np.ascontiguousarray(signal, np.float32), len(signal), n) != 0:
                return None, 0.0
            probs = np.zeros(pw.whisper_lang_max_id() + 1, np.float32)
            lid = pw.whisper_lang_auto_detect(ctx, 0, n, probs)
            if lid < 0:
                return None, 0.0
            return pw.whisper_lang_str(lid), float(probs[lid])
        finally:
            self._release(ctx)

    def check_task(self, translate: bool) -> None:
        """``translate`` needs a multilingual model: an English-only one cannot translate."""
        if translate and not self.multilingual:
            raise UsageError(_cannot_translate(self.name))

    def speech_regions(self, path: str | os.PathLike[str], duration: float,
                       cancel: threading.Event | None = None,
                       channel: int | None = None) -> tuple[list[SpeechRegion], np.ndarray]:
        """Speech regions (VAD) and the frame probabilities used to cut long ones."""
        if self.vad is not None:
            probs = self.vad.file_probabilities(path, cancel=AnyEvent(self._closing, cancel), channel=channel)
            return speech_regions(probs, threshold=0.4, pad=0.2, duration=duration), probs
        # No VAD: treat everything as speech, cut into blocks at quiet points.
        return [SpeechRegion(0.0, duration)], energy_probabilities(path, channel)

    def transcribe(
        self,
        path: str | os.PathLike[str],
        language: str | None = None,
        progress: ProgressFn | None = None,
        cancel: threading.Event | None = None,
        threads: Callable[[], int] | None = None,
        regions: Sequence[SpeechRegion] | None = None,
        probs: np.ndarray | None = None,
        prompt: str | None = None,
        translate: bool = False,
        channel: int | None = None,
    ) -> Transcript:
        """Transcribe a file chunk by chunk. ``threads`` is asked before each chunk (the
        pipeline hands whisper the diarizer's core once diarization is done). ``channel``
        picks one channel of a multichannel file instead of the mix.

        ``prompt``: text whisper reads as if it came before every chunk (names, jargon,
        spelling, style). Each chunk is decoded without the previous one's text
        (``no_context``), so the prompt goes to every chunk, not only the first.
        ``translate``: English text whatever the spoken language (multilingual models
        only); ``Transcript.language`` stays the spoken language.
        """
        lang = self.check_language(language)
        self.check_task(translate)
        prompt = clean_prompt(prompt)
        duration = info(path).duration
        if regions is None:
            regions, probs = self.speech_regions(path, duration, channel=channel)
        planner = ChunkPlanner(regions, probs, delay=self.lanes)
        total = planner.speech
        done = 0.0
        if progress:
            progress("transcribe", 0.0, total)
        segments: list[Segment] = []
        stop = threading.Event()  # set on the way out: running decodes abort at their next encoder pass

        def stopped() -> bool:
            return stop.is_set() or self._closing.is_set() or (cancel is not None and cancel.is_set())
        running: dict[Future, Chunk] = {}
        completed: set[int] = set()  # chunk indices
        with ThreadPoolExecutor(self.lanes, thread_name_prefix="whisper") as pool:
            try:
                while True:
                    if stopped():
                        raise Cancelled()
                    allowed = max(1, threads() if threads is not None else self.threads)
                    # Until the language is known, one chunk at a time (the first one detects it).
                    lanes = 1 if lang is None else min(self.lanes, allowed)
                    while len(running) < lanes and planner.may_plan(completed) and (chunk := planner.next()):
                        signal = self._chunk_signal(path, chunk, channel)
                        # the only chunk left (short files, the end of long ones) gets every thread
                        alone = not running and not planner.pending
                        n_threads = allowed if alone else max(1, allowed // lanes)
                        fut = pool.submit(self._run, signal, lang, n_threads, stopped, prompt, translate)
                        running[fut] = chunk
                    if not running:
                        break
                    # A lane is free but had no thread (the diarizer held the core): look again
                    # soon, so the core it hands back is used now, not after the running chunk
                    # (~3 s of one idle core on a 10-minute meeting, docs/benchmarks.md).
                    may_grow = threads is not None and len(running) < self.lanes and planner.pending
                    finished, _ = wait(running, timeout=0.2 if may_grow else None, return_when=FIRST_COMPLETED)
                    for fut in sorted(finished, key=lambda f: running[f].pieces[0].start):
                        chunk = running.pop(fut)
                        raw, detected = fut.result()
                        completed.add(chunk.index)
                        end = chunk.length
                        closed = [r for r in raw if r.t1 is not None]
                        if closed and closed[-1].t1 < chunk.length - 1.0:
                            given = planner.give_back(chunk, closed[-1].t1)
                            if given:
                                raw, end = closed, closed[-1].t1  # the open tail is decoded again later
                                done -= given
                        if lang is None and detected is not None and raw:
                            lang = detected  # detected once on the first chunk with speech, then kept
                        segments.extend(chunk_segments(raw, chunk, end, self.timing))
                        done += chunk.speech
                        if progress:
                            progress("transcribe", done, total)
            finally:
                stop.set()  # on an error or cancel: do not wait for other lanes' full decodes
        segments.sort(key=lambda seg: seg.start)
        lag = 0.0
        if self.refine and self.timing == "dtw" and self.vad is not None and probs is not None:
            lag = refine_word_times(segments, probs)
        return Transcript(segments, lang, duration, list(regions), self.name, lag, translate)

    def decode(
        self, signal: np.ndarray, language: str | None = None, threads: int | None = None,
        cancel: EventLike | None = None, prompt: str | None = None, translate: bool = False,
        fallback: bool = True,
    ) -> tuple[list[RawSegment], str | None]:
        """Decode one chunk already in memory (16 kHz, at most ~29 s; ``chunk_segments``
        maps its output to the recording): (raw segments, detected language or None).
        For callers that cut their own chunks (live input). ``fallback=False``: one
        temperature, no re-decoding at higher ones (a bounded cost). Raises Cancelled when
        ``cancel`` is set or the transcriber is closed; safe to call from several threads
        (each decode takes its own context)."""
        lang = self.check_language(language)
        self.check_task(translate)

        def stopped() -> bool:
            return self._closing.is_set() or (cancel is not None and cancel.is_set())

        return self._run(np.asarray(signal, np.float32), lang, max(1, threads or self.threads), stopped,
                         clean_prompt(prompt), translate, fallback)

    # -- internals -----------------------------------------------------------------

    @staticmethod
    def _chunk_signal(path: str | os.PathLike[str], chunk: Chunk, channel: int | None = None) -> np.ndarray:
        out = np.zeros(int(math.ceil(chunk.length * SAMPLE_RATE)) + 1, np.float32)
        for p in chunk.pieces:
            x = load(path, start=p.start, end=p.end, channel=channel)
            i = int(round(p.packed * SAMPLE_RATE))
            x = x[: len(out) - i]
            out[i:i + len(x)] = x
        return out

    def _params(self, language: str | None, n_threads: int, prompt: str | None = None, translate: bool = False):
        pw = self._pw
        strategy = pw.WHISPER_SAMPLING_BEAM_SEARCH if self.beam_size > 1 else pw.WHISPER_SAMPLING_GREEDY
        p = pw.whisper_full_default_params(strategy)
        if self.beam_size > 1:
            p.beam_search = {"beam_size": self.beam_size, "patience": -1.0}
        p.n_threads = n_threads
        p.print_progress = False  # whisper.cpp would print to stdout/stderr
        p.print_realtime = False
        p.print_timestamps = False
        p.print_special = False
        p.no_context = True  # chunks are independent: no hallucinated carry-over
        p.single_segment = True  # one pass per chunk; an unfinished tail is given back (ChunkPlanner)
        p.token_timestamps = self.timing == "tokens"
        p.suppress_nst = True  # no "[MUSIC]"-style non-speech tokens in a transcript
        p.language = language if language is not None else "auto"
        p.translate = translate
        if prompt is not None:
            # whisper.cpp tokenizes it and puts it before the chunk as previous text (it
            # keeps the last n_text_ctx/2 = 224 tokens); no_context only drops the text of
            # earlier calls, so every chunk gets the prompt.
            p.initial_prompt = prompt
        return p

    def _run(
        self, signal: np.ndarray, language: str | None, n_threads: int, stopped: Callable[[], bool],
        prompt: str | None = None, translate: bool = False, fallback: bool = True,
    ) -> tuple[list[RawSegment], str | None]:
        """Decode one chunk on an idle context (called in a worker thread)."""
        pw = self._pw
        ctx = self._acquire()
        try:
            params = self._params(language, n_threads, prompt, translate)
            if not fallback:
                params.temperature_inc = 0.0
            # Asked before each encoder pass (False stops it) and after the encoder and
            # every decoder step (True aborts): a cancelled chunk stops within one step
            # (~10-50 ms) instead of running to its end (seconds). Each call takes the GIL
            # once: ~130 calls for 30 s of speech (counted with tiny.en and base).
            pw.assign_encoder_begin_callback(params, lambda *_: not stopped())
            pw.assign_abort_callback(params, stopped)
            status = pw.whisper_full(ctx, params, signal, len(signal))
            if stopped():
                raise Cancelled()
            if status != 0:
                raise ModelError(f"{self.path}: whisper.cpp failed to decode a chunk (whisper_full returned {status})")
            detected = None
            if language is None:
                lid = pw.whisper_full_lang_id(ctx)
                detected = pw.whisper_lang_str(lid) if lid >= 0 else None
            return self._collect(ctx), detected
        finally:
            self._release(ctx)

    def _collect(self, ctx) -> list[RawSegment]:  # noqa: ANN001 - binding handle
        """The last whisper_full's output cut into segments at its timestamp tokens.

        whisper runs with ``single_segment`` (so it never makes a second encoder pass over a
        chunk's last seconds); the timestamp tokens it still predicts mark the segments. A
        segment with no closing timestamp is left open (``t1`` None).
        """
        pw = self._pw
        out: list[RawSegment] = []
        t_open: float | None = None
        toks: list[Token] = []

        def close(t1: float | None) -> None:
            text = b"".join(t.text for t in toks).decode("utf-8", errors="replace").strip()
            if text:
                out.append(RawSegment(t_open if t_open is not None else 0.0, t1, text, list(toks)))
            toks.clear()

        for i in range(pw.whisper_full_n_segments(ctx)):
            for j in range(pw.whisper_full_n_tokens(ctx, i)):
                d = pw.whisper_full_get_token_data(ctx, i, j)
                if d.id >= self._beg:  # a timestamp token: closes the open segment or opens one
                    t = (d.id - self._beg) * 0.02
                    if toks:
                        close(t)
                    t_open = t
                    continue
                if d.id >= self._eot:
                    continue  # other special tokens
                toks.append(
                    Token(
                        pw.whisper_token_to_bytes(ctx, d.id),
                        float(d.p),
                        d.t_dtw / 100.0 if d.t_dtw >= 0 else None,
                        d.t0 / 100.0,
                        d.t1 / 100.0,
                    )
                )
        if toks:
            close(None)
        return out


def _cannot_translate(model: str) -> str:
    return f"model {model} is English-only and cannot translate; use a multilingual model such as base"


def check_translate(model_path: str | os.PathLike[str]) -> None:
    """Refuse ``translate`` with an English-only model file (reads only its header)."""
    header = read_header(model_path)
    if not header.multilingual:
        raise UsageError(_cannot_translate(header.name))


def check_beam_size(beam_size: int) -> None:
    """0 and 1 mean greedy decoding; wider beams up to whisper.cpp's limit of 8 decoders."""
    if isinstance(beam_size, bool) or not isinstance(beam_size, int) or not 0 <= beam_size <= MAX_BEAM:
        raise UsageError(f"beam size must be a whole number from 1 to {MAX_BEAM} (1 = greedy), not {beam_size!r}")


def clean_prompt(prompt: str | None) -> str | None:
    """The prompt as whisper gets it: whitespace runs as one space; empty means none."""
    if prompt is None:
        return None
    text = " ".join(prompt.split())
    return text or None


def chunk_segments(raw: list[RawSegment], chunk: Chunk, end_of_chunk: float, timing: str) -> list[Segment]:
    """Whisper's segments of one chunk, with word times mapped to the recording."""
    segments: list[Segment] = []
    for k, seg in enumerate(raw):
        nxt = None
        for later in raw[k + 1:]:
            if later.tokens and later.tokens[0].t_dtw is not None:
                nxt = later.tokens[0].t_dtw
                break
        if nxt is None and timing == "dtw":
            # last word of the chunk: close it at the end of the speech it starts in
            nxt = end_of_chunk
        # One whisper segment may run across a far jump in the recording: a given-back
        # tail leads a chunk of later speech. Cut it there, so that every segment is one
        # stretch of the recording (else sorting segments by start leaves words out of
        # order, and keeping word times monotonic piled 60 words onto one instant).
        groups: list[list[Word]] = [[]]
        last_piece: int | None = None
        for wtext, ws, we, wp in tokens_to_words(seg.tokens, nxt, timing):
            if ws is None or we is None:
                groups[-1].append(Word(wtext, None, None, round(wp, 4)))
                continue
            if end_of_chunk < chunk.length:  # the rest was given back: another chunk has it
                ws, we = min(ws, end_of_chunk), min(we, end_of_chunk)
            i = chunk.piece_of(ws)
            if (last_piece is not None and i != last_piece and groups[-1]
                    and chunk.pieces[i].start - chunk.pieces[last_piece].end > SPLIT_GAP):
                groups.append([])
            last_piece = i
            s, e = chunk.word_span(ws, we, i)
            groups[-1].append(Word(wtext, s, e, round(wp, 4)))
        for words in groups:
            _tidy_word_times(words, chunk)
            timed = [w for w in words if w.start is not None]
            if timed:
                start, end = timed[0].start, max(w.end for w in timed if w.end is not None)
            else:
                t1 = seg.t1 if seg.t1 is not None else end_of_chunk
                start, end = chunk.to_source(seg.t0, "next"), chunk.to_source(t1, "prev")
            # words are split at spaces (tokens_to_words), so joining them with one
            # restores the text of each part
            text = seg.text if len(groups) == 1 else " ".join(w.text for w in words)
            segments.append(Segment(start, max(start, end), text, None, words))
    return segments


def _tidy_word_times(words: list[Word], chunk: Chunk) -> None:
    """Make word times monotonic and cap absurd lengths (a last word stretching over a
    long tail of non-speech)."""
    last_end = None
    for w in words:
        if w.start is None or w.end is None:
            continue
        if last_end is not None and w.start < last_end:
            w.start = last_end
        if w.end < w.start:
            w.end = w.start
        max_len = 0.25 + 0.12 * len(w.text)  # generous for slow speech, stops a word eating a pause
        if w.end - w.start > max_len:
            w.end = w.start + max_len
        last_end = w.end
