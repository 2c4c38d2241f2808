"""The CTranslate2 -> ggml converter's quantization (q8_0, q5_1) and ggml's block formats.

``quantize_blocks`` is checked against a scalar port of ggml's reference quantizers
(written here from ggml-quants.c, fp16 rounding from ggml-impl.h), against the C code
itself where the whisper.cpp build's libggml-base is found, and end to end: a synthetic
CTranslate2 model converts to the same bytes directly or through its f16 file, and the
installed tiny.en quantized still transcribes jfk.wav.
"""

from __future__ import annotations

import ctypes
import re
import struct
from pathlib import Path

import numpy as np
import pytest

from whispdiar.asr.convert import ConversionError, _plan, convert_ct2_to_ggml, quantize_ggml
from whispdiar.asr.ggml import (
    Q5_1,
    Q8_0,
    QUANT_TYPES,
    HParams,
    QuantType,
    dequantize_blocks,
    quantize_blocks,
    read_header,
)

JFK_WORDS = "and so my fellow americans ask not what your country can do for you ask what you can do for your country"


# --------------------------------------------------------- scalar reference (from the C code)


def _bits(f: np.float32) -> int:
    return int(np.float32(f).view(np.uint32))


def _from_bits(u: int) -> np.float32:
    return np.uint32(u & 0xFFFFFFFF).view(np.float32)


def _fp32_to_fp16(f: np.float32) -> int:
    """ggml_compute_fp32_to_fp16 (ggml-impl.h), bit manipulation for bit manipulation."""
    f = np.float32(f)
    with np.errstate(over="ignore"):
        base = np.float32(np.float32(abs(f) * np.float32(2.0**112)) * np.float32(2.0**-110))
    w = _bits(f)
    shl1_w = (w + w) & 0xFFFFFFFF
    sign = w & 0x80000000
    bias = shl1_w & 0xFF000000
    bias = max(bias, 0x71000000)
    base = np.float32(_from_bits((bias >> 1) + 0x07800000) + base)
    bits = _bits(base)
    exp_bits = (bits >> 13) & 0x00007C00
    mantissa_bits = bits & 0x00000FFF
    nonsign = exp_bits + mantissa_bits
    return (sign >> 16) | (0x7E00 if shl1_w > 0xFF000000 else nonsign)


def _roundf(v: np.float32) -> int:
    """C roundf: halves away from zero (Python's round() goes to even)."""
    a = abs(float(v))  # exact
    r = int(a)
    if a - r >= 0.5:
        r += 1
    return -r if v < 0 else r


def _ref_q8_0(x: np.ndarray) -> bytes:
    """quantize_row_q8_0_ref."""
    out = b""
    for blk in x.astype(np.float32).reshape(-1, 32):
        amax = np.float32(0)
        for v in blk:
            amax = max(amax, np.float32(abs(v)))
        d = np.float32(amax / np.float32(127))
        inv = np.float32(np.float32(1) / d) if d else np.float32(0)
        qs = [_roundf(np.float32(v * inv)) for v in blk]
        out += struct.pack("<H32b", _fp32_to_fp16(d), *qs)
    return out


def _ref_q5_1(x: np.ndarray) -> bytes:
    """quantize_row_q5_1_ref."""
    out = b""
    for blk in x.astype(np.float32).reshape(-1, 32):
        lo, hi = np.float32(np.finfo(np.float32).max), np.float32(-np.finfo(np.float32).max)
        for v in blk:
            lo, hi = min(lo, v), max(hi, v)
        d = np.float32(np.float32(hi - lo) / np.float32(31))
        inv = np.float32(np.float32(1) / d) if d else np.float32(0)
        qs, qh = [], 0
        for j in range(16):
            x0 = np.float32(np.float32(blk[j] - lo) * inv)
            x1 = np.float32(np.float32(blk[j + 16] - lo) * inv)
            xi0, xi1 = int(np.float32(x0 + np.float32(0.5))), int(np.float32(x1 + np.float32(0.5)))
            qs.append((xi0 & 0x0F) | ((xi1 & 0x0F) << 4))
            qh |= ((xi0 & 0x10) >> 4) << j
            qh |= ((xi1 & 0x10) >> 4) << (j + 16)
        out += struct.pack("<HHI16B", _fp32_to_fp16(d), _fp32_to_fp16(lo), qh, *qs)
    return out


def _ref_dequantize(raw: bytes, qtype: QuantType) -> np.ndarray:
    """dequantize_row_q8_0 / dequantize_row_q5_1."""
    out: list[np.float32] = []
    size = qtype.block.itemsize
    for k in range(0, len(raw), size):
        blk = raw[k : k + size]
        if qtype is Q8_0:
            d = np.frombuffer(blk[:2], "<f2")[0].astype(np.float32)
            out += [np.float32(q * d) for q in struct.unpack("<32b", blk[2:])]
            continue
        d, m = np.frombuffer(blk[:4], "<f2").astype(np.float32)
        (qh,) = struct.unpack("<I", blk[4:8])
        qs = blk[8:]
        low = [np.float32(((qs[j] & 0x0F) | (((qh >> j) << 4) & 0x10)) * d + m) for j in range(16)]
        high = [np.float32(((qs[j] >> 4) | ((qh >> (j + 12)) & 0x10)) * d + m) for j in range(16)]
        out += low + high
    return np.array(out, np.float32)


def _blocks() -> np.ndarray:
    """Weights that exercise the corner cases: f16-grid values like real weights, exact
    halves (roundf vs round-to-even), all-zero and constant blocks, one-sided blocks,
    subnormal fp16 scales and minima, the largest f16 magnitudes."""
    rng = np.random.default_rng(27)
    parts = [
        (rng.standard_normal(32 * 48) * 0.05).astype(np.float16),
        rng.integers(-254, 255, 32 * 8) / 2,  # q8_0 codes land on x.5 when amax = 127
        np.zeros(32),
        np.full(32, 0.3),
        np.abs(rng.standard_normal(32 * 4)) + 1.0,
        -np.abs(rng.standard_normal(32 * 4)) - 1.0,
        rng.standard_normal(32 * 4) * 1e-6,  # d below fp16's normal range
        rng.standard_normal(32 * 2) * 1e4,
        np.tile(np.r_[np.zeros(31), 1.0], 2),
    ]
    return np.concatenate([np.asarray(p, np.float32) for p in parts])


# ------------------------------------------------------------------------- block codecs


@pytest.mark.parametrize("qtype", [Q8_0, Q5_1], ids=lambda q: q.name)
def test_quantize_blocks_matches_the_scalar_reference(qtype: QuantType) -> None:
    x = _blocks()
    ref = {"q8_0": _ref_q8_0, "q5_1": _ref_q5_1}[qtype.name](x)
    got = quantize_blocks(x, qtype)
    assert got.dtype.itemsize == {"q8_0": 34, "q5_1": 24}[qtype.name]  # ggml-common.h static_asserts
    assert got.tobytes() == ref
    # Dequantized as ggml does, and within half a step of the input, plus the scale's (and
    # minimum's) fp16 rounding: relative 2^-11, absolute 2^-25 below fp16's normal range.
    back = dequantize_blocks(got.tobytes(), qtype)
    np.testing.assert_array_equal(back, _ref_dequantize(ref, qtype))
    b = x.reshape(-1, 32).astype(np.float64)
    if qtype is Q8_0:
        step = np.abs(b).max(1) / 127
        bound = step / 2 + 127 * (step * 2.0**-11 + 2.0**-25)
    else:
        step = np.ptp(b, 1) / 31
        bound = step / 2 + 31 * (step * 2.0**-11 + 2.0**-25) + np.abs(b.min(1)) * 2.0**-11 + 2.0**-25
    err = np.abs(back - x).reshape(-1, 32).max(1)
    assert (err <= bound * 1.001).all()
    assert (err[:48] <= step[:48] * 0.57).all()  # realistic weights: rounding (+ 127 · 2^-11 of d) dominates


def test_quantize_blocks_refuses_partial_blocks_and_non_finite_weights() -> None:
    with pytest.raises(ValueError, match="blocks of 32"):
        quantize_blocks(np.zeros(48, np.float32), Q8_0)
    with pytest.raises(ValueError, match="non-finite"):
        quantize_blocks(np.r_[np.zeros(31), np.inf].astype(np.float32), Q5_1)


def _libggml() -> ctypes.CDLL | None:
    try:
        import _pywhispercpp
    except ImportError:
        return None
    here = Path(_pywhispercpp.__file__).parent
    for pattern in ("libggml-base.so*", "pywhispercpp.libs/libggml-base*.so*", "libggml-base*.dylib"):
        for path in sorted(here.glob(pattern)):
            try:
                lib = ctypes.CDLL(str(path))
                fn = lib.ggml_quantize_chunk
            except (OSError, AttributeError):
                continue
            fn.restype = ctypes.c_size_t
            fn.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64,
                           ctypes.c_int64, ctypes.c_void_p]
            return lib
    return None


@pytest.mark.parametrize("qtype", [Q8_0, Q5_1], ids=lambda q: q.name)
def test_quantize_blocks_matches_ggml_itself(qtype: QuantType) -> None:
    lib = _libggml()
    if lib is None:
        pytest.skip("no libggml-base beside the whisper.cpp binding")
    rng = np.random.default_rng(5)
    x = np.concatenate([_blocks(), (rng.standard_normal(1 << 16) * 0.04).astype(np.float16).astype(np.float32)])
    x = np.ascontiguousarray(x[: x.size // 64 * 64].reshape(-1, 64))  # rows of 64 weights
    out = np.zeros(x.size // 32 * qtype.block.itemsize, np.uint8)
    n = lib.ggml_quantize_chunk(qtype.ggml_type, x.ctypes.data, out.ctypes.data, 0, x.shape[0], 64, None)
    assert n == out.size
    assert quantize_blocks(x, qtype).tobytes() == out.tobytes()


# ------------------------------------------------------------ a synthetic CT2 model


def _string(s: str) -> bytes:
    raw = s.encode() + b"\0"
    return struct.pack("<H", len(raw)) + raw


def _write_ct2(path: Path, hp: HParams, rng: np.random.Generator) -> None:
    """A CTranslate2 Whisper model.bin (binary version 6, float16) with random weights in
    every variable the converter reads; the fused q/k/v layers get a zero key bias."""
    out = [struct.pack("<I", 6), _string("WhisperSpec"), struct.pack("<I", 1)]
    sources = {t.source: t.source_shape for t in _plan(hp)}
    out.append(struct.pack("<I", len(sources)))
    for name, shape in sources.items():
        data = (rng.standard_normal(shape) * 0.05).astype("<f2")
        if name.endswith("/gamma"):
            data[:] = 1.0
        out += [_string(name), struct.pack(f"<B{len(shape)}I", len(shape), *shape)]
        out += [struct.pack("<BI", 4, data.nbytes), data.tobytes()]
    out.append(struct.pack("<I", 0))
    path.write_bytes(b"".join(out))


def _write_vocabulary(path: Path, n: int) -> None:
    """n tokens, <|endoftext|> at 50256 (English-only), every one a GPT-2 byte string."""
    tokens = [chr(0x21 + i % 94) + chr(0x21 + i // 94 % 94) * (i >= 94) for i in range(50256)] + ["<|endoftext|>"]
    tokens += [f"<|extra{i}|>".replace("|", "") for i in range(n - len(tokens))]
    path.write_text("\n".join(tokens) + "\n")


@pytest.fixture(scope="module")
def ct2(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, HParams]:
    d = tmp_path_factory.mktemp("ct2")
    hp = HParams(n_vocab=51864, n_audio_ctx=24, n_audio_state=64, n_audio_head=1, n_audio_layer=4,
                 n_text_ctx=16, n_text_state=64, n_text_head=1, n_text_layer=4, n_mels=80)
    _write_ct2(d / "model.bin", hp, np.random.default_rng(0))
    _write_vocabulary(d / "vocabulary.txt", hp.n_vocab)
    return d / "model.bin", d / "vocabulary.txt", hp


def _tensors(path: Path) -> dict[str, tuple[tuple[int, ...], int]]:
    """name -> (ggml dims, ggml type) of every tensor in a ggml whisper file."""
    from whispdiar.asr.ggml import tensor_nbytes

    raw = path.read_bytes()
    pos = 48
    n_mel, n_fft = struct.unpack_from("<ii", raw, pos)
    pos += 8 + 4 * n_mel * n_fft
    (n_tokens,) = struct.unpack_from("<i", raw, pos)
    pos += 4
    for _ in range(n_tokens):
        pos += 4 + struct.unpack_from("<i", raw, pos)[0]
    found = {}
    while pos < len(raw):
        n_dims, name_len, ggml_type = struct.unpack_from("<3i", raw, pos)
        dims = struct.unpack_from(f"<{n_dims}i", raw, pos + 12)
        pos += 12 + 4 * n_dims
        name = raw[pos : pos + name_len].decode()
        pos += name_len + tensor_nbytes(ggml_type, int(np.prod(dims)))
        found[name] = (dims, ggml_type)
    assert pos == len(raw)
    return found


@pytest.mark.parametrize("quant", ["q8_0", "q5_1"])
def test_quantized_conversion_is_the_quantize_tools_file(ct2: tuple[Path, Path, HParams], tmp_path: Path,
                                                         quant: str) -> None:
    model, vocab, hp = ct2
    qtype = QUANT_TYPES[quant]
    convert_ct2_to_ggml([model], vocab, tmp_path / "f16.bin")
    convert_ct2_to_ggml([model], vocab, tmp_path / "direct.bin", quantize=quant)
    quantize_ggml(tmp_path / "f16.bin", tmp_path / "via-f16.bin", quant)
    direct = (tmp_path / "direct.bin").read_bytes()
    assert direct == (tmp_path / "via-f16.bin").read_bytes()  # same bytes by either route
    assert sorted(p.name for p in tmp_path.iterdir()) == ["direct.bin", "f16.bin", "via-f16.bin"]  # no temp files

    header = read_header(tmp_path / "direct.bin")
    assert header.ftype == 2000 + qtype.ftype and header.weights == quant and header.label == f"tiny.en-{quant}"
    assert read_header(tmp_path / "f16.bin").label == "tiny.en"
    # Everything but the header's ftype and the tensor data is the f16 file's.
    f16 = (tmp_path / "f16.bin").read_bytes()
    assert direct[:44] == f16[:44] and direct[48:100_000] == f16[48:100_000]
    # The quantize tool's choice: every 2-D tensor but the conv biases and positional
    # embeddings; 3-D conv weights stay f16, 1-D tensors f32.
    before, after = _tensors(tmp_path / "f16.bin"), _tensors(tmp_path / "direct.bin")
    assert list(before) == list(after)
    skip = {"encoder.conv1.bias", "encoder.conv2.bias", "encoder.positional_embedding", "decoder.positional_embedding"}
    for name, (dims, ggml_type) in after.items():
        quantized = len(dims) == 2 and name not in skip
        assert (dims, ggml_type) == (before[name][0], qtype.ggml_type if quantized else before[name][1]), name
    assert after["decoder.token_embedding.weight"][1] == qtype.ggml_type
    assert after["encoder.conv1.weight"][1] == 1 and after["encoder.blocks.0.attn_ln.weight"][1] == 0


def test_quantize_refuses_a_quantized_or_foreign_file(ct2: tuple[Path, Path, HParams], tmp_path: Path) -> None:
    model, vocab, _ = ct2
    convert_ct2_to_ggml([model], vocab, tmp_path / "q.bin", quantize="q5_1")
    with pytest.raises(ConversionError, match="already quantized"):
        quantize_ggml(tmp_path / "q.bin", tmp_path / "qq.bin", "q8_0")
    with pytest.raises(ConversionError, match="not a whisper.cpp ggml"):
        quantize_ggml(model, tmp_path / "qq.bin", "q8_0")
    with pytest.raises(ConversionError, match="unknown quantization"):
        convert_ct2_to_ggml([model], vocab, tmp_path / "qq.bin", quantize="q4_0")
    cut = tmp_path / "cut.bin"
    convert_ct2_to_ggml([model], vocab, tmp_path / "f16.bin")
    cut.write_bytes((tmp_path / "f16.bin").read_bytes()[:-1000])
    with pytest.raises(ConversionError, match="truncated"):
        quantize_ggml(cut, tmp_path / "qq.bin", "q8_0")
    assert not (tmp_path / "qq.bin").exists()


# ------------------------------------------------------------------- a real model


def _amx_build() -> bool:
    import _pywhispercpp as pw

    return "AMX_INT8 = 1" in pw.whisper_print_system_info()


@pytest.mark.slow
@pytest.mark.parametrize("quant", ["q5_1", "q8_0"])
def test_quantized_tiny_en_transcribes_jfk(whisper_tiny_en_path: Path, data_dir: Path, tmp_path: Path,
                                           quant: str) -> None:
    out = tmp_path / f"ggml-tiny.en-{quant}.bin"
    quantize_ggml(whisper_tiny_en_path, out, quant)
    assert out.stat().st_size < 0.6 * whisper_tiny_en_path.stat().st_size
    if quant == "q8_0" and _amx_build():
        # ggml's AMX kernels crash on q8_0 (SIGSEGV): whispdiar refuses the pair instead.
        from whispdiar.asr.whisper import Transcriber
        from whispdiar.errors import ModelError

        with pytest.raises(ModelError, match="AMX"):
            Transcriber(out)
        return
    from pywhispercpp.model import Model

    model = Model(str(out), n_threads=2, print_progress=False, print_realtime=False, redirect_whispercpp_logs_to=None)
    text = " ".join(s.text for s in model.transcribe(str(data_dir / "jfk.wav")))
    assert " ".join(re.sub(r"[^a-z ]", "", text.lower()).split()) == JFK_WORDS
