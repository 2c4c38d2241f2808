"""Audio input: any file soundfile (or ffmpeg) can read, as 16 kHz mono float32.

Long recordings are read in blocks (`stream`), so memory does not grow with length.
Multichannel audio is averaged to mono unless one channel is picked.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from .errors import AudioError, InputNotFound

SAMPLE_RATE = 16000
BLOCK_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class AudioInfo:
    path: Path
    duration: float  # seconds
    sample_rate: int  # of the source file
    channels: int


def _check_path(path: Path) -> None:
    if not path.exists():
        raise InputNotFound(f"{path}: no such file")
    if path.is_dir():
        raise InputNotFound(f"{path}: is a directory, not an audio file")
    if not os.access(path, os.R_OK):
        raise AudioError(f"{path}: permission denied")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: file is empty")


def _open(path: Path) -> sf.SoundFile:
    try:
        return sf.SoundFile(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        msg = str(e).split("\n")[0]
        raise AudioError(f"{path}: not a readable audio file ({msg})") from None


def needs_ffmpeg(path: Path) -> bool:
    """True when soundfile cannot read the file (m4a, mp4, webm, ...)."""
    try:
        with sf.SoundFile(str(path)):
            return False
    except Exception:
        return path.suffix.lower() in FFMPEG_SUFFIXES


FFMPEG_SUFFIXES = {".m4a", ".mp4", ".aac", ".webm", ".mkv", ".mov", ".wma", ".opus", ".amr", ".3gp"}


def decode_with_ffmpeg(path: Path) -> Path:
    """Decode an unusual container to a temporary 16 kHz mono float WAV; caller deletes it."""
    exe = shutil.which("ffmpeg")
    if exe is None:
        raise AudioError(
            f"{path}: format {path.suffix or '(none)'} needs ffmpeg, which is not on PATH "
            "(install ffmpeg or convert the file to WAV/FLAC)"
        )
    fd, tmp = tempfile.mkstemp(suffix=".wav", prefix="whispdiar-")
    os.close(fd)
    proc = subprocess.run(
        [exe, "-nostdin", "-v", "error", "-y", "-i", str(path), "-vn", "-ac", "1",
         "-ar", str(SAMPLE_RATE), "-c:a", "pcm_f32le", tmp],
        capture_output=True, text=True,
    )
    if proc.returncode != 0:
        os.unlink(tmp)
        detail = (proc.stderr.strip().splitlines() or ["unknown error"])[-1]
        raise AudioError(f"{path}: ffmpeg could not decode it ({detail})")
    return Path(tmp)


def info(path: str | os.PathLike[str]) -> AudioInfo:
    p = Path(path)
    _check_path(p)
    with _open(p) as f:
        if f.frames <= 0 or f.samplerate <= 0:
            raise AudioError(f"{p}: no audio samples")
        return AudioInfo(p, f.frames / f.samplerate, f.samplerate, f.channels)


def _to_mono(block: np.ndarray, channel: int | None, path: Path) -> np.ndarray:
    if block.ndim == 1:
        return block
    if channel is None:
        return block.mean(axis=1, dtype=np.float32)
    if not 0 <= channel < block.shape[1]:
        raise AudioError(f"{path}: has {block.shape[1]} channel(s), no channel {channel}")
    return np.ascontiguousarray(block[:, channel])


def stream(
    path: str | os.PathLike[str],
    block_seconds: float = BLOCK_SECONDS,
    channel: int | None = None,
    start: float = 0.0,
    end: float | None = None,
) -> Iterator[np.ndarray]:
    """Yield consecutive 16 kHz mono float32 blocks of about ``block_seconds``.

    Blocks concatenate to the whole (resampled) signal from ``start`` to ``end``.
    Raises AudioError on corrupt data or non-finite samples.
    """
    p = Path(path)
    _check_path(p)
    with _open(p) as f:
        sr = f.samplerate
        if f.frames <= 0:
            raise AudioError(f"{p}: no audio samples")
        first = int(round(start * sr))
        last = f.frames if end is None else min(f.frames, int(round(end * sr)))
        if first >= last:
            raise AudioError(f"{p}: empty range {start:.2f}-{end if end is not None else 'end'} s")
        f.seek(first)
        resampler = None
        if sr != SAMPLE_RATE:
            resampler = soxr.ResampleStream(sr, SAMPLE_RATE, 1, dtype="float32", quality="HQ")
        remaining = last - first
        frames_per_block = max(1, int(block_seconds * sr))
        while remaining > 0:
            n = min(frames_per_block, remaining)
            try:
                block = f.read(n, dtype="float32", always_2d=False)
            except (sf.LibsndfileError, RuntimeError) as e:
                raise AudioError(f"{p}: corrupt audio data ({str(e).splitlines()[0]})") from None
            if len(block) == 0:
                break  # truncated file: header promised more frames than exist
            remaining -= len(block)
            mono = _to_mono(block, channel, p)
            if not np.all(np.isfinite(mono)):
                raise AudioError(f"{p}: contains NaN or infinite samples")
            last_block = remaining <= 0
            if resampler is not None:
                mono = resampler.resample_chunk(mono, last=last_block)
            if len(mono):
                yield mono.astype(np.float32, copy=False)
            if last_block:
                break
        else:
            if resampler is not None:
                tail = resampler.resample_chunk(np.zeros(0, np.float32), last=True)
                if len(tail):
                    yield tail.astype(np.float32, copy=False)


def load(
    path: str | os.PathLike[str],
    channel: int | None = None,
    start: float = 0.0,
    end: float | None = None,
) -> np.ndarray:
    """The whole (or part of the) file as one 16 kHz mono float32 array. For short audio."""
    blocks = list(stream(path, channel=channel, start=start, end=end))
    if not blocks:
        raise AudioError(f"{path}: no audio samples")
    return np.concatenate(blocks)


def stdin_to_tempfile() -> Path:
    """Copy standard input to a temporary file (audio is not seekable from a pipe)."""
    fd, tmp = tempfile.mkstemp(prefix="whispdiar-stdin-")
    with os.fdopen(fd, "wb") as out:
        shutil.copyfileobj(sys.stdin.buffer, out, 1 << 20)
    return Path(tmp)


def num_samples(duration: float) -> int:
    return int(math.ceil(duration * SAMPLE_RATE))
