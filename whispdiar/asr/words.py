"""Word times: whisper.cpp tokens to words, VAD refinement of word starts, chunk time back
to recording time.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..records import Segment, Word
from .chunks import Chunk
from .vad import FRAME_SECONDS

SPLIT_GAP = 2.0  # s: a whisper segment whose words jump further than this in the recording is cut


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
