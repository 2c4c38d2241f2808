"""Speaker embeddings with CAM++ (3D-Speaker) exported to ONNX.

Runtime dependencies: numpy, onnxruntime, kaldi-native-fbank (never torch).

Features follow 3D-Speaker's ``speakerlab.process.processor.FBank`` exactly:
``torchaudio.compliance.kaldi.fbank(wav, num_mel_bins=80, sample_frequency=16000,
dither=0)`` on a float waveform in [-1, 1] (torchaudio.load's scale, *not*
int16 range), all other options at Kaldi defaults (25 ms povey window, 10 ms
shift, snip_edges=True, pre-emphasis 0.97, DC removal, 512-point FFT, low
frequency 20 Hz), then the per-utterance mean over time is subtracted.
kaldi-native-fbank reproduces that Kaldi computation natively.

Keep this module self-contained (no imports from the rest of the package):
``whispdiar/diarization/export_campplus.py`` loads it by file path inside a throw-away build
environment so that the export check uses the very same feature code.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from pathlib import Path

import kaldi_native_fbank as knf
import numpy as np
import onnxruntime as ort

SAMPLE_RATE = 16000
NUM_MEL_BINS = 80
EMBEDDING_DIM = 192
FRAME_LENGTH_MS = 25.0
FRAME_SHIFT_MS = 10.0
# The same in samples, for mapping between sample/segmentation time and fbank frames.
FRAME_LENGTH = int(SAMPLE_RATE * FRAME_LENGTH_MS / 1000)  # 400
FRAME_SHIFT = int(SAMPLE_RATE * FRAME_SHIFT_MS / 1000)  # 160
# With 1 or 2 frames the model's std pooling divides by zero (NaN output).
# This is the numerical minimum, not a recommendation: embeddings of very short
# stretches (< ~0.5 s) are unreliable anyway.
MIN_FRAMES = 3


def num_frames(num_samples: int) -> int:
    """Number of fbank frames for ``num_samples`` samples (snip_edges=True)."""
    if num_samples < FRAME_LENGTH:
        return 0
    return 1 + (num_samples - FRAME_LENGTH) // FRAME_SHIFT


def frame_start_sample(frame: int) -> int:
    """First sample covered by fbank frame ``frame`` (it spans FRAME_LENGTH samples)."""
    return frame * FRAME_SHIFT


def _fbank_options() -> knf.FbankOptions:
    opts = knf.FbankOptions()
    opts.frame_opts.samp_freq = SAMPLE_RATE
    opts.frame_opts.frame_length_ms = FRAME_LENGTH_MS
    opts.frame_opts.frame_shift_ms = FRAME_SHIFT_MS
    opts.frame_opts.dither = 0.0  # knf defaults to a small dither; torchaudio call uses 0
    opts.frame_opts.snip_edges = True  # torchaudio/Kaldi default, not overridden by 3D-Speaker
    opts.frame_opts.window_type = "povey"
    opts.frame_opts.preemph_coeff = 0.97
    opts.frame_opts.remove_dc_offset = True
    opts.frame_opts.round_to_power_of_two = True
    opts.mel_opts.num_bins = NUM_MEL_BINS
    opts.mel_opts.low_freq = 20.0
    opts.mel_opts.high_freq = 0.0  # 0 = Nyquist
    opts.use_energy = False
    opts.use_log_fbank = True
    opts.use_power = True
    return opts


_FBANK_OPTS = _fbank_options()
_FEED_SAMPLES = 30 * SAMPLE_RATE


def fbank(wave: np.ndarray) -> np.ndarray:
    """80-bin Kaldi log-mel fbank of a mono 16 kHz waveform in [-1, 1].

    Returns float32 [T, 80], *not* mean-normalised, so callers can compute it
    once for a whole recording and slice frames for any segment (then let
    :meth:`SpeakerEmbedder.embed_features` normalise each slice).
    """
    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim != 1:
        raise ValueError(f"expected mono 1-D waveform, got shape {wave.shape}")
    n = num_frames(wave.shape[0])
    if n == 0:
        return np.zeros((0, NUM_MEL_BINS), dtype=np.float32)
    stream = FbankStream()
    # Feed in pieces: the streaming computer gives the same frames, and a long
    # recording never becomes one giant Python list.
    for start in range(0, wave.shape[0], _FEED_SAMPLES):
        stream.feed(wave[start : start + _FEED_SAMPLES])
    if stream.ready != n:  # guard the frame arithmetic others rely on
        raise RuntimeError(f"fbank frame count {stream.ready} != expected {n}")
    return stream.frames(0, n)


class FbankStream:
    """The fbank of one long stream, computed once as audio arrives, read by frame range.

    Overlapping analysis windows (10 s every 2.5 s) would otherwise featurise every
    sample four times. Frame ``i`` covers samples ``[160 i, 160 i + 400)`` of the stream;
    its value depends on those samples only, so a slice equals the fbank of the same
    samples computed alone. Frames before ``drop_before`` are released.
    """

    def __init__(self) -> None:
        self._computer = knf.OnlineFbank(_FBANK_OPTS)
        self.fed = 0  # samples accepted so far
        self._parts: list[np.ndarray] = []  # the kept frames, joined only when read
        self._first = 0  # stream frame index of the first kept frame
        self._kept = 0

    @property
    def ready(self) -> int:
        """Frames computed so far (stream indices 0 .. ready - 1)."""
        return self._computer.num_frames_ready

    def feed(self, samples: np.ndarray) -> None:
        if len(samples):
            # a list converts faster than an ndarray through knf's pybind11 binding
            self._computer.accept_waveform(SAMPLE_RATE, np.asarray(samples, np.float32).tolist())
            self.fed += len(samples)
        have, ready = self._first + self._kept, self.ready
        if ready > have:
            self._parts.append(np.array([self._computer.get_frame(i) for i in range(have, ready)], np.float32))
            self._kept += ready - have

    def _buffer(self) -> np.ndarray:
        if len(self._parts) != 1:
            self._parts = [np.concatenate(self._parts) if self._parts
                           else np.zeros((0, NUM_MEL_BINS), np.float32)]
        return self._parts[0]

    def frames(self, start: int, stop: int) -> np.ndarray:
        """Frames ``[start, stop)`` (stream indices); all must be computed and kept."""
        if start < self._first or stop > self._first + self._kept:
            raise IndexError(f"fbank frames {start}-{stop} not available "
                             f"(have {self._first}-{self._first + self._kept})")
        return self._buffer()[start - self._first: stop - self._first]

    def drop_before(self, frame: int) -> None:
        k = min(max(0, frame - self._first), self._kept)
        if k:
            self._parts = [self._buffer()[k:]]
            self._first += k
            self._kept -= k
            self._computer.pop(k)


def l2_normalize(x: np.ndarray, axis: int = -1, eps: float = 1e-12) -> np.ndarray:
    """Scale vectors to unit length along ``axis``."""
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=axis, keepdims=True)
    return x / np.maximum(norm, eps)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two embedding vectors."""
    return float(np.dot(l2_normalize(np.ravel(a)), l2_normalize(np.ravel(b))))


def cosine_matrix(a: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """Pairwise cosine similarities of the rows of ``a`` [N, D] and ``b`` [M, D] → [N, M]."""
    an = l2_normalize(a)
    bn = an if b is None else l2_normalize(b)
    return an @ bn.T


def model_fingerprint(path: str | Path) -> str:
    """``<file stem>@<first 12 hex digits of its sha256>``, e.g. ``campplus_cn_en_common@8e8dce3af38d``.

    A file the registry knows as another build of the same numbers (``sha256_also``) gets
    that model's id, so voiceprints stay usable across machines whose exports differ in bytes.
    """
    from ..models import canonical_sha256

    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return f"{Path(path).stem}@{canonical_sha256(h.hexdigest())[:12]}"


class SpeakerEmbedder:
    """CAM++ speaker embedding model (ONNX: ``feats`` [N, T, 80] → ``embs`` [N, 192])."""

    def __init__(
        self, model_path: str | Path, threads: int = 1, model_id: str | None = None, spin: bool = False
    ) -> None:
        model_path = Path(model_path)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # ORT's worker threads busy-wait between ops by default. On a busy 2-core machine
        # (e.g. whisper transcribing alongside) that burns the CPU others need: measured there,
        # 10 s of audio with threads=2 took 0.90 s with spinning vs 0.54 s without. spin=True
        # may win a little latency on an otherwise idle machine.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        self._session = ort.InferenceSession(str(model_path), sess_options=opts, providers=["CPUExecutionProvider"])
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ValueError(f"{model_path}: expected one input and one output")
        self._input = inputs[0].name
        self._output = outputs[0].name
        self.model_path = model_path
        # Identity for voiceprint compatibility: embeddings from different models are not
        # comparable, so the id is the file's content hash, not just its name.
        self.model_id: str = model_id if model_id is not None else model_fingerprint(model_path)
        last = outputs[0].shape[-1]
        self.dim: int = last if isinstance(last, int) else EMBEDDING_DIM

    @staticmethod
    def _normalise(feats: np.ndarray) -> np.ndarray:
        feats = np.asarray(feats, dtype=np.float32)
        if feats.ndim != 2 or feats.shape[1] != NUM_MEL_BINS:
            raise ValueError(f"expected fbank features [T, {NUM_MEL_BINS}], got {feats.shape}")
        if feats.shape[0] < MIN_FRAMES:
            raise ValueError(f"need at least {MIN_FRAMES} fbank frames, got {feats.shape[0]}")
        # Per-utterance cepstral mean subtraction, as 3D-Speaker's FBank(mean_nor=True).
        return feats - feats.mean(axis=0, keepdims=True)

    def embed_features(self, feats: np.ndarray) -> np.ndarray:
        """Embedding [192] of one segment's (un-normalised) fbank features [T, 80]."""
        x = self._normalise(feats)[None]
        return self._session.run([self._output], {self._input: x})[0][0]

    def embed_batch(self, feats_list: list[np.ndarray], max_batch: int = 16) -> np.ndarray:
        """Embeddings [N, 192] of several segments, in input order.

        Segments of equal length are stacked into one run; unequal ones are never
        padded, because padding frames would enter the statistics pooling and
        change the embedding.
        """
        out = np.empty((len(feats_list), self.dim), dtype=np.float32)
        groups: dict[int, list[int]] = defaultdict(list)
        normed = [self._normalise(f) for f in feats_list]
        for i, f in enumerate(normed):
            groups[f.shape[0]].append(i)
        for idx in groups.values():
            for start in range(0, len(idx), max_batch):
                chunk = idx[start : start + max_batch]
                x = np.stack([normed[i] for i in chunk])
                out[chunk] = self._session.run([self._output], {self._input: x})[0]
        return out

    def embed(self, wave: np.ndarray) -> np.ndarray:
        """Embedding [192] of a mono 16 kHz waveform in [-1, 1]."""
        return self.embed_features(fbank(wave))
