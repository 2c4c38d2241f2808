"""The loader: every format and rate in, 16 kHz mono float32 out; every bad file a typed error.

All audio is generated into tmp_path, so nothing here depends on files outside the repo.
"""

from __future__ import annotations

import contextlib
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from helpers import streamed_peak

from whispdiar.audio import read as audio
from whispdiar.errors import (
    CorruptAudio,
    EmptyInput,
    InputIsDirectory,
    InputNotFound,
    NoAudio,
    NonFiniteAudio,
    NotAudio,
    UsageError,
    WhispdiarError,
)

SR = audio.SAMPLE_RATE


def tone(freq: float, seconds: float, rate: int, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_hz(x: np.ndarray, rate: int = SR) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[np.argmax(spec)])


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


# --------------------------------------------------------------------------- formats
FORMATS = [
    ("wav", "WAV", "PCM_16", 16000),
    ("wav", "WAV", "PCM_24", 16000),
    ("wav", "WAV", "PCM_32", 16000),
    ("wav", "WAV", "FLOAT", 16000),
    ("wav", "WAV", "DOUBLE", 16000),
    ("wav", "WAV", "PCM_U8", 16000),
    ("flac", "FLAC", "PCM_16", 44100),
    ("flac", "FLAC", "PCM_24", 48000),
    ("ogg", "OGG", "VORBIS", 44100),
    ("opus", "OGG", "OPUS", 48000),
    ("mp3", "MP3", "MPEG_LAYER_III", 44100),
]


@pytest.mark.parametrize(("ext", "fmt", "subtype", "rate"), FORMATS, ids=[f"{f[1]}-{f[2]}" for f in FORMATS])
def test_formats_decode_to_16k_mono(tmp_path: Path, ext: str, fmt: str, subtype: str, rate: int) -> None:
    p = tmp_path / f"a.{ext}"
    sf.write(p, tone(440, 2.0, rate), rate, format=fmt, subtype=subtype)
    x = audio.load(p)
    assert x.dtype == np.float32 and x.ndim == 1
    lossy = fmt in ("OGG", "MP3")
    # Lossy codecs add encoder delay/padding; lossless ones are exact to a few samples.
    assert abs(len(x) - 2 * SR) <= (0.1 * SR if lossy else 2)
    assert abs(peak_hz(x) - 440) < 5
    assert rms(x) == pytest.approx(0.5 / np.sqrt(2), rel=0.1 if lossy else 0.02)
    assert audio.info(p).channels == 1


@pytest.mark.parametrize("rate", [8000, 11025, 16000, 22050, 32000, 44100, 48000, 96000])
def test_any_rate_resampled_properly(tmp_path: Path, rate: int) -> None:
    p = tmp_path / "r.wav"
    sf.write(p, tone(1000, 3.0, rate), rate, subtype="FLOAT")
    x = audio.load(p)
    assert abs(len(x) - 3 * SR) <= 1
    assert abs(peak_hz(x) - 1000) < 2
    # A proper resampler keeps the level (no droop at 1 kHz) ...
    assert rms(x[SR // 10 : -SR // 10]) == pytest.approx(0.5 / np.sqrt(2), rel=0.01)
    info = audio.info(p)
    assert info.sample_rate == rate and info.duration == pytest.approx(3.0)


@pytest.mark.parametrize("rate", [44100, 96000])
def test_resampler_rejects_content_above_new_nyquist(tmp_path: Path, rate: int) -> None:
    # ... and removes what 16 kHz cannot hold instead of aliasing it down (naive decimation would).
    p = tmp_path / "hi.wav"
    sf.write(p, tone(12000, 2.0, rate), rate, subtype="FLOAT")
    assert rms(audio.load(p)[SR // 10 : -SR // 10]) < 0.005


def test_blocks_concatenate_to_the_whole_signal(tmp_path: Path) -> None:
    p = tmp_path / "b.wav"
    rng = np.random.default_rng(0)
    sf.write(p, (0.1 * rng.standard_normal(44100 * 5)).astype(np.float32), 44100, subtype="FLOAT")
    whole = audio.load(p)
    small = list(audio.stream(p, block_seconds=0.37))
    assert len(small) > 10
    np.testing.assert_allclose(np.concatenate(small), whole, atol=1e-5)


def test_start_end(tmp_path: Path) -> None:
    p = tmp_path / "se.flac"
    sf.write(p, tone(300, 4.0, 22050), 22050)
    x = audio.load(p, start=1.0, end=2.5)
    assert abs(len(x) - int(1.5 * SR)) <= 1
    with pytest.raises(NoAudio):
        audio.load(p, start=5.0)


def test_streaming_wav_header_with_unknown_size_is_accepted(tmp_path: Path) -> None:
    # Recorders and pipes write 0xFFFFFFFF when the size is not known yet: not truncation.
    p = tmp_path / "s.wav"
    sf.write(p, tone(440, 1.0, SR), SR, subtype="PCM_16")
    b = bytearray(p.read_bytes())
    i = b.find(b"data")
    b[i + 4 : i + 8] = struct.pack("<I", 0xFFFFFFFF)
    p.write_bytes(bytes(b))
    assert len(audio.load(p)) == SR


def test_silence_is_not_an_error(tmp_path: Path) -> None:
    p = tmp_path / "quiet.wav"
    sf.write(p, np.zeros(SR * 2, np.int16), SR)
    x = audio.load(p)
    assert len(x) == 2 * SR and not x.any()


# --------------------------------------------------------------------------- channels
def test_multichannel_mix_and_pick(tmp_path: Path) -> None:
    p = tmp_path / "st.wav"
    left = tone(440, 1.0, 48000)
    sf.write(p, np.stack([left, np.zeros_like(left)], axis=1), 48000, subtype="FLOAT")
    mix, ch0, ch1 = audio.load(p), audio.load(p, channel=0), audio.load(p, channel=1)
    assert rms(mix) == pytest.approx(rms(ch0) / 2, rel=0.01)  # documented: plain average of channels
    assert rms(ch1) < 1e-6
    with pytest.raises(UsageError, match="no channel 2"):
        audio.load(p, channel=2)
    assert audio.info(p).channels == 2


def test_channel_on_mono_file(tmp_path: Path) -> None:
    p = tmp_path / "m.wav"
    sf.write(p, tone(440, 1.0, SR), SR)
    assert len(audio.load(p, channel=0)) == SR
    with pytest.raises(UsageError):
        audio.load(p, channel=1)


def test_many_channels_high_rate_blocks_are_capped(tmp_path: Path) -> None:
    p = tmp_path / "8ch.wav"
    x = np.tile(tone(500, 1.0, 96000)[:, None], (1, 8)) * 0.5
    sf.write(p, x, 96000, subtype="PCM_24")
    blocks = list(audio.stream(p, block_seconds=30))
    assert sum(len(b) for b in blocks) == SR
    assert abs(peak_hz(np.concatenate(blocks)) - 500) < 2


# --------------------------------------------------------------------------- bad input
def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputNotFound, match="no such file"):
        audio.info(tmp_path / "nope.wav")
    with pytest.raises(InputNotFound, match="no such file"):
        audio.check(tmp_path / "nope.m4a")


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(InputIsDirectory, match="is a directory"):
        audio.load(tmp_path)


def test_empty_file(tmp_path: Path) -> None:
    p = tmp_path / "empty.wav"
    p.touch()
    with pytest.raises(EmptyInput, match="empty"):
        audio.info(p)


def test_zero_length_audio(tmp_path: Path) -> None:
    p = tmp_path / "zero.wav"
    sf.write(p, np.zeros(0, np.float32), SR)
    assert p.stat().st_size > 0
    with pytest.raises(NoAudio, match="no audio samples"):
        audio.load(p)


def test_truncated_wav(tmp_path: Path) -> None:
    p = tmp_path / "cut.wav"
    sf.write(p, tone(440, 4.0, SR), SR, subtype="PCM_16")
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    with pytest.raises(CorruptAudio, match="truncated"):
        audio.info(p)


def test_truncated_wav_header(tmp_path: Path) -> None:
    p = tmp_path / "cut.wav"
    sf.write(p, tone(440, 1.0, SR), SR)
    p.write_bytes(p.read_bytes()[:30])
    with pytest.raises((CorruptAudio, NotAudio)):
        audio.load(p)


def test_truncated_flac(tmp_path: Path) -> None:
    p = tmp_path / "cut.flac"
    rng = np.random.default_rng(1)
    sf.write(p, (0.3 * rng.standard_normal(SR * 10)).astype(np.float32), SR, subtype="PCM_16")
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    with pytest.raises(CorruptAudio):
        audio.load(p)


def test_corrupt_flac_frames(tmp_path: Path) -> None:
    p = tmp_path / "bad.flac"
    rng = np.random.default_rng(2)
    sf.write(p, (0.3 * rng.standard_normal(SR * 10)).astype(np.float32), SR, subtype="PCM_16")
    b = bytearray(p.read_bytes())
    mid = len(b) // 2
    b[mid : mid + 4000] = rng.integers(0, 256, 4000, dtype=np.uint8).tobytes()
    p.write_bytes(bytes(b))
    with pytest.raises(CorruptAudio):
        audio.load(p)


def test_text_file_renamed_wav(tmp_path: Path) -> None:
    p = tmp_path / "notes.wav"
    p.write_text("Meeting notes: nothing to hear here.\n" * 20)
    with pytest.raises(NotAudio, match="not an audio file"):
        audio.info(p)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples(tmp_path: Path, bad: float) -> None:
    p = tmp_path / "nan.wav"
    x = tone(440, 2.0, SR)
    x[SR + 5] = bad
    sf.write(p, x, SR, subtype="FLOAT")
    with pytest.raises(NonFiniteAudio, match=r"NaN or infinite samples \(first at 1.00 s\)"):
        audio.load(p)


def test_implausible_sample_rate(tmp_path: Path) -> None:
    p = tmp_path / "rate.wav"
    sf.write(p, tone(440, 1.0, SR), SR)
    b = bytearray(p.read_bytes())
    i = b.find(b"fmt ")
    b[i + 12 : i + 16] = struct.pack("<I", 3)  # 3 Hz: would mean 5000x upsampling
    p.write_bytes(bytes(b))
    with pytest.raises(CorruptAudio, match="sample rate"):
        audio.info(p)


def test_fifo_is_refused_not_hung(tmp_path: Path) -> None:
    p = tmp_path / "pipe.wav"
    os.mkfifo(p)
    with pytest.raises(NotAudio, match="regular file"):
        audio.info(p)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads mode-000 files; the CLI test covers this via setpriv")
def test_permission_denied(tmp_path: Path) -> None:
    from whispdiar.errors import InputPermissionDenied

    p = tmp_path / "secret.wav"
    sf.write(p, tone(440, 1.0, SR), SR)
    p.chmod(0)
    with pytest.raises(InputPermissionDenied):
        audio.info(p)


def test_errors_are_one_line(tmp_path: Path) -> None:
    p = tmp_path / "x.flac"
    p.write_bytes(b"fLaC" + bytes(range(256)) * 4)
    with pytest.raises(WhispdiarError) as e:
        audio.load(p)
    assert "\n" not in str(e.value)


# --------------------------------------------------------------------------- non-libsndfile containers
# Real encoded files of every kind are in tests/test_decode.py; these are the header cases.
def test_damaged_mp4_header_is_corrupt_not_unknown(tmp_path: Path) -> None:
    p = tmp_path / "talk.m4a"  # an MP4 "ftyp" box and nothing else: known kind, unusable
    p.write_bytes(b"\x00\x00\x00\x20ftypM4A " + bytes(64))
    with pytest.raises(CorruptAudio, match="corrupt or truncated"):
        audio.check(p)
    anon = tmp_path / "whispdiar-stdin-xyz"  # stdin copies have no suffix: recognised by content
    anon.write_bytes(p.read_bytes())
    with pytest.raises(CorruptAudio):
        audio.info(anon)


# --------------------------------------------------------------------------- memory
def test_stream_memory_is_flat(tmp_path: Path) -> None:
    # 10 min at 44.1 kHz stereo (~200 MB as float32 if loaded whole); streaming must hold ~ one block.
    p = tmp_path / "long.wav"
    rate, seconds = 44100, 600
    with sf.SoundFile(p, "w", rate, 2, subtype="PCM_16") as f:
        block = (0.1 * np.random.default_rng(3).standard_normal((rate * 10, 2))).astype(np.float32)
        for _ in range(seconds // 10):
            f.write(block)
    total, peak = streamed_peak(p)
    assert abs(total - seconds * SR) <= 1
    assert peak < 40e6, f"streaming peak {peak / 1e6:.0f} MB"


def test_truncated_mp3_plays_what_is_there(tmp_path: Path) -> None:
    # MP3 lengths in headers are estimates, so a short read is not called truncation.
    p = tmp_path / "cut.mp3"
    sf.write(p, tone(440, 4.0, 44100), 44100, format="MP3")
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    x = audio.load(p)
    assert 1.5 * SR < len(x) < 2.5 * SR


def test_corrupt_mp3_prints_nothing_itself(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    # libmpg123 writes warnings straight to fd 2; the loader keeps them off the user's terminal.
    p = tmp_path / "bad.mp3"
    sf.write(p, tone(440, 3.0, 44100), 44100, format="MP3")
    b = bytearray(p.read_bytes())
    rng = np.random.default_rng(5)
    for i in rng.integers(200, len(b), 60):
        b[i] ^= 0xFF
    p.write_bytes(bytes(b))
    with contextlib.suppress(WhispdiarError):
        audio.load(p)
    assert capfd.readouterr().err == ""
