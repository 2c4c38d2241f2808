"""Audio input: any recording FFmpeg or libsndfile reads, as 16 kHz mono float32.

Two decoders, one contract. WAV-family files and FLAC are read by libsndfile (soundfile),
measured faster than FFmpeg for them (docs/benchmarks.md, 2026-12-01); everything else
(MP3, Ogg, M4A/AAC, MP4/MOV video, WebM/MKV, Opus, AMR, WMA, ...) is decoded in-process
by FFmpeg's libraries through PyAV (``decode.py``), with no system tool and no temporary
file. Long recordings are read in blocks (`stream`), so memory does not grow with length.
Multichannel audio is averaged to mono unless one channel is picked (``channel``).
Any sample rate from 1 kHz to 768 kHz is resampled to 16 kHz with soxr (HQ, streaming).

Every way a file can be unusable maps to one ``AudioError``/``InputNotFound`` subclass
with its own exit code (see errors.py and docs/cli.md); nothing else escapes from here.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import re
import shutil
import stat
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from ..errors import (
    AudioError,
    CorruptAudio,
    EmptyInput,
    InputIsDirectory,
    InputNotFound,
    InputPermissionDenied,
    NoAudio,
    NonFiniteAudio,
    NotAudio,
    UsageError,
)
from . import decode

SAMPLE_RATE = 16000
BLOCK_SECONDS = 30.0
MIN_RATE, MAX_RATE = decode.MIN_RATE, decode.MAX_RATE
# Cap on raw samples (frames x channels) read at once: 96 kHz x 8 ch x 30 s would be 92 MB.
MAX_BLOCK_SAMPLES = 1 << 22

# libsndfile error codes (sndfile.h) that mean "this is not audio we know".
_SF_ERR_UNRECOGNISED_FORMAT = 1
_SF_ERR_SYSTEM = 2


@dataclass(frozen=True, slots=True)
class AudioInfo:
    path: Path
    duration: float  # seconds
    sample_rate: int  # of the source file
    channels: int


# --------------------------------------------------------------------------- checks
def _check_path(path: Path) -> None:
    """Existence, type, readability, size: each with its own error class."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise InputNotFound(f"{path}: no such file") from None
    except NotADirectoryError:
        raise InputNotFound(f"{path}: no such file (a parent is not a directory)") from None
    except PermissionError:
        raise InputPermissionDenied(f"{path}: permission denied") from None
    except OSError as e:  # ELOOP, ENAMETOOLONG, ...
        raise InputNotFound(f"{path}: cannot access ({e.strerror})") from None
    if stat.S_ISDIR(st.st_mode):
        raise InputIsDirectory(f"{path}: is a directory, not an audio file")
    if not stat.S_ISREG(st.st_mode):
        # A pipe or device cannot be seeked; soundfile needs that.
        raise NotAudio(f"{path}: not a regular file (for a pipe, give - and feed it on standard input)")
    # Opening is the only reliable test: os.access() says yes to root even for mode 000
    # and ignores ACLs / capabilities the way the kernel sees them.
    try:
        with open(path, "rb"):
            pass
    except PermissionError:
        raise InputPermissionDenied(f"{path}: permission denied") from None
    except OSError as e:
        raise InputNotFound(f"{path}: cannot open ({e.strerror})") from None
    if st.st_size == 0:
        raise EmptyInput(f"{path}: file is empty (0 bytes)")


_stderr_lock = threading.Lock()


@contextlib.contextmanager
def _quiet_native_stderr(enabled: bool) -> Iterator[None]:
    """Silence C-level stderr (libmpg123 prints warnings there) so a bad MP3 gives one line.

    Process-wide while active, so it is used only for MP3 calls, which are short.
    """
    if not enabled:
        yield
        return
    with _stderr_lock:
        try:
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError):
            yield
            return
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, 2)
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            os.close(devnull)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    # "Error opening 'x.wav': Format not recognised." -> "Format not recognised."
    text = re.sub(r"^Error opening '.*?': ", "", text, flags=re.S)
    return (text.splitlines() or ["unknown error"])[0].strip()


def _head(path: Path, n: int = 16) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(n)
    except OSError:
        return b""


def _sf_try(path: Path) -> sf.SoundFile | AudioError:
    """Open with soundfile: the open file, or the error to raise if nobody else reads it."""
    try:
        # libsndfile falls back to probing unknown data as MPEG, so any open may make
        # libmpg123 talk: keep it quiet (an open takes milliseconds).
        with _quiet_native_stderr(True):
            return sf.SoundFile(str(path))
    except sf.LibsndfileError as e:
        if e.code == _SF_ERR_UNRECOGNISED_FORMAT:
            return NotAudio(f"{path}: not an audio file (format not recognised)")
        if e.code == _SF_ERR_SYSTEM or "not a regular file" in str(e):
            # libmpg123 says "does not exist or is not a regular file" for junk that starts like MP3.
            return NotAudio(f"{path}: not a readable audio file")
        return CorruptAudio(f"{path}: corrupt or truncated audio ({_first_line(e)})")
    except (RuntimeError, TypeError, ValueError, OSError) as e:
        return CorruptAudio(f"{path}: not a readable audio file ({_first_line(e)})")


def _open(path: Path) -> sf.SoundFile:
    """Open with soundfile and validate the header; caller closes."""
    f = _sf_try(path)
    if isinstance(f, AudioError):
        raise f
    try:
        _validate(f, path)
    except BaseException:
        f.close()
        raise
    return f


def _validate(f: sf.SoundFile, path: Path) -> None:
    if not MIN_RATE <= f.samplerate <= MAX_RATE:
        raise CorruptAudio(f"{path}: implausible sample rate {f.samplerate} Hz (header damaged?)")
    if f.channels < 1:
        raise CorruptAudio(f"{path}: header declares {f.channels} channels")
    if f.frames <= 0:
        raise NoAudio(f"{path}: contains no audio samples (zero length)")
    declared, present = _wav_data_sizes(f)
    if declared is not None and present is not None and declared > present:
        bpf = max(1, _bytes_per_frame(f))
        raise CorruptAudio(
            f"{path}: truncated: header promises {declared // bpf / f.samplerate:.1f} s, "
            f"file holds {present // bpf / f.samplerate:.1f} s"
        )


_DATA_RE = re.compile(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.M)
_STREAMING_SIZES = {0, 0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF}  # "size unknown" in streamed WAV/RF64


def _wav_data_sizes(f: sf.SoundFile) -> tuple[int | None, int | None]:
    """(declared, present) data bytes when libsndfile noticed they differ (WAV family only).

    libsndfile silently plays the part that is there; a recording cut off in a copy is
    still an error the user should hear about.
    """
    if f.format not in ("WAV", "WAVEX", "RF64", "W64", "AIFF"):
        return None, None
    m = _DATA_RE.search(f.extra_info or "")
    if not m:
        return None, None
    declared, present = int(m.group(1)), int(m.group(2))
    if declared in _STREAMING_SIZES:
        return None, None
    return declared, present


def _bytes_per_frame(f: sf.SoundFile) -> int:
    width = {"PCM_S8": 1, "PCM_U8": 1, "PCM_16": 2, "PCM_24": 3, "PCM_32": 4, "FLOAT": 4, "DOUBLE": 8,
             "ULAW": 1, "ALAW": 1}.get(f.subtype, 2)
    return width * f.channels


def _check_channel(channel: int | None, channels: int, path: Path) -> None:
    if channel is not None and not 0 <= channel < channels:
        raise UsageError(f"{path}: has {channels} channel(s) (0-{channels - 1}); there is no channel {channel}")


# --------------------------------------------------------------------------- routing
# Lossless formats libsndfile reads faster than FFmpeg (RIFF/RF64/BW64 WAV, Sony Wave64,
# AIFF, FLAC): their magic numbers.
_SNDFILE_MAGIC = (b"RIFF", b"RF64", b"BW64", b"FORM", b"fLaC", b"riff\x2e\x91\xcf\x11")


def _route(path: Path) -> decode.AvInfo | None:
    """Which decoder reads ``path``: None for libsndfile, else PyAV's stream info.

    Raises the AudioError a user should see when neither can read it. Header checks
    (truncated WAV, implausible rate, no samples) happen here, before any decoding.
    """
    head = _head(path, 16)
    if head.startswith(_SNDFILE_MAGIC):
        f = _sf_try(path)
        if isinstance(f, sf.SoundFile):
            with _quiet_native_stderr(True), f:
                _validate(f, path)
            return None
        try:  # a WAV codec libsndfile lacks (MP3 or G.729 in WAV, ...): FFmpeg may know it
            return decode.probe(path)
        except decode.Unrecognised:
            raise f from None
    try:
        return decode.probe(path)
    except decode.Unrecognised:
        pass
    f = _sf_try(path)  # formats only libsndfile knows (or none: then its "not audio")
    if isinstance(f, AudioError):
        raise f
    with _quiet_native_stderr(True), f:
        _validate(f, path)
    return None


# --------------------------------------------------------------------------- reading
def info(path: str | os.PathLike[str]) -> AudioInfo:
    """Duration, rate and channels of a file, after every check `stream` does up front.

    For PyAV-decoded files the duration is the container's (see ``decode.probe`` for
    containers that do not know it).
    """
    p = Path(path)
    _check_path(p)
    avi = _route(p)
    if avi is not None:
        return AudioInfo(p, avi.duration, avi.sample_rate, avi.channels)
    with _open(p) as f:
        return AudioInfo(p, f.frames / f.samplerate, f.samplerate, f.channels)


def check(path: str | os.PathLike[str], channel: int | None = None) -> AudioInfo:
    """Cheap up-front validation of one input, for a CLI to reject it before loading models.

    Reads the header; for PyAV-decoded files also decodes the first half second (the
    codec really works) and looks for a packet at the end an MP4/Matroska index declares
    (a cut-off file), which costs milliseconds whatever the length.
    """
    p = Path(path)
    _check_path(p)
    avi = _route(p)
    if avi is None:
        with _open(p) as f:
            _check_channel(channel, f.channels, p)
            return AudioInfo(p, f.frames / f.samplerate, f.samplerate, f.channels)
    _check_channel(channel, avi.channels, p)
    decode.check_complete(p, avi)
    for _ in decode.read(p, avi, channel, 0.0, min(0.5, avi.duration)):
        pass
    return AudioInfo(p, avi.duration, avi.sample_rate, avi.channels)


def _to_mono(block: np.ndarray, channel: int | None) -> np.ndarray:
    if block.ndim == 1:
        return block
    if channel is not None:
        return np.ascontiguousarray(block[:, channel])
    if block.shape[1] == 1:
        return np.ascontiguousarray(block[:, 0])
    return block.mean(axis=1, dtype=np.float32)


def stream(
    path: str | os.PathLike[str],
    block_seconds: float = BLOCK_SECONDS,
    channel: int | None = None,
    start: float = 0.0,
    end: float | None = None,
) -> Iterator[np.ndarray]:
    """Yield consecutive 16 kHz mono float32 blocks of about ``block_seconds``.

    Blocks concatenate to the whole (resampled) signal from ``start`` to ``end``.
    Raises an AudioError subclass on unusable input (checked before the first block)
    and CorruptAudio / NonFiniteAudio when damage shows up while reading.
    """
    p = Path(path)
    _check_path(p)
    avi = _route(p)
    if avi is None:
        yield from _stream_sndfile(p, block_seconds, channel, start, end)
    else:
        yield from _stream_av(p, avi, block_seconds, channel, start, end)


def _stream_av(p: Path, avi: decode.AvInfo, block_seconds: float, channel: int | None, start: float,
               end: float | None) -> Iterator[np.ndarray]:
    """PyAV's decoded pieces gathered into blocks, checked, and resampled like libsndfile's.

    soxr (HQ), not FFmpeg's swresample: the same resampler and settings as for WAV/FLAC,
    whose level and anti-aliasing tests/test_audio.py pins, so a recording gives the same
    16 kHz signal whichever decoder read it.
    """
    _check_channel(channel, avi.channels, p)
    sr = avi.sample_rate
    if end is not None and end <= start or (avi.exact and start >= avi.duration):
        raise NoAudio(f"{p}: no audio between {start:.2f} s and {'the end' if end is None else f'{end:.2f} s'}")
    resampler = soxr.ResampleStream(sr, SAMPLE_RATE, 1, dtype="float32", quality="HQ") if sr != SAMPLE_RATE else None
    per_block = max(1, int(block_seconds * sr))
    pending: list[np.ndarray] = []
    have = 0
    pos = int(round(start * sr))  # source samples before the pending ones, for messages
    got_any = False

    def emit(x: np.ndarray, last: bool) -> np.ndarray:
        if not np.isfinite(x).all():
            bad = int(np.flatnonzero(~np.isfinite(x))[0])
            raise NonFiniteAudio(f"{p}: contains NaN or infinite samples (first at {(pos + bad) / sr:.2f} s)")
        return resampler.resample_chunk(x, last=last) if resampler is not None else x

    for piece in decode.read(p, avi, channel, start, end):
        pending.append(piece)
        have += len(piece)
        while have >= per_block:
            x = np.concatenate(pending) if len(pending) > 1 else pending[0]
            out = emit(x[:per_block], last=False)
            pending, have, pos = [x[per_block:]], have - per_block, pos + per_block
            if len(out):
                got_any = True
                yield out.astype(np.float32, copy=False)
    x = np.concatenate(pending) if pending else np.zeros(0, np.float32)
    if len(x) or resampler is not None:
        out = emit(x, last=True)
        if len(out):
            got_any = True
            yield out.astype(np.float32, copy=False)
    if not got_any:
        raise NoAudio(f"{p}: contains no audio samples" if start == 0 and end is None else
                      f"{p}: no audio between {start:.2f} s and {'the end' if end is None else f'{end:.2f} s'}")


def _stream_sndfile(p: Path, block_seconds: float, channel: int | None, start: float,
                    end: float | None) -> Iterator[np.ndarray]:
    f = _open(p)
    try:
        _check_channel(channel, f.channels, p)
        sr = f.samplerate
        mp3 = f.format in ("MP3", "MPEG")
        exact = f.format not in ("MP3", "MPEG", "OGG")  # frame counts of lossy streams are estimates
        first = max(0, int(round(start * sr)))
        last = f.frames if end is None else min(f.frames, int(round(end * sr)))
        if first >= last:
            raise NoAudio(f"{p}: no audio between {start:.2f} s and {'the end' if end is None else f'{end:.2f} s'}")
        if first:
            try:
                with _quiet_native_stderr(mp3):
                    f.seek(first)
            except (sf.LibsndfileError, RuntimeError) as e:
                raise CorruptAudio(f"{p}: cannot seek to {start:.2f} s ({_first_line(e)})") from None
        resampler = None
        if sr != SAMPLE_RATE:
            resampler = soxr.ResampleStream(sr, SAMPLE_RATE, 1, dtype="float32", quality="HQ")
        # A lossy stream's frame count is an estimate: read it to its real end instead.
        remaining = last - first if exact or end is not None else sys.maxsize
        frames_per_block = max(1, min(int(block_seconds * sr), MAX_BLOCK_SAMPLES // f.channels))
        got_any = False
        pos = first  # frames read so far, for messages
        while remaining > 0:
            n = min(frames_per_block, remaining)
            try:
                with _quiet_native_stderr(mp3):
                    block = f.read(n, dtype="float32", always_2d=False)
            except (sf.LibsndfileError, RuntimeError) as e:
                raise CorruptAudio(f"{p}: corrupt audio data at {pos / sr:.1f} s "
                                   f"({_first_line(e)})") from None
            remaining -= len(block)
            pos += len(block)
            if len(block) < n:
                if exact:
                    raise CorruptAudio(f"{p}: truncated: audio ends at {pos / sr:.1f} s "
                                       f"of the {f.frames / sr:.1f} s its header promises")
                remaining = 0  # MP3/OGG: the header's length was an estimate
            mono = _to_mono(block, channel)
            if not np.isfinite(mono).all():
                bad = int(np.flatnonzero(~np.isfinite(mono))[0])
                at = (pos - len(block) + bad) / sr
                raise NonFiniteAudio(f"{p}: contains NaN or infinite samples (first at {at:.2f} s)")
            if resampler is not None:
                mono = resampler.resample_chunk(mono, last=remaining <= 0)
            if len(mono):
                got_any = True
                yield mono.astype(np.float32, copy=False)
        if not got_any:
            raise NoAudio(f"{p}: contains no audio samples")
    finally:
        with _quiet_native_stderr(f.format in ("MP3", "MPEG")):
            f.close()


def load(
    path: str | os.PathLike[str],
    channel: int | None = None,
    start: float = 0.0,
    end: float | None = None,
) -> np.ndarray:
    """The whole (or part of the) file as one 16 kHz mono float32 array. For short audio."""
    blocks = list(stream(path, channel=channel, start=start, end=end))
    return np.concatenate(blocks) if len(blocks) > 1 else blocks[0]


def stdin_to_tempfile() -> Path:
    """Copy standard input, still encoded, to a temporary file; the caller deletes it.

    Any format works (the copy is decoded like a file, recognised by content). A copy is
    needed because a run reads the audio more than once, in parallel threads (whisper and
    the diarizer) and by seeking to spans: a pipe can do neither. It holds the encoded
    bytes (an .m4a stays its size), never decoded PCM.
    """
    if sys.stdin is None or sys.stdin.isatty():
        raise UsageError("'-' reads audio from standard input, but it is a terminal (pipe a file in)")
    fd, tmp = tempfile.mkstemp(prefix="whispdiar-stdin-")
    try:
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(sys.stdin.buffer, out, 1 << 20)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        if e.errno == errno.ENOSPC:
            raise AudioError(f"standard input: no space left for the temporary copy in {tempfile.gettempdir()}") \
                from None
        raise AudioError(f"standard input: cannot read it ({e.strerror})") from None
    except BaseException:  # interrupted mid-copy: leave nothing behind
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def num_samples(duration: float) -> int:
    return int(math.ceil(duration * SAMPLE_RATE))
