"""Voice activity detection with Silero VAD (ONNX): where is there speech at all?

Used to hand whisper only speech (its clock then starts at speech, and silence
costs no decoding) and to keep word times inside speech.

Silero is recurrent (state carried from one 32 ms frame to the next), which makes
one stream slow in Python (one ONNX call per frame). We cut the audio into
``lanes`` that run side by side as one batch; each lane starts with a short
warm-up of the audio before it so its state has settled when its own part begins.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..audio.read import SAMPLE_RATE, stream
from ..cancel import EventLike, check
from ..errors import ModelError

FRAME = 512  # new samples per call (32 ms)
CONTEXT = 64  # samples of the previous frame the model sees again
FRAME_SECONDS = FRAME / SAMPLE_RATE
_LANE_FRAMES = 938  # ~30 s per lane
_WARMUP_FRAMES = 32  # ~1 s of audio before a lane to settle the recurrent state


@dataclass(frozen=True, slots=True)
class SpeechRegion:
    start: float
    end: float

    @property
    def duration(self) -> float:
        return self.end - self.start


class SileroVad:
    """Frame-level speech probabilities (one per 32 ms) for a file or a signal."""

    def __init__(self, model_path: str | os.PathLike[str], threads: int = 1, lanes: int = 8):
        import onnxruntime as ort  # heavy import, only when a VAD is really built

        p = Path(model_path)
        if not p.is_file():
            raise ModelError(f"{p}: VAD model not found")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, threads)
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types
            raise ModelError(f"{p}: not a usable Silero VAD ONNX model ({str(e).splitlines()[0]})") from None
        self._lanes = max(1, lanes)
        self._sr = np.array(SAMPLE_RATE, dtype=np.int64)

    def _run_lanes(self, lanes: list[np.ndarray], warmups: list[np.ndarray],
                   cancel: EventLike | None = None) -> list[np.ndarray]:
        """Probabilities for each lane (len(lane) // FRAME values, last partial frame padded)."""
        n_frames = [(len(x) + FRAME - 1) // FRAME for x in lanes]
        n_warm = [len(w) // FRAME for w in warmups]
        w_max = max(n_warm)
        total = w_max + max(n_frames)
        b = len(lanes)
        # Lay out every lane right-aligned on its warm-up so all lanes' own audio starts at w_max.
        buf = np.zeros((b, CONTEXT + total * FRAME), np.float32)
        for i, (x, w) in enumerate(zip(lanes, warmups, strict=True)):
            w = w[len(w) - n_warm[i] * FRAME:]
            off = CONTEXT + (w_max - n_warm[i]) * FRAME
            buf[i, off:off + len(w)] = w
            buf[i, CONTEXT + w_max * FRAME:CONTEXT + w_max * FRAME + len(x)] = x
        state = np.zeros((2, b, 128), np.float32)
        out = np.zeros((b, total), np.float32)
        for f in range(total):
            if f % 64 == 0:  # every ~2 s of audio per lane (~50 ms of work)
                check(cancel)
            s = f * FRAME
            prob, state = self._session.run(
                None, {"input": buf[:, s:s + CONTEXT + FRAME], "state": state, "sr": self._sr}
            )
            out[:, f] = prob[:, 0]
        return [out[i, w_max:w_max + n_frames[i]] for i in range(b)]

    def stream(self) -> VadStream:
        """A stateful frame-by-frame view for audio that arrives in pieces (live input)."""
        return VadStream(self)

    def probabilities(self, signal: np.ndarray) -> np.ndarray:
        """Speech probability per 32 ms frame of a 16 kHz mono signal."""
        return self._probabilities_blocks([signal])

    def file_probabilities(self, path: str | os.PathLike[str], cancel: EventLike | None = None,
                           channel: int | None = None) -> np.ndarray:
        """Speech probability per 32 ms frame of a file, read in blocks (flat memory).
        Raises ``cancel.Cancelled`` soon after ``cancel`` is set."""
        block = self._lanes * _LANE_FRAMES * FRAME / SAMPLE_RATE
        return self._probabilities_blocks(stream(path, block_seconds=block, channel=channel), cancel)

    def _probabilities_blocks(self, blocks: Iterable[np.ndarray], cancel: EventLike | None = None) -> np.ndarray:
        lane_len = _LANE_FRAMES * FRAME
        warm_len = _WARMUP_FRAMES * FRAME
        pending = np.zeros(0, np.float32)
        history = np.zeros(0, np.float32)  # audio before `pending`, for the first lane's warm-up
        parts: list[np.ndarray] = []

        def flush(x: np.ndarray, hist: np.ndarray) -> None:
            lanes, warms = [], []
            for i in range(0, len(x), lane_len):
                lanes.append(x[i:i + lane_len])
                prev = x[max(0, i - warm_len):i] if i else hist[-warm_len:]
                warms.append(prev)
            parts.extend(self._run_lanes(lanes, warms, cancel))

        group = self._lanes * lane_len
        for block in blocks:
            pending = np.concatenate([pending, block])
            while len(pending) >= group:
                flush(pending[:group], history)
                history = pending[group - warm_len:group]
                pending = pending[group:]
        if len(pending):
            flush(pending, history)
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)


class VadStream:
    """Silero over a stream fed in pieces of any length: one probability per complete
    32 ms frame, the recurrent state carried across calls (the same values as one pass
    over the whole signal). One stream per thread; the session may be shared."""

    def __init__(self, vad: SileroVad):
        self._session = vad._session
        self._sr = vad._sr
        self._state = np.zeros((2, 1, 128), np.float32)
        self._context = np.zeros(CONTEXT, np.float32)
        self._rest = np.zeros(0, np.float32)
        self.frames = 0  # frames computed so far

    def feed(self, samples: np.ndarray) -> np.ndarray:
        x = np.concatenate([self._rest, np.asarray(samples, np.float32)])
        n = len(x) // FRAME
        out = np.zeros(n, np.float32)
        for i in range(n):
            frame = x[i * FRAME:(i + 1) * FRAME]
            window = np.concatenate([self._context, frame])[None]
            prob, self._state = self._session.run(None, {"input": window, "state": self._state, "sr": self._sr})
            out[i] = prob[0, 0]
            self._context = frame[-CONTEXT:]
        self._rest = x[n * FRAME:]
        self.frames += n
        return out


def speech_regions(
    probs: np.ndarray,
    threshold: float = 0.5,
    min_speech: float = 0.2,
    min_silence: float = 0.3,
    pad: float = 0.15,
    duration: float | None = None,
) -> list[SpeechRegion]:
    """Speech regions from frame probabilities, with hysteresis like Silero's own helper.

    Speech begins where p >= threshold and ends where p stays below threshold - 0.15 for
    ``min_silence``; regions shorter than ``min_speech`` are dropped; each side is padded by
    ``pad`` (whisper needs the onset and the tail of a word) and overlapping regions merged.
    """
    neg = max(0.01, threshold - 0.15)
    hop = FRAME_SECONDS
    end_limit = duration if duration is not None else len(probs) * hop
    raw: list[tuple[float, float]] = []
    start: int | None = None
    silent_since: int | None = None
    for i, p in enumerate(probs):
        if start is None:
            if p >= threshold:
                start, silent_since = i, None
            continue
        if p >= neg:
            silent_since = None
            continue
        if silent_since is None:
            silent_since = i
        if (i - silent_since) * hop >= min_silence:
            raw.append((start * hop, silent_since * hop))
            start, silent_since = None, None
    if start is not None:
        raw.append((start * hop, (silent_since if silent_since is not None else len(probs)) * hop))
    out: list[SpeechRegion] = []
    for s, e in raw:
        if e - s < min_speech:
            continue
        s, e = max(0.0, s - pad), min(end_limit, e + pad)
        if out and s <= out[-1].end:
            out[-1] = SpeechRegion(out[-1].start, max(out[-1].end, e))
        else:
            out.append(SpeechRegion(s, e))
    return out
