"""Local speaker segmentation: pyannote segmentation-3.0 (ONNX) over sliding 10 s windows.

The model sees 10 s of 16 kHz audio and returns, for each of 589 frames (one every
270 samples = 16.875 ms), log-probabilities over 7 "powerset" classes: nobody, one of
three local speakers, or one of the three pairs. Local speaker 1 of one window has
nothing to do with local speaker 1 of the next: the global identity comes later,
from embeddings and clustering.

Windows are cut from a stream of audio blocks, so the whole file is never in memory.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from ..errors import ModelError

SAMPLE_RATE = 16000
WINDOW_SAMPLES = 160_000  # 10 s: the length the model was trained on
FRAME_STEP_SAMPLES = 270  # model output hop (its receptive field step)
FRAME_SIZE_SAMPLES = 991  # model receptive field
NUM_FRAMES = 589  # output frames per window
LOCAL_SPEAKERS = 3
FRAME_STEP = FRAME_STEP_SAMPLES / SAMPLE_RATE  # seconds
FRAME_SIZE = FRAME_SIZE_SAMPLES / SAMPLE_RATE

# Powerset class -> which local speakers are active ({}, {1}, {2}, {3}, {1,2}, {1,3}, {2,3}).
POWERSET = np.array(
    [[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, 0, 1], [0, 1, 1]], dtype=np.uint8
)


def frame_center(frame: np.ndarray | int | float) -> np.ndarray | float:
    """Time (s) of the middle of output frame(s) ``frame`` on a grid starting at sample 0."""
    return np.asarray(frame) * FRAME_STEP + FRAME_SIZE / 2


def num_global_frames(num_samples: int) -> int:
    """Frames of the global grid (same hop as the model) over ``num_samples``, as the model counts them."""
    return max(1, (num_samples - FRAME_SIZE_SAMPLES) // FRAME_STEP_SAMPLES + 1)


def step_to_samples(step: float) -> int:
    """Window step (s) rounded to a whole number of model frames, so windows align on one grid."""
    frames = max(1, int(round(step * SAMPLE_RATE / FRAME_STEP_SAMPLES)))
    return frames * FRAME_STEP_SAMPLES


def powerset_to_multilabel(log_probs: np.ndarray) -> np.ndarray:
    """Hard decoding: most likely powerset class per frame -> [..., 3] uint8 activity."""
    return POWERSET[np.argmax(log_probs, axis=-1)]


@dataclass(frozen=True, slots=True)
class Window:
    index: int
    start_sample: int  # may run past the end of the audio (zero padded)
    samples: np.ndarray  # [WINDOW_SAMPLES] float32

    @property
    def start_frame(self) -> int:
        return self.start_sample // FRAME_STEP_SAMPLES


def sliding_windows(blocks: Iterable[np.ndarray], step_samples: int) -> Iterator[Window]:
    """10 s windows every ``step_samples`` from a stream of mono blocks.

    Windows start at 0, step, 2*step...; the last one reaches (or passes) the end of the
    audio and is zero padded, as is the only window of audio shorter than 10 s.
    Only about one window plus one block is buffered.
    """
    buf = np.zeros(0, np.float32)
    offset = 0  # absolute sample index of buf[0]
    index = 0
    start = 0
    total = 0
    for block in blocks:
        total += len(block)
        buf = np.concatenate([buf, block.astype(np.float32, copy=False)])
        while start + WINDOW_SAMPLES <= offset + len(buf):
            a = start - offset
            yield Window(index, start, buf[a : a + WINDOW_SAMPLES].copy())
            index += 1
            start += step_samples
            if start - offset > 0:  # drop what no later window needs
                drop = min(start - offset, len(buf))
                buf = buf[drop:]
                offset += drop
    if total == 0:
        return
    # Tail: windows that start before the end but are not full (always at least one window).
    while index == 0 or start < total and start + WINDOW_SAMPLES - step_samples < total:
        a = start - offset
        w = np.zeros(WINDOW_SAMPLES, np.float32)
        part = buf[a : a + WINDOW_SAMPLES] if a >= 0 else buf[:0]
        w[: len(part)] = part
        yield Window(index, start, w)
        index += 1
        start += step_samples


def make_session(model_path: str | Path, threads: int) -> ort.InferenceSession:
    """One CPU session; intra-op threads as asked, no inter-op pool (one graph at a time)."""
    path = Path(model_path)
    if not path.is_file():
        raise ModelError(f"{path}: model file not found")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, int(threads))
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own types for corrupt/unsupported files
        raise ModelError(f"{path}: cannot load ONNX model ({str(e).splitlines()[0]})") from None


class Segmenter:
    """segmentation-3.0 ONNX session, loaded once and reused for every file."""

    def __init__(self, model_path: str | Path, threads: int = 2):
        self.session = make_session(model_path, threads)
        inp = self.session.get_inputs()[0]
        out = self.session.get_outputs()[0]
        if len(inp.shape) != 3 or out.shape[-1] != len(POWERSET):
            raise ModelError(f"{model_path}: not a pyannote segmentation-3.0 model (input {inp.shape})")
        self._input = inp.name
        self._output = out.name

    def log_probs(self, windows: np.ndarray) -> np.ndarray:
        """[B, WINDOW_SAMPLES] float32 -> [B, NUM_FRAMES, 7] powerset log-probabilities."""
        x = np.ascontiguousarray(windows, dtype=np.float32)[:, None, :]
        return self.session.run([self._output], {self._input: x})[0]

    def __call__(self, windows: np.ndarray) -> np.ndarray:
        """[B, WINDOW_SAMPLES] -> [B, NUM_FRAMES, 3] uint8 local speaker activity."""
        return powerset_to_multilabel(self.log_probs(windows))
