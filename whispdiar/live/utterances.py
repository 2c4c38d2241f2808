"""Cutting a live stream into utterances: Silero VAD endpointing.

An utterance opens at the first 32 ms frame whose speech probability reaches ``on`` and
closes once the probability has stayed below ``off`` for ``min_silence`` seconds (the
endpoint); it is padded by ``pad`` on both sides, as the batch VAD regions are (whisper
needs a word's onset and tail). One longer than ``max_seconds`` is cut at its least
speech-like frame in the last third, so a monologue still comes out in pieces.
Utterances with less than ``min_speech`` seconds of speech (a cough, a click) are dropped.
With a ``changes`` function (segmentation-3.0's speaker changes, ``turns.change_points``)
the open utterance is also checked every ``change_every`` seconds and cut where another
voice has taken over, so the first speaker's line does not wait for the next pause.

Only the audio since the oldest sample still needed is kept: memory stays flat.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..asr.vad import FRAME, FRAME_SECONDS, VadStream
from ..audio.read import SAMPLE_RATE


@dataclass(frozen=True, slots=True)
class EndpointConfig:
    on: float = 0.5  # speech starts at this probability (Silero's own default)
    off: float = 0.35  # ... and continues while above this (hysteresis, as speech_regions)
    # Silence that ends an utterance. Every line waits this long after its last word, so
    # it is the floor of the latency; shorter cuts sentences at breathing pauses. 0.3 s
    # against 0.5 s over five sets (AMI, the sample, room, phone, clean meeting;
    # scripts/tune_live.py): median latency lower on every set but one 5-clip AMI run,
    # pooled 1.85 -> 1.56 s, p95 4.34 -> 4.02 s, live WER +1.1 points (docs/live.md).
    min_silence: float = 0.3
    pad: float = 0.2  # s of audio kept before the onset and after the last speech frame
    min_speech: float = 0.25  # s of speech frames an utterance needs
    # Longer utterances are cut (within one segmentation window of 10 s): in a quick
    # exchange without pauses, no line waits longer than this. 4 s against 6 s: p95
    # latency on five real clips 6.35 -> 4.58 s, live WER +2.9 points (docs/live.md).
    max_seconds: float = 4.0
    # With a change detector: how often the open utterance is checked for a new voice
    # (one 10-s segmentation window, ~50 ms of a core, per check).
    change_every: float = 1.0
    # s of each voice around a change for the cut: 0.6 against 1.0 s, five real clips
    # median latency 1.89 -> 1.64 s, synthetic meeting p95 3.22 -> 3.52 s (docs/live.md)
    change_min_turn: float = 0.6


@dataclass(slots=True)
class Utterance:
    """A stretch of speech cut from the stream; times in seconds from the stream start."""

    index: int
    start: float
    end: float
    samples: np.ndarray  # float32 16 kHz, [start, end)
    probs: np.ndarray  # Silero probability per 32 ms frame of ``samples``
    final: bool = True  # False: still growing (a snapshot for a partial line)

    @property
    def duration(self) -> float:
        return self.end - self.start

    @property
    def speech_seconds(self) -> float:
        return float(np.sum(self.probs >= 0.5)) * FRAME_SECONDS


class Endpointer:
    """Feed audio blocks, get finished utterances; ``flush`` closes the open one."""

    def __init__(self, vad: VadStream, config: EndpointConfig | None = None,
                 changes: Callable[[np.ndarray], list[float]] | None = None):
        """``changes(samples)``: seconds into ``samples`` where the speaker changes."""
        self.vad = vad
        self.config = config or EndpointConfig()
        self.changes = changes
        self._checked = 0  # frame up to which the open utterance was checked for a change
        self._audio = np.zeros(0, np.float32)  # samples from _offset on
        self._offset = 0  # stream sample index of _audio[0]
        self._probs = np.zeros(0, np.float32)  # per frame, from frame _offset // FRAME on
        self._frame = 0  # frames seen
        self._start: int | None = None  # first speech frame of the open utterance
        self._silent: int | None = None  # first frame of the current silence inside it
        self._count = 0
        self._unpadded = False  # the open utterance continues a forced cut: no padding before it
        self.max_seconds = self.config.max_seconds  # raised by the session when it falls behind

    @property
    def seconds(self) -> float:
        """Audio seen so far."""
        return (self._offset + len(self._audio)) / SAMPLE_RATE

    def feed(self, samples: np.ndarray) -> list[Utterance]:
        self._audio = np.concatenate([self._audio, np.asarray(samples, np.float32)])
        probs = self.vad.feed(samples)
        self._probs = np.concatenate([self._probs, probs])
        out: list[Utterance] = []
        cfg = self.config
        need = max(1, int(round(cfg.min_silence / FRAME_SECONDS)))
        first = self._frame
        for k, p in enumerate(probs):
            f = first + k
            if self._start is None:
                if p >= cfg.on:
                    self._start, self._silent, self._checked = f, None, f
                continue
            if p >= cfg.off:
                self._silent = None
            elif self._silent is None:
                self._silent = f
            if self._silent is not None and f + 1 - self._silent >= need:
                u = self._close(self._silent)
                if u is not None:
                    out.append(u)
                self._start = self._silent = None
                self._unpadded = False
            elif (f + 1 - self._start) * FRAME_SECONDS >= self.max_seconds:
                cut = self._quiet_frame(self._start, f + 1)
                u = self._close(cut, pad_end=False)  # no padding into the next piece: no word twice
                if u is not None:
                    out.append(u)
                self._start, self._silent, self._unpadded = cut, None, True
            elif self.changes is not None and (f + 1 - self._checked) * FRAME_SECONDS >= cfg.change_every:
                self._checked = f + 1
                cut = self._change_frame(f + 1)
                if cut is not None:
                    u = self._close(cut, pad_end=False)
                    if u is not None:
                        out.append(u)
                    self._start, self._silent, self._unpadded, self._checked = cut, None, True, cut
        self._frame = first + len(probs)
        self._trim()
        return out

    def flush(self) -> Utterance | None:
        """Close the open utterance at the end of the stream (input ended)."""
        if self._start is None:
            return None
        end = self._silent if self._silent is not None else self._frame
        u = self._close(end, pad_end=self._silent is not None)
        self._start = self._silent = None
        self._unpadded = False
        return u

    def current(self) -> Utterance | None:
        """The open utterance so far (for a partial line), or None."""
        if self._start is None:
            return None
        return self._cut(self._start, self._frame, False, final=False)

    # -- internals
    def _change_frame(self, end: int) -> int | None:
        """The frame of the first speaker change in the open utterance up to ``end``."""
        assert self.changes is not None and self._start is not None
        u = self._cut(self._start, end, False, final=False)
        points = self.changes(u.samples)
        if not points:
            return None
        frame = int(round((u.start + points[0]) / FRAME_SECONDS))
        return frame if self._start < frame < end else None

    def _quiet_frame(self, a: int, b: int) -> int:
        lo = a + (b - a) * 2 // 3
        p = self._probs_of(lo, b)
        return lo + len(p) - 1 - int(np.argmin(p[::-1])) if len(p) else b  # later frames win ties

    def _probs_of(self, a: int, b: int) -> np.ndarray:
        base = self._offset // FRAME
        return self._probs[max(0, a - base): max(0, b - base)]

    def _close(self, end_frame: int, pad_end: bool = True) -> Utterance | None:
        assert self._start is not None
        u = self._cut(self._start, end_frame, pad_end, final=True)
        if u.speech_seconds < self.config.min_speech:
            return None
        self._count += 1
        return u

    def _cut(self, a: int, b: int, pad_end: bool, final: bool) -> Utterance:
        pad = int(self.config.pad * SAMPLE_RATE)
        s0 = max(self._offset, a * FRAME - (0 if self._unpadded else pad))
        s1 = min(self._offset + len(self._audio), b * FRAME + (pad if pad_end else 0))
        x = self._audio[s0 - self._offset: s1 - self._offset].copy()
        probs = self._probs_of(s0 // FRAME, (s1 + FRAME - 1) // FRAME).copy()
        return Utterance(self._count, s0 / SAMPLE_RATE, s1 / SAMPLE_RATE, x, probs, final)

    def _trim(self) -> None:
        """Drop audio no utterance can need any more (keep ``pad`` before the open one)."""
        pad = int(self.config.pad * SAMPLE_RATE) + FRAME
        keep_from = (self._start * FRAME if self._start is not None else self._frame * FRAME) - pad
        keep_from = (max(self._offset, keep_from) // FRAME) * FRAME
        k = keep_from - self._offset
        if k > 0:
            self._audio = self._audio[k:]
            self._probs = self._probs[k // FRAME:]
            self._offset = keep_from
