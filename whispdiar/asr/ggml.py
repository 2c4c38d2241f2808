"""The whisper.cpp ggml model file: its header (written by ``convert_whisper``, read by
``transcription`` to name the model and pick its DTW alignment heads) and the q8_0 / q5_1
weight blocks of quantized files.

Layout: i32 magic ``ggml``; 10 × i32 hyper-parameters in the order of ``HParams``;
i32 ftype; then mel filters, vocabulary and tensors (see convert_whisper). The ftype is
1 for f16; a quantized file (whisper.cpp's ``quantize`` tool) stores
``GGML_QNT_VERSION * 1000 + ggml_ftype`` (2007 = q8_0, 2009 = q5_1).

The blocks (ggml's ggml-common.h) hold 32 consecutive weights of a row each:
q8_0 = fp16 scale ``d`` + 32 int8 (w = q * d); q5_1 = fp16 ``d``, fp16 ``m``, u32 of
fifth bits, 16 bytes of low nibbles (w = q * d + m; weight j and j + 16 share byte j).
``quantize_blocks`` reproduces ggml's reference quantizers (``quantize_row_q8_0_ref``,
``quantize_row_q5_1_ref``, what ``ggml_quantize_chunk`` uses without an importance
matrix) bit for bit: float32 arithmetic in the C code's order, ``roundf`` (halves away
from zero) for q8_0, ``(uint8_t)(x + 0.5f)`` for q5_1, scales rounded to fp16 to nearest even.
"""

from __future__ import annotations

import os
import struct
from dataclasses import astuple, dataclass, fields
from pathlib import Path

import numpy as np

from ..errors import ModelError

GGML_MAGIC = 0x67676D6C
GGML_F16 = 1
GGML_QNT_VERSION = 2  # ggml.h: bumped on quantization format changes; whisper.cpp reads ftype % 1000
GGML_QNT_VERSION_FACTOR = 1000
QK = 32  # weights per q8_0 / q5_1 block (QK8_0, QK5_1)


@dataclass(frozen=True, slots=True)
class QuantType:
    """One ggml block quantization: its names and ids in ggml.h, and its block layout."""

    name: str
    ggml_type: int  # enum ggml_type of the tensors (the tensor header's type)
    ftype: int  # enum ggml_ftype of the file ("mostly" this type; 1-D tensors stay f32)
    block: np.dtype  # one block of QK weights

    @property
    def file_ftype(self) -> int:
        """The header's ftype, as whisper.cpp's quantize tool writes it."""
        return GGML_QNT_VERSION * GGML_QNT_VERSION_FACTOR + self.ftype


Q8_0 = QuantType("q8_0", 8, 7, np.dtype([("d", "<f2"), ("qs", "i1", QK)]))
Q5_1 = QuantType("q5_1", 7, 9, np.dtype([("d", "<f2"), ("m", "<f2"), ("qh", "<u4"), ("qs", "u1", QK // 2)]))
QUANT_TYPES = {q.name: q for q in (Q8_0, Q5_1)}
# enum ggml_ftype -> name, for the header of any whisper.cpp file (official ones included).
FTYPE_NAMES = {0: "f32", 1: "f16", 2: "q4_0", 3: "q4_1", 7: "q8_0", 8: "q5_0", 9: "q5_1",
               10: "q2_k", 11: "q3_k", 12: "q4_k", 13: "q5_k", 14: "q6_k"}
# Bytes per element (f32, f16) or per block of QK elements, by enum ggml_type.
TYPE_SIZES = {0: (4, 1), 1: (2, 1), **{q.ggml_type: (q.block.itemsize, QK) for q in QUANT_TYPES.values()}}


def tensor_nbytes(ggml_type: int, n_elements: int) -> int:
    """Size of a tensor's data in the file; ValueError for a type this module does not know."""
    if ggml_type not in TYPE_SIZES:
        raise ValueError(f"unsupported ggml tensor type {ggml_type}")
    size, per = TYPE_SIZES[ggml_type]
    if n_elements % per:
        raise ValueError(f"{n_elements} elements do not fill blocks of {per}")
    return n_elements // per * size


def _blocks_of(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.size % QK:
        raise ValueError(f"{x.size} weights do not fill blocks of {QK}")
    return x.reshape(-1, QK)


def _block_reduce(op: np.ufunc, x: np.ndarray) -> np.ndarray:
    """``op`` over each row of [n, 32] by halving (much faster than ``axis=1`` on short rows)."""
    while x.shape[1] > 1:
        h = x.shape[1] // 2
        x = op(x[:, :h], x[:, h:])
    return x[:, 0]


def _inverse(d: np.ndarray) -> np.ndarray:
    """``d ? 1.0f/d : 0.0f`` in float32."""
    out = np.zeros_like(d)
    np.divide(np.float32(1), d, out=out, where=d != 0)
    return out


def quantize_blocks(x: np.ndarray, qtype: QuantType) -> np.ndarray:
    """Weights (any shape, row-major, a multiple of 32 in all) -> an array of ``qtype.block``,
    byte for byte what ggml's reference quantizer writes for them.

    Vectorised; about 30 ms per million weights on 64 Ki-weight slices (the float32 copies
    then stay in cache), so callers quantize big tensors a slice at a time."""
    x = _blocks_of(x)
    if not np.isfinite(x).all():
        raise ValueError("cannot quantize non-finite weights")
    out = np.empty(len(x), qtype.block)
    if qtype is Q8_0:
        d = _block_reduce(np.maximum, np.abs(x)) / np.float32(127)
        q = x * _inverse(d)[:, None]
        # roundf (halves away from zero): trunc, then one step away from zero when the
        # dropped fraction (exact in float32) is at least a half.
        r = np.trunc(q)
        r += np.copysign(np.abs(q - r) >= 0.5, q, dtype=np.float32)
        out["qs"] = r
        out["d"] = d  # float32 -> float16 rounds to nearest even, as ggml_compute_fp32_to_fp16
        return out
    if qtype is Q5_1:
        lo, hi = _block_reduce(np.minimum, x), _block_reduce(np.maximum, x)
        d = (hi - lo) / np.float32(31)
        q = x - lo[:, None]
        q *= _inverse(d)[:, None]
        q += np.float32(0.5)  # (uint8_t)(x0 + 0.5f): the sum rounded to float32, then truncated
        xi = q.astype(np.uint8)
        half = QK // 2
        out["qs"] = (xi[:, :half] & 0x0F) | (xi[:, half:] << 4)
        # Bit j of qh is the fifth bit of weight j: little-endian bit order, bytes in order.
        out["qh"] = np.packbits(xi >= 16, axis=1, bitorder="little").view("<u4")[:, 0]
        out["d"] = d
        out["m"] = lo
        return out
    raise ValueError(f"unsupported quantization {qtype.name}")


def dequantize_blocks(blocks: np.ndarray | bytes, qtype: QuantType) -> np.ndarray:
    """An array of ``qtype.block`` (or its raw bytes) -> float32 weights [n_blocks * 32]
    (ggml's dequantize_row_q8_0 / dequantize_row_q5_1)."""
    b = blocks if isinstance(blocks, np.ndarray) else np.frombuffer(blocks, qtype.block)
    d = b["d"].astype(np.float32)[:, None]
    if qtype is Q8_0:
        return (b["qs"] * d).reshape(-1)
    if qtype is Q5_1:
        qs = b["qs"]
        high = np.unpackbits(b["qh"].astype("<u4").view(np.uint8).reshape(-1, 4), axis=1, bitorder="little") << 4
        q = np.concatenate([qs & 0x0F, qs >> 4], axis=1) | high
        return (q * d + b["m"].astype(np.float32)[:, None]).reshape(-1)
    raise ValueError(f"unsupported quantization {qtype.name}")


def decodes_within_bound(x: np.ndarray, blocks: np.ndarray, qtype: QuantType) -> bool:
    """Whether every block decodes to its weights ``x`` within the largest error ggml's
    quantizer can leave: half a step, plus the fp16 rounding of the scale (and of q5_1's
    minimum; relative 2^-11, absolute 2^-25 for subnormals) times the largest code, plus
    float32 rounding. A layout or rounding bug breaks it by whole steps."""
    x = _blocks_of(x)
    err = _block_reduce(np.maximum, np.abs(dequantize_blocks(blocks, qtype).reshape(-1, QK) - x))
    fp16 = 2.0**-11
    if qtype is Q8_0:
        amax = _block_reduce(np.maximum, np.abs(x)).astype(np.float64)
        bound = amax * (0.5 / 127 + fp16) * 1.01 + 128 * 2.0**-25
    else:
        lo = _block_reduce(np.minimum, x).astype(np.float64)
        span = _block_reduce(np.maximum, x) - lo
        bound = (span / 62 + (span + np.abs(lo)) * fp16) * 1.01 + 64 * 2.0**-25
    return bool((err <= bound).all())


@dataclass(frozen=True, slots=True)
class HParams:
    n_vocab: int
    n_audio_ctx: int
    n_audio_state: int
    n_audio_head: int
    n_audio_layer: int
    n_text_ctx: int
    n_text_state: int
    n_text_head: int
    n_text_layer: int
    n_mels: int

    def values(self) -> tuple[int, ...]:
        """The ten header integers, in file order."""
        return astuple(self)[: len(fields(HParams))]

    @property
    def multilingual(self) -> bool:
        return self.n_vocab >= 51865  # whisper.cpp's own test

    @property
    def n_base_tokens(self) -> int:
        # whisper.cpp puts <|endoftext|> at 50256 (English-only) or 50257 (multilingual)
        # and names every id from there on itself; the file carries the ids below it.
        return 50257 if self.multilingual else 50256

    @property
    def size(self) -> str:
        """OpenAI model size guessed from the shape ("tiny", "base", ..., "large-v3")."""
        by_layers = {4: "tiny", 6: "base", 12: "small", 24: "medium", 32: "large"}
        name = by_layers.get(self.n_audio_layer, "custom")
        if name == "large":
            if self.n_text_layer == 4:
                return "large-v3-turbo"
            return "large-v3" if self.n_mels == 128 else "large-v2"
        return name

    @property
    def name(self) -> str:
        s = self.size
        return s if self.multilingual or s.startswith("large") or s == "custom" else f"{s}.en"


@dataclass(frozen=True, slots=True)
class WhisperHeader(HParams):
    ftype: int  # as stored: quantized files add GGML_QNT_VERSION * 1000

    @property
    def weights(self) -> str:
        """The weight type of the big matrices: ``f16``, ``q8_0``, ``q5_1``, ..."""
        ftype = self.ftype % GGML_QNT_VERSION_FACTOR
        return FTYPE_NAMES.get(ftype, f"ftype {ftype}")

    @property
    def label(self) -> str:
        """The model's name with its quantization, as the registry names it (``base-q8_0``)."""
        return self.name if self.weights in ("f16", "f32") else f"{self.name}-{self.weights}"


def read_header(path: str | os.PathLike[str]) -> WhisperHeader:
    """Hyper-parameters from a ggml whisper file; ModelError if it is not one."""
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"{p}: whisper model not found")
    with p.open("rb") as f:
        raw = f.read(48)
    if len(raw) < 48 or struct.unpack("<i", raw[:4])[0] != GGML_MAGIC:
        raise ModelError(f"{p}: not a whisper.cpp ggml model file")
    return WhisperHeader(*struct.unpack("<11i", raw[4:48]))
