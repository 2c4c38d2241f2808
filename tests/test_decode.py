"""Recordings as people have them (m4a, mp4 video, webm, ogg, mp3, wma, amr), decoded in-process.

The files are encoded here with PyAV from one real recording: three LibriSpeech
utterances (reader 1998 F, 2033 M, 1998 F again; 19.7 s, tests/data) joined by 0.6 s
pauses. Fast tests check the decoded signal against that source; the slow ones run
the real pipeline (tiny.en + diarization) on each file and on the WAV, and compare
speakers and words. No ffmpeg binary is involved (there is none on the test machine).

Encoders come and go with PyAV's wheels (18.1.1 dropped opencore-amr: it decodes AMR-NB
but cannot write it), and what users need is the decoder. So each format is encoded
on its own, when a test first asks for it, and a missing encoder fails that format's
tests with a message saying so (never a skip: the decoder would go untested). A format
the wheels may not encode is decoded from a small real file in tests/data instead,
made once elsewhere (tests/data/README.md says how): AMR-NB, ``jfk-phone.amr``.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
from helpers import encode as pyav_encode
from helpers import streamed_peak, video_only

from whispdiar.audio import decode
from whispdiar.audio import read as audio
from whispdiar.errors import CorruptAudio, NoAudio, UnsupportedCodec, UsageError, WhispdiarError

SR = audio.SAMPLE_RATE
PIECES = ("ls-1998-15444-0001.flac", "ls-2033-164914-0003.flac", "ls-1998-15444-0006.flac")
CLI = [sys.executable, "-m", "whispdiar"]


@dataclass(frozen=True)
class Kind:
    name: str  # file name
    codec: str  # FFmpeg encoder
    rate: int  # encoded sample rate
    stereo: bool = False  # left = the recording, right = it at half level
    video: bool = False
    bit_rate: int | None = None
    # waveform correlation with the source (8 kHz MP3 keeps only the telephone band)
    min_corr: float = 0.97
    # Word error rate allowed against the WAV's transcript (tiny.en, ~48 words). Wideband
    # codecs at their usual rates are near-transparent: tiny.en still flips a word or two
    # on inaudible differences ("fruit"/"food", measured 0-6 %), so 10 % (4 words). Telephone
    # bandwidth (8 kHz: nothing above 4 kHz) costs tiny.en real accuracy (measured 12-17 %):
    # 30 %. A decoding fault is far outside both: an 8 kbit/s MP3 measured 56 %.
    max_wer: float = 0.10


KINDS = [
    Kind("aac.m4a", "aac", 44100),
    Kind("video.mp4", "aac", 48000, stereo=True, video=True),
    Kind("opus.webm", "libopus", 48000),
    Kind("opus.ogg", "libopus", 48000),
    Kind("mp3-8k.mp3", "libmp3lame", 8000, bit_rate=32000, min_corr=0.9, max_wer=0.30),
    Kind("wma-48k-stereo.wma", "wmav2", 48000, stereo=True, bit_rate=128000),
]
IDS = [k.name for k in KINDS]

# AMR-NB (phones' voice memos, MMS): encoded once with PyAV 14.2.0's opencore-amr, as
# PyAV 18.1.1's wheel cannot (tests/data/README.md). 4.8 s of jfk.wav, from 3.0 s ("ask not
# what your country can do for you"), 12.2 kbit/s, 8 kHz mono: 241 frames of 20 ms.
AMR = "jfk-phone.amr"
AMR_FROM, AMR_SECONDS = 3.0, 4.82
AMR_TEXT = "ask not what your country can do for you"

# Decoders for what users have (docs/cli.md): a wheel without one is a regression for them.
DECODERS = ("aac", "alac", "mp3float", "opus", "vorbis", "flac", "wmav2", "amrnb", "amrwb", "ac3",
            "pcm_mulaw", "pcm_alaw", "adpcm_ms", "adpcm_ima_wav", "gsm_ms")


def has_codec(name: str, mode: str) -> bool:
    try:
        av.codec.Codec(name, mode)
    except av.codec.codec.UnknownCodecError:
        return False
    return True


def need_encoder(codec: str, what: str) -> None:
    """Fail (not skip) the calling test when this PyAV cannot encode ``codec``."""
    if not has_codec(codec, "w"):
        pytest.fail(f"PyAV {av.__version__} has no {codec} encoder, so the test file {what} cannot be made: "
                    f"ship a small file of that format in tests/data instead (as {AMR} for AMR-NB, "
                    "tests/data/README.md) and decode that", pytrace=False)


def encode(path: Path, x: np.ndarray, rate_in: int, codec: str, *, video: bool = False, **kw) -> Path:  # noqa: ANN003
    """helpers.encode, after making sure this PyAV has the encoders it needs."""
    need_encoder(codec, path.name)
    if video:
        need_encoder("mpeg4", path.name)
    return pyav_encode(path, x, rate_in, codec, video=video, **kw)


@pytest.fixture(scope="session")
def source(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    gap = np.zeros(int(0.6 * SR), np.float32)
    parts = [sf.read(data_dir / name, dtype="float32")[0] for name in PIECES]
    x = np.concatenate([parts[0], gap, parts[1], gap, parts[2]])
    wav = tmp_path_factory.mktemp("source") / "source.wav"
    sf.write(wav, x, SR, subtype="PCM_16")
    return wav, audio.load(wav)


class Encoded:
    """The source encoded as each of KINDS, made when a test first asks for it.

    One at a time, so a format this PyAV cannot encode fails its own tests (need_encoder)
    and no other format's.
    """

    def __init__(self, x: np.ndarray, folder: Path) -> None:
        self._x, self._folder, self._made = x, folder, {}

    def __getitem__(self, name: str) -> Path:
        if name not in self._made:
            k = next(k for k in KINDS if k.name == name)
            x = np.stack([self._x, 0.5 * self._x], axis=1) if k.stereo else self._x
            self._made[name] = encode(self._folder / name, x, SR, k.codec, rate=k.rate, video=k.video,
                                      bit_rate=k.bit_rate)
        return self._made[name]


@pytest.fixture(scope="session")
def encoded(source: tuple[Path, np.ndarray], tmp_path_factory: pytest.TempPathFactory) -> Encoded:
    return Encoded(source[1], tmp_path_factory.mktemp("encoded"))


def aligned(x: np.ndarray, ref: np.ndarray, most: int = SR // 10) -> tuple[int, float]:
    """(lag in samples, correlation coefficient) of x against ref at the best lag within ``most``."""
    n = min(len(x), len(ref)) - 2 * most
    c = np.correlate(x[: n + 2 * most], ref[most : most + n], "valid")  # index i: lag i - most
    lag = int(np.argmax(c)) - most
    a, b = x[most + lag : most + lag + n], ref[most : most + n]
    return lag, float(np.dot(a, b) / np.sqrt(np.dot(a, a) * np.dot(b, b)))


# --------------------------------------------------------------------------- signal
@pytest.mark.parametrize("kind", KINDS, ids=IDS)
def test_decodes_to_the_source_signal(kind: Kind, encoded: Encoded, source: tuple[Path, np.ndarray]) -> None:
    p = encoded[kind.name]
    ref = source[1]
    info = audio.check(p)
    assert (info.sample_rate, info.channels) == (kind.rate, 2 if kind.stereo else 1)
    x = audio.load(p)
    assert x.dtype == np.float32 and x.ndim == 1
    src_seconds = len(ref) / SR
    # codec priming/padding: AAC 1024 samples, WMA one 2048-sample block; nothing more
    assert abs(info.duration - src_seconds) < 0.08, info.duration
    assert abs(len(x) / SR - src_seconds) < 0.08, len(x) / SR
    lag, corr = aligned(x, ref * (0.75 if kind.stereo else 1.0))  # stereo: mean of 1 and 0.5
    assert abs(lag) < 0.07 * SR  # AAC priming not trimmed by this muxer: +64 ms at most; WMA: -43 ms
    assert corr > kind.min_corr, corr  # misaligned or mis-mixed it would be < 0.1
    level = np.sqrt(np.mean(x**2)) / np.sqrt(np.mean((ref * (0.75 if kind.stereo else 1.0)) ** 2))
    assert 0.85 < level < 1.15, level


@pytest.mark.parametrize("name", [*IDS, AMR])
def test_spans_and_blocks_match_the_whole(name: str, encoded: Encoded, data_dir: Path) -> None:
    """A span read by seeking is that part of a full decode, to the sample.

    Bit-exact for most codecs; AAC's decoder state (its noise substitution) differs
    after a seek, measured 27-133 dB SNR. Placed one sample off it would be 8-15 dB.
    """
    p = data_dir / AMR if name == AMR else encoded[name]
    whole = audio.load(p)
    edge = SR // 20  # the resampler restarts at a span's edges
    for start in (0.3, 1.7, 3.1) if name == AMR else (0.7, 3.3, 12.1):
        span = audio.load(p, start=start, end=start + 1.5)
        assert len(span) == int(1.5 * SR)
        inner, at = span[edge:-edge], int(start * SR) + edge
        snr = {lag: 10 * np.log10(np.sum(inner**2) / np.sum((inner - whole[at + lag : at + lag + len(inner)]) ** 2))
               for lag in range(-20, 21)}
        assert max(snr, key=snr.__getitem__) == 0 and snr[0] > 25, (start, snr[0])
    blocks = list(audio.stream(p, block_seconds=1.3))
    assert len(blocks) >= int(len(whole) / SR / 1.3) >= 3
    np.testing.assert_allclose(np.concatenate(blocks), whole, atol=1e-5)


def test_amr_nb_file_decodes_to_its_source(data_dir: Path) -> None:
    p = data_dir / AMR
    assert p.read_bytes()[:6] == b"#!AMR\n"  # the AMR-NB storage format (RFC 4867), not AMR-WB
    avi = decode.probe(p)
    assert (avi.format, avi.codec) == ("amr", "amrnb")
    info = audio.check(p)
    assert (info.sample_rate, info.channels) == (8000, 1)
    # counted packet by packet; FFmpeg's own estimate from the bit rate is 4.98 s
    assert info.duration == pytest.approx(AMR_SECONDS, abs=1e-3)
    x = audio.load(p)
    assert x.dtype == np.float32 and x.ndim == 1
    assert len(x) == round(AMR_SECONDS * SR)  # resampled from 8 kHz to 16 kHz mono
    jfk = sf.read(data_dir / "jfk.wav", dtype="float32")[0]
    ref = jfk[round(AMR_FROM * SR) : round((AMR_FROM + AMR_SECONDS) * SR)]
    lag, corr = aligned(x, ref)
    assert abs(lag) < 0.01 * SR, lag  # the codec's delay: measured 5 ms
    assert corr > 0.8, corr  # measured 0.93 (12.2 kbit/s CELP; content above 4 kHz is gone)
    level = np.sqrt(np.mean(x**2)) / np.sqrt(np.mean(ref**2))
    assert 0.85 < level < 1.15, level  # measured 0.95
    # 8 kHz audio carries nothing above 4 kHz, and resampling to 16 kHz must not add any
    spec = np.abs(np.fft.rfft(x)) ** 2
    assert spec[np.fft.rfftfreq(len(x), 1 / SR) > 4100].sum() < 1e-3 * spec.sum()


def test_decoders_users_need_are_there() -> None:
    missing = [n for n in DECODERS if not has_codec(n, "r")]
    assert not missing, f"PyAV {av.__version__} has no decoder for {missing}"


def test_channel_pick_in_an_aac_track(tmp_path: Path) -> None:
    t = np.arange(3 * 48000) / 48000
    left, right = 0.4 * np.sin(2 * np.pi * 440 * t), 0.4 * np.sin(2 * np.pi * 1000 * t)
    p = encode(tmp_path / "two.m4a", np.stack([left, right], axis=1), 48000, "aac")

    def peak(x: np.ndarray) -> float:
        spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
        return float(np.fft.rfftfreq(len(x), 1 / SR)[np.argmax(spec)])

    assert abs(peak(audio.load(p, channel=0)) - 440) < 3
    assert abs(peak(audio.load(p, channel=1)) - 1000) < 3
    mix = np.abs(np.fft.rfft(audio.load(p)))
    f = np.fft.rfftfreq(len(audio.load(p)), 1 / SR)
    assert mix[np.argmin(abs(f - 440))] > 0.3 * mix.max() and mix[np.argmin(abs(f - 1000))] > 0.3 * mix.max()
    with pytest.raises(UsageError, match="no channel 2"):
        audio.check(p, channel=2)


def test_live_webm_without_duration_is_measured(tmp_path: Path, source: tuple[Path, np.ndarray]) -> None:
    # A browser's MediaRecorder writes WebM without a duration (the muxer's "live" mode).
    p = tmp_path / "live.webm"
    encode(p, source[1][: 5 * SR], SR, "libopus", rate=48000, container="webm")
    with av.open(str(p)) as c:
        assert c.duration is not None  # the ordinary file knows it; now the live one:
    live = tmp_path / "live2.webm"
    with av.open(str(live), "w", options={"live": "1"}) as out, av.open(str(p)) as src:
        s = out.add_stream_from_template(src.streams.audio[0])
        for pkt in src.demux(src.streams.audio[0]):
            if pkt.dts is not None:
                pkt.stream = s
                out.mux(pkt)
    with av.open(str(live)) as c:
        assert c.duration is None
    assert audio.info(live).duration == pytest.approx(5.0, abs=0.03)
    assert len(audio.load(live)) == pytest.approx(5 * SR, abs=0.02 * SR)


def test_stream_memory_is_flat_for_a_long_m4a(tmp_path: Path) -> None:
    # 3 min of 44.1 kHz stereo AAC is 63 MB of float32 decoded: streaming holds ~ one block.
    rng = np.random.default_rng(3)
    x = (0.1 * rng.standard_normal((44100 * 180, 2))).astype(np.float32)
    p = encode(tmp_path / "long.m4a", x, 44100, "aac")
    del x
    total, peak = streamed_peak(p)
    assert abs(total - 180 * SR) < 0.05 * SR
    assert peak < 25e6, f"streaming peak {peak / 1e6:.0f} MB"


# --------------------------------------------------------------------------- damage
def test_video_without_audio(tmp_path: Path) -> None:
    need_encoder("mpeg4", "screen.mp4")
    p = video_only(tmp_path / "screen.mp4")
    with pytest.raises(NoAudio, match=r"screen.mp4: has no audio stream \(only video\)"):
        audio.check(p)


def test_unknown_codec(tmp_path: Path) -> None:
    # A WAV whose format tag no decoder knows (neither libsndfile nor FFmpeg).
    p = tmp_path / "odd.wav"
    sf.write(p, np.zeros(SR, np.int16), SR)
    b = bytearray(p.read_bytes())
    i = b.find(b"fmt ")
    b[i + 8 : i + 10] = struct.pack("<H", 0x1234)
    p.write_bytes(bytes(b))
    with pytest.raises(UnsupportedCodec, match="audio codec is not one this FFmpeg can decode"):
        audio.check(p)


def test_cut_m4a_fails_up_front(encoded: Encoded, tmp_path: Path, source: tuple[Path, np.ndarray]) -> None:
    # moov (the index) at the end, as FFmpeg writes it by default: cut, nothing is readable.
    data = encoded["aac.m4a"].read_bytes()
    cut = tmp_path / "cut.m4a"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptAudio, match="cut.m4a: corrupt or truncated"):
        audio.check(cut)
    # moov first ("faststart", as phones and web exports write it): the index promises more
    fast = tmp_path / "fast.m4a"
    with av.open(str(encoded["aac.m4a"])) as src, av.open(str(fast), "w", options={"movflags": "+faststart"}) as out:
        s = out.add_stream_from_template(src.streams.audio[0])
        for pkt in src.demux(src.streams.audio[0]):
            if pkt.dts is not None:
                pkt.stream = s
                out.mux(pkt)
    assert len(audio.load(fast)) > 19 * SR
    data = fast.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptAudio, match=r"truncated: the container declares 19.7 s"):
        audio.check(cut)  # found by a seek near the end: milliseconds, before any model loads
    with pytest.raises(CorruptAudio, match="truncated"):
        audio.load(cut)


def test_cut_webm_fails_ogg_and_mp3_play_what_is_there(encoded: Encoded, tmp_path: Path) -> None:
    data = encoded["opus.webm"].read_bytes()
    cut = tmp_path / "cut.webm"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptAudio, match="cut.webm: truncated"):
        audio.check(cut)
    # Ogg and MP3 carry no index: the length is whatever is there (as libsndfile did).
    for name in ("opus.ogg", "mp3-8k.mp3"):
        data = encoded[name].read_bytes()
        part = tmp_path / f"cut-{name}"
        part.write_bytes(data[: len(data) // 2])
        n = len(audio.load(part)) / SR
        assert 8.0 < n < 11.5, (name, n)
    # Ogg's length is read from its last page, so it is the length that is there; an MP3's
    # Xing header still says the full length: the reader goes to the real end instead.
    ogg = tmp_path / "cut-opus.ogg"
    assert audio.info(ogg).duration == pytest.approx(len(audio.load(ogg)) / SR, abs=0.05)


def test_damaged_aac_frames_fail_with_the_position(encoded: Encoded, tmp_path: Path,
                                                   capfd: pytest.CaptureFixture[str]) -> None:
    b = bytearray(encoded["aac.m4a"].read_bytes())
    rng = np.random.default_rng(5)
    for i in rng.integers(len(b) // 2, len(b) * 3 // 4, 200):  # inside the audio data (moov is at the end)
        b[i] ^= 0xFF
    p = tmp_path / "bad.m4a"
    p.write_bytes(bytes(b))
    with pytest.raises(CorruptAudio, match=r"bad.m4a: corrupt or truncated audio data at \d+\.\d s") as e:
        audio.load(p)
    assert "\n" not in str(e.value)
    assert capfd.readouterr().err == ""  # FFmpeg's own log lines stay off the terminal


def test_garbage_with_media_suffixes_is_not_audio(tmp_path: Path) -> None:
    rng = np.random.default_rng(9)
    for suffix in (".m4a", ".webm", ".mp4", ".amr", ".opus", ".aac", ""):
        p = tmp_path / f"junk{suffix}"
        p.write_bytes(rng.integers(0, 256, 4000, dtype=np.uint8).tobytes())
        with pytest.raises(WhispdiarError) as e:
            audio.check(p)
        assert "\n" not in str(e.value)


# --------------------------------------------------------------------------- real pipeline
@pytest.fixture(scope="module")
def pipeline(whisper_tiny_en_path, segmentation_model_path, embedding_model_path, vad_model_path):
    from whispdiar.pipeline import Pipeline

    with Pipeline(whisper_tiny_en_path, segmentation_model_path, embedding_model_path, vad_model_path,
                  threads=2) as p:
        yield p


def words(result) -> list[str]:  # noqa: ANN001
    out = [re.sub(r"[^a-z0-9']", "", w.text.lower()) for s in result.segments for w in s.words]
    return [w for w in out if w]


def wer(ref: list[str], hyp: list[str]) -> float:
    d = list(range(len(hyp) + 1))
    for i, a in enumerate(ref, 1):
        prev, d[0] = d[0], i
        for j, b in enumerate(hyp, 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (a != b))
    return d[-1] / max(1, len(ref))


@pytest.fixture(scope="module")
def reference(pipeline, source: tuple[Path, np.ndarray]):  # noqa: ANN001, ANN201
    r = pipeline.run(source[0])
    assert [s.name for s in r.speakers] == ["Speaker 1", "Speaker 2"]  # F, M (then F again)
    assert len(words(r)) > 40
    return r


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS, ids=IDS)
def test_same_speakers_and_words_as_the_wav(kind: Kind, pipeline, reference, encoded: Encoded) -> None:  # noqa: ANN001
    r = pipeline.run(encoded[kind.name])
    assert r.duration == pytest.approx(reference.duration, abs=0.08)
    assert [s.name for s in r.speakers] == [s.name for s in reference.speakers]
    # Who speaks each of the WAV's words, looked up in this file's turns (names are
    # numbered by first appearance, so they are comparable across runs).
    ref_name = {s.label: s.name for s in reference.speakers}
    name = {s.label: s.name for s in r.speakers}
    same = []
    for w in (w for s in reference.segments for w in s.words):
        mid = (w.start + w.end) / 2
        here = [t.speaker for t in r.turns if t.start <= mid <= t.end]
        same.append(bool(here) and name.get(here[0]) == ref_name.get(w.speaker))
    assert np.mean(same) >= 0.85, np.mean(same)  # measured 0.92-0.94: words at turn edges
    err = wer(words(reference), words(r))
    assert err <= kind.max_wer, f"WER {err:.2f}: {' '.join(words(r))}"


@pytest.mark.slow
def test_amr_nb_file_is_transcribed(pipeline, data_dir: Path) -> None:  # noqa: ANN001
    r = pipeline.run(data_dir / AMR, diarize=False)
    assert r.duration == pytest.approx(AMR_SECONDS, abs=1e-3)
    assert " ".join(words(r)) == AMR_TEXT  # measured: every word (tiny.en)


@pytest.mark.slow
def test_channel_picks_one_voice_of_a_stereo_call(pipeline, data_dir: Path, tmp_path: Path) -> None:  # noqa: ANN001
    """A call recorded one side per channel: ``channel`` transcribes that side only."""
    jfk = sf.read(data_dir / "jfk.wav", dtype="float32")[0]
    other = sf.read(data_dir / "ls-2033-164914-0003.flac", dtype="float32")[0]
    both = np.zeros((len(jfk), 2), np.float32)
    both[:, 0] = jfk
    both[: len(other), 1] = other
    p = encode(tmp_path / "call.m4a", both, SR, "aac", rate=48000)
    left = " ".join(s.text for s in pipeline.run(p, diarize=False, channel=0).segments).lower()
    right = " ".join(s.text for s in pipeline.run(p, diarize=False, channel=1).segments).lower()
    assert "country" in left and "country" not in right
    assert "reciter" in right and "reciter" not in left


# --------------------------------------------------------------------------- CLI
@pytest.fixture(scope="module")
def jfk_m4a(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    x, rate = sf.read(data_dir / "jfk.wav", dtype="float32")
    return encode(tmp_path_factory.mktemp("jfk") / "jfk.m4a", x, rate, "aac", rate=44100)


def _no_ffmpeg_env(tmp_path: Path) -> dict[str, str]:
    bindir = tmp_path / "bin"  # a PATH with nothing on it: certainly no ffmpeg
    bindir.mkdir(exist_ok=True)
    env = {**os.environ, "PATH": str(bindir), "PYTHONUNBUFFERED": "1"}
    assert shutil.which("ffmpeg", path=env["PATH"]) is None
    return env


def _assert_jfk(proc: subprocess.CompletedProcess) -> None:
    err = proc.stderr.decode("utf-8", "replace")
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    text = proc.stdout.decode().lower()
    assert "ask not what your country can do for you" in text, text


@pytest.mark.slow
def test_cli_transcribes_an_m4a_without_ffmpeg(jfk_m4a: Path, tmp_path: Path) -> None:
    proc = subprocess.run(CLI + ["transcribe", "-q", "--no-diarize", "--model", "tiny.en", str(jfk_m4a)],
                          capture_output=True, env=_no_ffmpeg_env(tmp_path), stdin=subprocess.DEVNULL, timeout=300)
    _assert_jfk(proc)


@pytest.mark.slow
def test_cli_transcribes_an_m4a_from_stdin(jfk_m4a: Path, tmp_path: Path) -> None:
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    env = {**_no_ffmpeg_env(tmp_path), "TMPDIR": str(tmpdir)}
    with open(jfk_m4a, "rb") as f:  # `cat jfk.m4a | whispdiar transcribe -`
        proc = subprocess.run(CLI + ["transcribe", "-q", "--no-diarize", "--model", "tiny.en", "-"],
                              stdin=f, capture_output=True, env=env, timeout=300)
    _assert_jfk(proc)
    with contextlib.suppress(FileNotFoundError):
        assert not [p for p in tmpdir.iterdir() if p.name.startswith("whispdiar")]  # the encoded copy is gone


def test_decoder_versions_are_reported() -> None:
    assert decode.versions().startswith("PyAV ")
