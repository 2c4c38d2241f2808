"""Convert a CTranslate2 (faster-whisper) Whisper ``model.bin`` to a whisper.cpp ggml file.

Registry packages ship Whisper only as CTranslate2 models; whisper.cpp needs its own
ggml layout (see whisper.cpp's models/convert-pt-to-ggml.py). The conversion is
lossless for float16 models: big tensors are copied byte for byte, and only the
tensors whisper.cpp wants in float32 (1-D tensors, conv biases, positional
embeddings) are widened. int8/int16 weights (with ``<name>_scale``) are dequantized
to float16.

With ``quantize="q8_0"`` or ``"q5_1"`` the file is what whisper.cpp's own
``quantize`` tool (examples/quantize + examples/common-ggml.cpp) makes of the float16
file: every 2-D tensor except the conv biases and positional embeddings becomes q8_0 or
q5_1 blocks (the conv weights are 3-D and stay f16, 1-D tensors stay f32), quantized
from the float16 values by ggml's reference quantizers (``ggml.quantize_blocks``), and
the header's ftype is ``GGML_QNT_VERSION * 1000 + ftype`` (2007, 2009).
``quantize_ggml`` does the same to an existing float16 ggml file (an official one too):
for the same float16 tensors both give the same bytes.

The output is deterministic (fixed tensor order, no timestamps), written to a
temporary file in the destination directory, re-read and checked against what
whisper.cpp's loader expects (quantized blocks are also decoded again as they are
written and compared with their float16 source), then atomically renamed into place.

Usage: ``python -m whispdiar.asr.convert MODEL_PART [MODEL_PART...]
--vocabulary vocabulary.txt --out ggml-base.bin [--quantize q8_0]``, or
``python -m whispdiar.asr.convert ggml-base.bin --quantize q5_1 --out ggml-base-q5_1.bin``
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import struct
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from whispdiar.asr.ggml import GGML_F16 as _GGML_F16
from whispdiar.asr.ggml import GGML_MAGIC as _GGML_MAGIC
from whispdiar.asr.ggml import (
    GGML_QNT_VERSION_FACTOR,
    QUANT_TYPES,
    HParams,
    QuantType,
    decodes_within_bound,
    quantize_blocks,
    tensor_nbytes,
)
from whispdiar.asr.ggml import QK as _QK
from whispdiar.errors import ModelError

__all__ = ["QUANT_TYPES", "ConversionError", "convert_ct2_to_ggml", "quantize_ggml", "slaney_mel_filters"]


class ConversionError(ModelError):
    """The CTranslate2 model or its vocabulary is malformed, truncated or unsupported."""


_CT2_MIN_VERSION = 4  # from v4 on, variables carry a dtype id and a byte count
_CT2_MAX_VERSION = 6
_CT2_SPEC = "WhisperSpec"
# CTranslate2 dtype ids -> storage dtype (5 = bfloat16 is read as raw uint16).
_CT2_DTYPES: dict[int, np.dtype] = {
    0: np.dtype("<f4"),
    1: np.dtype("i1"),
    2: np.dtype("<i2"),
    3: np.dtype("<i4"),
    4: np.dtype("<f2"),
    5: np.dtype("<u2"),
}
_CT2_F32, _CT2_I8, _CT2_I16, _CT2_F16, _CT2_BF16 = 0, 1, 2, 4, 5

_GGML_F32 = 0
_GGML_DTYPES = {_GGML_F32: np.dtype("<f4"), _GGML_F16: np.dtype("<f2")}
_QUANT_BY_GGML_TYPE = {q.ggml_type: q for q in QUANT_TYPES.values()}
# whisper.cpp's quantize tool: 2-D tensors are quantized except these (whisper.cpp's
# loader keeps them f32); the conv weights are 3-D and stay f16.
_QUANT_SKIP = frozenset(
    {"encoder.conv1.bias", "encoder.conv2.bias", "encoder.positional_embedding", "decoder.positional_embedding"}
)
_QUANT_CHUNK = 1 << 16  # weights quantized at a time: the float32 working copies stay in cache
_Entry = tuple[str, tuple[int, ...], int]  # a tensor as the file lists it: name, ggml dims, ggml type

_SAMPLE_RATE = 16000
_N_FFT = 400
_EOT = "<|endoftext|>"


# --------------------------------------------------------------------------- input


class _PartsReader:
    """Random access to several files read as one concatenated byte stream."""

    def __init__(self, parts: list[Path]) -> None:
        self._files: list[BinaryIO] = []
        self._starts: list[int] = []
        self.size = 0
        try:
            for part in parts:
                try:
                    fh = open(part, "rb")  # noqa: SIM115 - closed in close()
                except OSError as exc:
                    raise ConversionError(f"cannot open model file {part}: {exc.strerror}") from exc
                self._files.append(fh)
                self._starts.append(self.size)
                self.size += os.fstat(fh.fileno()).st_size
        except BaseException:
            self.close()
            raise

    def read_at(self, offset: int, n: int) -> bytes:
        if offset < 0 or offset + n > self.size:
            raise ConversionError(f"model data truncated: need {n} bytes at offset {offset}, have {self.size} bytes")
        chunks: list[bytes] = []
        idx = max(i for i, start in enumerate(self._starts) if start <= offset) if n else 0
        while n > 0:
            fh = self._files[idx]
            fh.seek(offset - self._starts[idx])
            chunk = fh.read(n)
            if not chunk:  # end of this part (or a part that shrank under us)
                idx += 1
                if idx >= len(self._files):
                    raise ConversionError(f"unexpected end of model data at offset {offset}")
                continue
            chunks.append(chunk)
            offset += len(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        for fh in self._files:
            fh.close()
        self._files.clear()

    def __enter__(self) -> _PartsReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Cursor:
    """Sequential little-endian reader over a _PartsReader."""

    def __init__(self, reader: _PartsReader) -> None:
        self.reader = reader
        self.pos = 0

    def take(self, n: int) -> bytes:
        data = self.reader.read_at(self.pos, n)
        self.pos += n
        return data

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int(struct.unpack("<H", self.take(2))[0])

    def u32(self) -> int:
        return int(struct.unpack("<I", self.take(4))[0])

    def string(self) -> str:
        n = self.u16()
        raw = self.take(n)
        if n == 0 or raw[-1] != 0:
            raise ConversionError(f"malformed string at offset {self.pos - n} in model data")
        try:
            return raw[:-1].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConversionError(f"malformed string at offset {self.pos - n} in model data") from exc


@dataclass(frozen=True)
class _Variable:
    shape: tuple[int, ...]
    dtype: int
    offset: int  # in the concatenated stream
    nbytes: int


@dataclass
class _Ct2Model:
    reader: _PartsReader
    variables: dict[str, _Variable]
    aliases: dict[str, str]

    def find(self, name: str) -> _Variable | None:
        # CT2 also aliases the quantization scale of an aliased variable.
        if name not in self.variables and name in self.aliases:
            name = self.aliases[name]
        elif name.endswith("_scale") and name[: -len("_scale")] in self.aliases:
            name = self.aliases[name[: -len("_scale")]] + "_scale"
        return self.variables.get(name)

    def get(self, name: str) -> _Variable:
        var = self.find(name)
        if var is None:
            raise ConversionError(f"model data has no variable {name!r}")
        return var

    def scalar(self, name: str) -> int | None:
        var = self.find(name)
        if var is None or var.shape or var.dtype not in (_CT2_I8, _CT2_I16, 3):
            return None
        raw = self.reader.read_at(var.offset, var.nbytes)
        return int(np.frombuffer(raw, dtype=_CT2_DTYPES[var.dtype])[0])


def _read_ct2_index(reader: _PartsReader) -> _Ct2Model:
    """Parse the variable directory of a CT2 model.bin without loading tensor data."""
    cur = _Cursor(reader)
    version = cur.u32()
    if not _CT2_MIN_VERSION <= version <= _CT2_MAX_VERSION:
        raise ConversionError(
            f"not a supported CTranslate2 model.bin (binary version {version}, "
            f"expected {_CT2_MIN_VERSION}..{_CT2_MAX_VERSION})"
        )
    spec = cur.string()
    if spec != _CT2_SPEC:
        raise ConversionError(f"not a CTranslate2 Whisper model (spec {spec!r})")
    cur.u32()  # spec revision: every tensor is checked below instead
    count = cur.u32()
    variables: dict[str, _Variable] = {}
    for _ in range(count):
        name = cur.string()
        rank = cur.u8()
        shape = tuple(cur.u32() for _ in range(rank))
        dtype = cur.u8()
        nbytes = cur.u32()
        if dtype not in _CT2_DTYPES:
            raise ConversionError(f"variable {name!r} has unknown dtype id {dtype}")
        expected = int(np.prod(shape, dtype=np.int64)) * _CT2_DTYPES[dtype].itemsize
        if nbytes != expected:
            raise ConversionError(f"variable {name!r} {list(shape)} holds {nbytes} bytes, expected {expected}")
        if cur.pos + nbytes > reader.size:
            raise ConversionError(f"model data truncated inside variable {name!r}")
        variables[name] = _Variable(shape, dtype, cur.pos, nbytes)
        cur.pos += nbytes
    aliases: dict[str, str] = {}
    for _ in range(cur.u32()):
        alias = cur.string()
        aliases[alias] = cur.string()
    if cur.pos != reader.size:
        raise ConversionError(f"{reader.size - cur.pos} unexpected bytes after the model data (wrong or extra part?)")
    return _Ct2Model(reader, variables, aliases)


# ------------------------------------------------------------------ hyper-parameters


def _count_layers(model: _Ct2Model, side: str) -> int:
    pattern = re.compile(rf"^{side}/layer_(\d+)/")
    found = {int(m.group(1)) for name in model.variables if (m := pattern.match(name))}
    if not found:
        raise ConversionError(f"model data has no {side} layers")
    n = max(found) + 1
    if len(found) != n:
        raise ConversionError(f"model data is missing {side} layers {sorted(set(range(n)) - found)}")
    return n


def _hparams(model: _Ct2Model) -> HParams:
    def shape(name: str, rank: int) -> tuple[int, ...]:
        s = model.get(name).shape
        if len(s) != rank:
            raise ConversionError(f"variable {name!r} has shape {list(s)}, expected rank {rank}")
        return s

    n_vocab, n_text_state = shape("decoder/embeddings/weight", 2)
    n_audio_ctx, n_audio_state = shape("encoder/position_encodings/encodings", 2)
    n_text_ctx, pos_state = shape("decoder/position_encodings/encodings", 2)
    conv_state, n_mels, _ = shape("encoder/conv1/weight", 3)
    if not n_text_state == n_audio_state == pos_state == conv_state:
        raise ConversionError("encoder and decoder widths differ (whisper.cpp requires equal widths)")
    hp = HParams(
        n_vocab=n_vocab,
        n_audio_ctx=n_audio_ctx,
        n_audio_state=n_audio_state,
        n_audio_head=model.scalar("encoder/num_heads") or n_audio_state // 64,
        n_audio_layer=_count_layers(model, "encoder"),
        n_text_ctx=n_text_ctx,
        n_text_state=n_text_state,
        n_text_head=model.scalar("decoder/num_heads") or n_text_state // 64,
        n_text_layer=_count_layers(model, "decoder"),
        n_mels=n_mels,
    )
    if hp.n_audio_state % hp.n_audio_head or hp.n_text_state % hp.n_text_head:
        raise ConversionError("attention width is not a multiple of the head count")
    return hp


# --------------------------------------------------------------------- tensor plan


@dataclass(frozen=True)
class _Tensor:
    """One ggml tensor and where its data comes from in the CT2 model."""

    name: str
    shape: tuple[int, ...]  # numpy (row-major) order; ggml dims are this reversed
    ggml_type: int
    source: str
    source_shape: tuple[int, ...]  # full shape the CT2 variable must have
    rows: tuple[int, int] | None = None  # row slice of the source (split fused q/k/v)


def _quantized(name: str, n_dims: int) -> bool:
    """Whether whisper.cpp's quantize tool quantizes this tensor."""
    return n_dims == 2 and name not in _QUANT_SKIP


def _plan(hp: HParams, quant: QuantType | None = None) -> list[_Tensor]:
    """Every tensor whisper.cpp loads, in output order (encoder, then decoder), with the
    types of a float16 file or, with ``quant``, of that file quantized."""
    d = hp.n_audio_state
    out: list[_Tensor] = []

    def vec(name: str, source: str, n: int, rows: tuple[int, int] | None = None, total: int = 0) -> None:
        out.append(_Tensor(name, (n,), _GGML_F32, source, (total or n,), rows))

    def mat(
        name: str,
        source: str,
        shape: tuple[int, ...],
        rows: tuple[int, int] | None = None,
        total: int = 0,
        ggml_type: int = _GGML_F16,
    ) -> None:
        src_shape = (total, *shape[1:]) if total else shape
        out.append(_Tensor(name, shape, ggml_type, source, src_shape, rows))

    def norm(name: str, source: str) -> None:
        vec(f"{name}.weight", f"{source}/gamma", d)
        vec(f"{name}.bias", f"{source}/beta", d)

    def linear(
        name: str,
        source: str,
        n_out: int,
        n_in: int,
        bias: bool = True,
        rows: tuple[int, int] | None = None,
        total: int = 0,
    ) -> None:
        mat(f"{name}.weight", f"{source}/weight", (n_out, n_in), rows, total)
        if bias:
            vec(f"{name}.bias", f"{source}/bias", n_out, rows, total)

    def block(prefix: str, source: str, cross: bool) -> None:
        sa = f"{source}/self_attention"
        norm(f"{prefix}.attn_ln", f"{sa}/layer_norm")
        # q, k, v are stacked by rows; whisper has no key bias (CT2 stores zeros; a key
        # bias would not change softmax anyway), so dropping it is exact.
        linear(f"{prefix}.attn.query", f"{sa}/linear_0", d, d, rows=(0, d), total=3 * d)
        linear(f"{prefix}.attn.key", f"{sa}/linear_0", d, d, bias=False, rows=(d, 2 * d), total=3 * d)
        linear(f"{prefix}.attn.value", f"{sa}/linear_0", d, d, rows=(2 * d, 3 * d), total=3 * d)
        linear(f"{prefix}.attn.out", f"{sa}/linear_1", d, d)
        if cross:
            ca = f"{source}/attention"
            norm(f"{prefix}.cross_attn_ln", f"{ca}/layer_norm")
            linear(f"{prefix}.cross_attn.query", f"{ca}/linear_0", d, d)
            linear(f"{prefix}.cross_attn.key", f"{ca}/linear_1", d, d, bias=False, rows=(0, d), total=2 * d)
            linear(f"{prefix}.cross_attn.value", f"{ca}/linear_1", d, d, rows=(d, 2 * d), total=2 * d)
            linear(f"{prefix}.cross_attn.out", f"{ca}/linear_2", d, d)
        norm(f"{prefix}.mlp_ln", f"{source}/ffn/layer_norm")
        linear(f"{prefix}.mlp.0", f"{source}/ffn/linear_0", 4 * d, d)
        linear(f"{prefix}.mlp.2", f"{source}/ffn/linear_1", d, 4 * d)

    pos = "position_encodings/encodings"
    mat("encoder.positional_embedding", f"encoder/{pos}", (hp.n_audio_ctx, d), ggml_type=_GGML_F32)
    mat("encoder.conv1.weight", "encoder/conv1/weight", (d, hp.n_mels, 3))
    out.append(_Tensor("encoder.conv1.bias", (d, 1), _GGML_F32, "encoder/conv1/bias", (d,)))
    mat("encoder.conv2.weight", "encoder/conv2/weight", (d, d, 3))
    out.append(_Tensor("encoder.conv2.bias", (d, 1), _GGML_F32, "encoder/conv2/bias", (d,)))
    for i in range(hp.n_audio_layer):
        block(f"encoder.blocks.{i}", f"encoder/layer_{i}", cross=False)
    norm("encoder.ln_post", "encoder/layer_norm")

    mat("decoder.positional_embedding", f"decoder/{pos}", (hp.n_text_ctx, d), ggml_type=_GGML_F32)
    mat("decoder.token_embedding.weight", "decoder/embeddings/weight", (hp.n_vocab, d))
    for i in range(hp.n_text_layer):
        block(f"decoder.blocks.{i}", f"decoder/layer_{i}", cross=True)
    norm("decoder.ln", "decoder/layer_norm")
    if quant is None:
        return out
    for t in out:
        if _quantized(t.name, len(t.shape)) and t.shape[-1] % _QK:
            raise ConversionError(f"cannot quantize {t.name}: rows of {t.shape[-1]} are not a multiple of {_QK}")
    return [
        _Tensor(t.name, t.shape, quant.ggml_type, t.source, t.source_shape, t.rows)
        if _quantized(t.name, len(t.shape))
        else t
        for t in out
    ]


def _tensor_data(model: _Ct2Model, t: _Tensor, ggml_type: int) -> bytes:
    """The tensor's bytes as ggml f32 or f16; float16 sources pass through unchanged."""
    var = model.get(t.source)
    if var.shape != t.source_shape:
        raise ConversionError(f"variable {t.source!r} has shape {list(var.shape)}, expected {list(t.source_shape)}")
    r0, r1 = t.rows if t.rows else (0, var.shape[0])
    row_elems = int(np.prod(var.shape[1:], dtype=np.int64))
    row_bytes = row_elems * _CT2_DTYPES[var.dtype].itemsize
    raw = model.reader.read_at(var.offset + r0 * row_bytes, (r1 - r0) * row_bytes)
    target = _GGML_DTYPES[ggml_type]

    if var.dtype in (_CT2_I8, _CT2_I16):
        scale = model.get(t.source + "_scale")
        s = np.frombuffer(model.reader.read_at(scale.offset, scale.nbytes), _CT2_DTYPES[scale.dtype])
        s = s.astype(np.float32)
        if s.size == var.shape[0]:  # per-row scale
            s = s[r0:r1, None]
        elif s.size != 1:  # one scale for the whole tensor (old int16 models)
            raise ConversionError(f"quantization scale of {t.source!r} has an unexpected shape")
        q = np.frombuffer(raw, _CT2_DTYPES[var.dtype]).reshape(r1 - r0, row_elems)
        return (q.astype(np.float32) / s).astype(target).tobytes()
    if var.dtype == _CT2_BF16:
        wide = np.frombuffer(raw, "<u2").astype("<u4") << 16
        return wide.view("<f4").astype(target).tobytes()
    if var.dtype not in (_CT2_F16, _CT2_F32):
        raise ConversionError(f"variable {t.source!r} has unsupported dtype id {var.dtype}")
    source = _CT2_DTYPES[var.dtype]
    if source == target:
        return raw
    # f16 -> f32 widening is exact; f32 -> f16 only happens for float32 CT2 models.
    return np.frombuffer(raw, source).astype(target).tobytes()


def _quantized_chunks(values: np.ndarray, qtype: QuantType, name: str) -> Iterator[bytes]:
    """A tensor's f16 (or f32) weights, row-major, as ``qtype`` blocks, a slice at a time.

    Each slice is decoded again and compared with its source (``decodes_within_bound``):
    a layout or rounding bug stops the conversion before the file is written.
    """
    for start in range(0, values.size, _QUANT_CHUNK):
        x = values[start : start + _QUANT_CHUNK].astype(np.float32)
        try:
            blocks = quantize_blocks(x, qtype)
        except ValueError as exc:
            raise ConversionError(f"cannot quantize {name}: {exc}") from None
        if not decodes_within_bound(x, blocks, qtype):
            raise ConversionError(f"self-check: {qtype.name} blocks of {name} do not decode to their weights")
        yield blocks.tobytes()


def _tensor_chunks(model: _Ct2Model, t: _Tensor) -> Iterator[bytes]:
    qtype = _QUANT_BY_GGML_TYPE.get(t.ggml_type)
    if qtype is None:
        yield _tensor_data(model, t, t.ggml_type)
    else:  # quantized from the float16 values, as the quantize tool does from the f16 file
        yield from _quantized_chunks(np.frombuffer(_tensor_data(model, t, _GGML_F16), "<f2"), qtype, t.name)


# ----------------------------------------------------------- mel filters, vocabulary


def slaney_mel_filters(n_mels: int, sample_rate: int = _SAMPLE_RATE, n_fft: int = _N_FFT) -> np.ndarray:
    """librosa.filters.mel(sr, n_fft, n_mels) with its defaults (Slaney scale and area
    norm, fmin 0, fmax sr/2) as float32 [n_mels, 1 + n_fft // 2]: Whisper's filterbank."""
    f_sp = 200.0 / 3  # linear part: 3 mels per 200 Hz up to 1 kHz, then logarithmic
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0

    def hz_to_mel(f: float) -> float:
        return min_log_mel + np.log(f / min_log_hz) / logstep if f >= min_log_hz else f / f_sp

    def mel_to_hz(m: np.ndarray) -> np.ndarray:
        hz = f_sp * m
        log_part = m >= min_log_mel
        hz[log_part] = min_log_hz * np.exp(logstep * (m[log_part] - min_log_mel))
        return hz

    fft_freqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sample_rate)
    mel_f = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(sample_rate / 2.0), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fft_freqs)
    weights = np.zeros((n_mels, fft_freqs.size), dtype=np.float32)
    for i in range(n_mels):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0, np.minimum(lower, upper))
    enorm = 2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels])
    weights *= enorm[:, np.newaxis]  # float64 product stored back as float32, as librosa does
    # Bin 0 of filter 0 comes out as -0.0; OpenAI's mel_filters.npz (copied into official
    # ggml files) has +0.0. With this the filters match it bit for bit.
    weights[weights == 0] = 0.0
    return weights


def _gpt2_byte_decoder() -> dict[str, int]:
    """Inverse of GPT-2's bytes_to_unicode(): printable bytes map to themselves, the
    other 68 bytes to U+0100 onwards, in byte order."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table = {chr(b): b for b in printable}
    extra = 0
    for b in range(256):
        if b not in printable:
            table[chr(256 + extra)] = b
            extra += 1
    return table


def _read_vocabulary(path: Path) -> list[str]:
    """Tokens by id from vocabulary.txt (one per line) or vocabulary.json (a list)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConversionError(f"cannot read vocabulary {path}: {exc.strerror}") from exc
    try:
        text = raw.decode("utf-8")
        if path.suffix == ".json":
            tokens = json.loads(text)
            if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
                raise ConversionError(f"vocabulary {path} is not a JSON list of strings")
            return tokens
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConversionError(f"vocabulary {path} is not valid UTF-8 text/JSON") from exc
    # Split on "\n" only: some tokens are empty lines, and no token contains "\n".
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def _vocabulary_bytes(tokens: list[str], hp: HParams, path: Path) -> list[bytes]:
    if len(tokens) != hp.n_vocab:
        raise ConversionError(f"vocabulary {path.name} has {len(tokens)} tokens but the model has {hp.n_vocab}")
    try:
        eot = tokens.index(_EOT)
    except ValueError:
        raise ConversionError(f"vocabulary {path.name} has no {_EOT} token") from None
    if eot != hp.n_base_tokens:
        raise ConversionError(f"vocabulary {path.name} has {_EOT} at id {eot}, whisper.cpp expects {hp.n_base_tokens}")
    decoder = _gpt2_byte_decoder()
    try:
        return [bytes(decoder[c] for c in token) for token in tokens[:eot]]
    except KeyError as exc:
        raise ConversionError(f"vocabulary {path.name} has a non-GPT-2 character {exc.args[0]!r}") from None


def _check_config(config: Path, hp: HParams) -> None:
    """Cross-check faster-whisper's config.json against the weights (inputs from one model)."""
    try:
        data = json.loads(config.read_bytes())
    except OSError as exc:
        raise ConversionError(f"cannot read config {config}: {exc.strerror}") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConversionError(f"config {config} is not valid JSON") from exc
    if not isinstance(data, dict):
        raise ConversionError(f"config {config} is not a JSON object")
    begin = data.get("suppress_ids_begin")
    # [220 (" "), <|endoftext|>] in faster-whisper conversions.
    if isinstance(begin, list) and begin and begin[-1] != hp.n_base_tokens:
        raise ConversionError(
            f"config {config.name} puts {_EOT} at id {begin[-1]}, the weights imply {hp.n_base_tokens}"
        )
    lang_ids = data.get("lang_ids")
    n_langs = hp.n_vocab - 51765 - 1  # whisper.cpp's language count for multilingual models
    if hp.multilingual and isinstance(lang_ids, list) and len(lang_ids) != n_langs:
        raise ConversionError(f"config {config.name} lists {len(lang_ids)} languages, the weights imply {n_langs}")


# -------------------------------------------------------------------------- output


def _tensor_header(t: _Tensor) -> bytes:
    name = t.name.encode("utf-8")
    dims = tuple(reversed(t.shape))  # ggml: innermost dimension first
    return struct.pack(f"<iii{len(dims)}i", len(dims), len(name), t.ggml_type, *dims) + name


def _ggml_chunks(
    model: _Ct2Model, hp: HParams, vocab: list[bytes], plan: list[_Tensor], ftype: int
) -> Iterator[bytes]:
    yield struct.pack("<i", _GGML_MAGIC)
    yield struct.pack("<10i", *hp.values())
    yield struct.pack("<i", ftype)
    filters = slaney_mel_filters(hp.n_mels)
    yield struct.pack("<ii", *filters.shape)
    yield filters.astype("<f4").tobytes()
    yield struct.pack("<i", len(vocab))
    yield b"".join(struct.pack("<i", len(tok)) + tok for tok in vocab)
    for t in plan:
        yield _tensor_header(t)
        yield from _tensor_chunks(model, t)


def _self_check(path: Path, hp: HParams, ftype: int, n_tokens: int, plan: list[_Entry]) -> None:
    """Re-read the written file's structure as whisper.cpp's loader does: same header,
    every expected tensor (name, ggml dims, type) with its data, nothing missing, nothing
    left over."""
    with open(path, "rb") as fh:

        def ints(n: int) -> tuple[int, ...]:
            data = fh.read(4 * n)
            if len(data) != 4 * n:
                raise ConversionError(f"self-check: {path.name} is truncated")
            return struct.unpack(f"<{n}i", data)

        if ints(1)[0] != _GGML_MAGIC or ints(10) != hp.values() or ints(1)[0] != ftype:
            raise ConversionError(f"self-check: bad ggml header in {path.name}")
        n_mel, n_bins = ints(2)
        fh.seek(4 * n_mel * n_bins, os.SEEK_CUR)
        if ints(1)[0] != n_tokens:
            raise ConversionError(f"self-check: wrong token count in {path.name}")
        for _ in range(n_tokens):
            fh.seek(ints(1)[0], os.SEEK_CUR)
        for expected in plan:
            n_dims, name_len, ggml_type = ints(3)
            dims = ints(n_dims)
            name = fh.read(name_len).decode("utf-8", "replace")
            if (name, dims, ggml_type) != expected:
                raise ConversionError(f"self-check: unexpected tensor {name!r} in {path.name}")
            fh.seek(tensor_nbytes(ggml_type, int(np.prod(dims, dtype=np.int64))), os.SEEK_CUR)
        if fh.tell() != os.fstat(fh.fileno()).st_size:
            raise ConversionError(f"self-check: {path.name} has trailing or missing data")


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_atomic(out: Path, chunks: Iterator[bytes], check: Callable[[Path], None]) -> None:
    """Write ``chunks`` to a temporary file beside ``out``, check it, rename it into place."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "xb") as fh:
            for chunk in chunks:
                fh.write(chunk)
            fh.flush()
            os.fsync(fh.fileno())
        check(tmp)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(out.parent)


def _quant_type(quantize: str | None) -> QuantType | None:
    if quantize is None:
        return None
    if quantize not in QUANT_TYPES:
        raise ConversionError(f"unknown quantization {quantize!r} (one of {', '.join(QUANT_TYPES)})")
    return QUANT_TYPES[quantize]


def convert_ct2_to_ggml(
    model_parts: list[Path], vocabulary: Path, out: Path, config: Path | None = None, quantize: str | None = None
) -> None:
    """Convert a CTranslate2 Whisper model (``model.bin``, possibly split into parts
    that are read as one concatenated stream) to a whisper.cpp ggml file at ``out``:
    float16, or with ``quantize`` ("q8_0", "q5_1") quantized as whisper.cpp's quantize
    tool would quantize that float16 file.

    Raises ConversionError for unreadable, malformed, truncated or inconsistent
    inputs; OSError if ``out`` cannot be written. ``out`` is replaced atomically and
    is byte-identical for identical inputs.
    """
    if not model_parts:
        raise ConversionError("no CTranslate2 model file given")
    quant = _quant_type(quantize)
    out = Path(out)
    with _PartsReader([Path(p) for p in model_parts]) as reader:
        model = _read_ct2_index(reader)
        hp = _hparams(model)
        plan = _plan(hp, quant)
        missing = [s for s in dict.fromkeys(t.source for t in plan) if model.find(s) is None]
        if missing:
            raise ConversionError(f"model data lacks {len(missing)} tensors, e.g. {missing[0]!r}")
        vocab = _vocabulary_bytes(_read_vocabulary(Path(vocabulary)), hp, Path(vocabulary))
        if config is not None:
            _check_config(Path(config), hp)
        ftype = quant.file_ftype if quant else _GGML_F16
        expected = [(t.name, tuple(reversed(t.shape)), t.ggml_type) for t in plan]
        _write_atomic(
            out,
            _ggml_chunks(model, hp, vocab, plan, ftype),
            lambda tmp: _self_check(tmp, hp, ftype, len(vocab), expected),
        )


class _GgmlSource:
    """Sequential reader of a whisper.cpp ggml file (for quantize_ggml)."""

    def __init__(self, fh: BinaryIO, path: Path) -> None:
        self.fh, self.path = fh, path

    def take(self, n: int) -> bytes:
        data = self.fh.read(n)
        if len(data) != n:
            raise ConversionError(f"{self.path.name} is truncated (not a complete ggml whisper file)")
        return data

    def ints(self, n: int) -> tuple[int, ...]:
        return struct.unpack(f"<{n}i", self.take(4 * n))


def _requantized_chunks(
    src: _GgmlSource, quant: QuantType, expected: list[_Entry], counts: dict[str, object]
) -> Iterator[bytes]:
    """An f16/f32 ggml whisper file, chunk by chunk, as whisper.cpp's quantize tool writes it;
    ``expected`` and ``counts`` collect what the self-check needs."""
    if src.ints(1)[0] != _GGML_MAGIC:
        raise ConversionError(f"{src.path.name} is not a whisper.cpp ggml model file")
    values = src.ints(10)
    hp = HParams(*values)
    ftype = src.ints(1)[0]
    if ftype % GGML_QNT_VERSION_FACTOR not in (_GGML_F32, _GGML_F16):
        raise ConversionError(f"{src.path.name} is already quantized (ftype {ftype}); quantize its f16 file")
    counts["hp"] = hp
    yield struct.pack("<i11i", _GGML_MAGIC, *values, quant.file_ftype)
    n_mel, n_fft = src.ints(2)
    yield struct.pack("<ii", n_mel, n_fft) + src.take(4 * n_mel * n_fft)
    n_tokens = src.ints(1)[0]
    counts["tokens"] = n_tokens
    yield struct.pack("<i", n_tokens)
    for _ in range(n_tokens):
        (n,) = src.ints(1)
        yield struct.pack("<i", n) + src.take(n)
    while head := src.fh.read(12):
        if len(head) != 12:
            raise ConversionError(f"{src.path.name} is truncated inside a tensor header")
        n_dims, name_len, ggml_type = struct.unpack("<3i", head)
        if not 1 <= n_dims <= 4 or not 0 < name_len < 1024:
            raise ConversionError(f"{src.path.name} has a malformed tensor header")
        dims = src.ints(n_dims)
        raw_name = src.take(name_len)
        name = raw_name.decode("utf-8", "replace")
        if ggml_type not in _GGML_DTYPES:
            raise ConversionError(f"tensor {name!r} of {src.path.name} has type {ggml_type}, expected f32 or f16")
        data = src.take(tensor_nbytes(ggml_type, int(np.prod(dims, dtype=np.int64))))
        if _quantized(name, n_dims):
            if dims[0] % _QK:
                raise ConversionError(f"cannot quantize {name}: rows of {dims[0]} are not a multiple of {_QK}")
            out_type = quant.ggml_type
        else:
            out_type = ggml_type
        expected.append((name, dims, out_type))
        yield struct.pack(f"<iii{n_dims}i", n_dims, name_len, out_type, *dims) + raw_name
        if out_type == ggml_type:
            yield data
        else:
            yield from _quantized_chunks(np.frombuffer(data, _GGML_DTYPES[ggml_type]), quant, name)


def quantize_ggml(src: Path, out: Path, quantize: str) -> None:
    """Quantize a float16 (or float32) whisper.cpp ggml file to ``quantize`` ("q8_0",
    "q5_1") as whisper.cpp's quantize tool does: same header but the ftype, same tensor
    order, the same tensors quantized. Raises ConversionError for a malformed or already
    quantized input; ``out`` is replaced atomically."""
    quant = _quant_type(quantize)
    assert quant is not None
    src, out = Path(src), Path(out)
    expected: list[_Entry] = []
    counts: dict[str, object] = {}

    def check(tmp: Path) -> None:
        hp, n_tokens = counts["hp"], counts["tokens"]
        assert isinstance(hp, HParams) and isinstance(n_tokens, int)
        _self_check(tmp, hp, quant.file_ftype, n_tokens, expected)

    try:
        fh = open(src, "rb")  # noqa: SIM115 - closed below, after the last chunk is read
    except OSError as exc:
        raise ConversionError(f"cannot open model file {src}: {exc.strerror}") from exc
    with fh:
        _write_atomic(out, _requantized_chunks(_GgmlSource(fh, src), quant, expected, counts), check)


# ----------------------------------------------------------------------------- CLI


def _is_ggml(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == struct.pack("<i", _GGML_MAGIC)
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m whispdiar.asr.convert",
        description="Convert a CTranslate2 (faster-whisper) Whisper model.bin to a whisper.cpp ggml file, "
        "optionally quantized; or quantize a float16 ggml file as whisper.cpp's quantize tool does.",
    )
    parser.add_argument(
        "parts",
        nargs="+",
        type=Path,
        metavar="MODEL_PART",
        help="model.bin, or its parts in order (read as one file); or one float16 ggml file to quantize",
    )
    parser.add_argument("--vocabulary", type=Path, help="vocabulary.txt or vocabulary.json (CTranslate2 input)")
    parser.add_argument("--config", type=Path, help="config.json to cross-check (optional)")
    parser.add_argument("--quantize", choices=sorted(QUANT_TYPES), help="write q8_0 or q5_1 weights (default f16)")
    parser.add_argument("--out", required=True, type=Path, help="ggml file to write")
    args = parser.parse_args(argv)
    ggml_input = len(args.parts) == 1 and _is_ggml(args.parts[0])
    if ggml_input and not args.quantize:
        parser.error("a ggml input needs --quantize")
    if not ggml_input and args.vocabulary is None:
        parser.error("a CTranslate2 input needs --vocabulary")
    try:
        if ggml_input:
            quantize_ggml(args.parts[0], args.out, args.quantize)
        else:
            convert_ct2_to_ggml(args.parts, args.vocabulary, args.out, args.config, args.quantize)
    except ConversionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        print(f"error: cannot write {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
