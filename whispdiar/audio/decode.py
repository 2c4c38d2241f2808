"""Decoding through PyAV: FFmpeg's libraries in-process, for every container and codec FFmpeg reads.

``audio.py`` is the public loader (checks, 16 kHz resampling, blocks); this module only
turns a file into float32 samples at the source rate, mixed to mono or one channel,
from ``start`` to ``end``, one decoded frame at a time (so memory does not grow with
length, and nothing is written to disk). PyAV's wheels bundle FFmpeg: no system tool.

Which audio: the first audio stream (for a video, its first audio track).
Damage policy (docs/cli.md): fail cleanly, never a partial transcript without saying so.
A decoder error mid-stream, a missing index (an MP4 cut before its ``moov``) and data
that ends before the duration an MP4/Matroska header declares are ``CorruptAudio``.
Where the container's length is only an estimate (MP3, ADTS AAC, Ogg, AMR), the audio
that is there is the audio: a short read is not called truncation (as for MP3 before).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from ..errors import AudioError, CorruptAudio, NoAudio, UnsupportedCodec

MIN_RATE, MAX_RATE = 1000, 768000  # outside this a header is damaged, not exotic
# Containers whose duration comes from an index or header that lists every packet: a
# shorter read means data is missing. FFmpeg's name for the mp4 family is
# "mov,mp4,m4a,3gp,3g2,mj2" and for Matroska "matroska,webm".
_EXACT_FORMATS = ("mov", "matroska", "webm")
# Raw elementary streams (no index): FFmpeg estimates their length from the bit rate,
# which is off by percent for variable-rate data (AMR-NB: 20.3 s for 19.7 s), so their
# packets are read through, without decoding, to measure it.
_ESTIMATED_FORMATS = {"amr", "aac", "ac3", "eac3", "dts", "gsm", "g729", "g723_1", "loas", "truehd", "mlp"}
TRUNCATION_SLACK = 0.5  # s: encoder priming/padding differs from the header by < 0.1 s
# Decoding starts this far before a seek target: AAC/Opus frames overlap their neighbours
# and the first frame after a seek is not yet the signal (Opus wants 80 ms of pre-roll).
PREROLL = 0.5
# Formats that FFmpeg "recognises" in any text or garbage (ANSI art, image sequences):
# no audio stream there means "not audio", not "a video without sound".
_NOT_MEDIA = ("tty", "image2", "image2pipe")


# What PyAV raises for damaged data: FFmpeg's errors, and (rarely) Python's own from
# implausible frame parameters. Either way the file is damaged, not whispdiar.
_DAMAGE = (av.error.FFmpegError, ValueError, ArithmeticError, IndexError)


class Unrecognised(Exception):  # noqa: N818 - internal signal, never reaches a user
    """FFmpeg does not know this data; the caller tries libsndfile, then says "not audio"."""


@dataclass(frozen=True, slots=True)
class AvInfo:
    duration: float  # seconds
    sample_rate: int
    channels: int
    exact: bool  # the duration is from an index (a shorter read is truncation)
    format: str  # FFmpeg's container name
    codec: str
    origin: int  # time stamp (stream time base) of the first decoded sample: time 0 of the audio
    first_samples: int  # length of the first decoded frame (see _place)


# Container magic numbers FFmpeg reads and libsndfile does not: when FFmpeg then fails to
# open such a file, it is a damaged file of a known kind, not an unknown format.
_MAGIC = (b"\x1a\x45\xdf\xa3",  # EBML: webm / mkv
          b"\x30\x26\xb2\x75\x8e\x66\xcf\x11",  # ASF: wma
          b"#!AMR", b"OggS", b"ID3", b".RMF", b"caff")


def looks_like_media(head: bytes) -> bool:
    if len(head) >= 12 and head[4:8] == b"ftyp":  # ISO BMFF: mp4, m4a, mov, 3gp
        return True
    if len(head) >= 2 and head[0] == 0xFF and (head[1] & 0xF6) == 0xF0:  # ADTS AAC
        return True
    return any(head.startswith(m) for m in _MAGIC)


def _message(e: BaseException) -> str:
    # "[Errno 1094995529] Invalid data found when processing input: 'x.m4a'" -> the middle part
    text = getattr(e, "strerror", None) or str(e)
    return (str(text).strip().splitlines() or ["unknown error"])[0]


def _open(path: Path) -> av.container.InputContainer:
    try:
        return av.open(str(path), metadata_errors="ignore")
    except av.error.FFmpegError as e:
        with open(path, "rb") as f:
            head = f.read(16)
        if looks_like_media(head):
            raise CorruptAudio(f"{path}: corrupt or truncated (FFmpeg cannot open it: {_message(e)})") from None
        raise Unrecognised(_message(e)) from None
    except (OSError, ValueError, ZeroDivisionError) as e:
        raise Unrecognised(str(e)) from None


def _audio_stream(c: av.container.InputContainer, path: Path) -> av.audio.stream.AudioStream:
    audio = list(c.streams.audio)
    if not audio:
        others = sorted({s.type for s in c.streams})
        if not others or c.format.name in _NOT_MEDIA:
            raise Unrecognised("no streams")
        raise NoAudio(f"{path}: has no audio stream (only {', '.join(others)})")
    s = audio[0]
    if s.codec_context is None:
        raise UnsupportedCodec(f"{path}: its audio codec is not one this FFmpeg can decode "
                               f"(PyAV {av.__version__}, container {c.format.name})")
    return s


_cache_lock = threading.Lock()
_cache: dict[tuple[str, int, int], AvInfo] = {}  # (path, mtime_ns, size) -> info; see probe()


def probe(path: Path) -> AvInfo:
    """Rate, channels, duration of the first audio stream (raises Unrecognised / AudioError).

    The duration is the container's when it has one from an index or header (MP4,
    Matroska, Ogg, WAV, ASF). When it does not know it (a WebM written live by a browser)
    or only estimates it from the bit rate (ADTS AAC, AMR; MP3 is left to FFmpeg,
    which reads the Xing/LAME header that encoders write), the packets are read
    through without decoding and the end of the last one is the duration. The result is
    cached per (path, mtime, size) because every stage of a run asks for it.
    """
    st = os.stat(path)
    key = (str(path), st.st_mtime_ns, st.st_size)
    with _cache_lock:
        if key in _cache:
            return _cache[key]
    with contextlib.closing(_open(path)) as c:
        s = _audio_stream(c, path)
        cc = s.codec_context
        rate, channels = int(cc.sample_rate or 0), int(cc.channels or 0)
        if rate == 0 or channels == 0:
            raise Unrecognised("no sample rate")  # garbage FFmpeg guessed a format for by its name
        if not MIN_RATE <= rate <= MAX_RATE:
            raise CorruptAudio(f"{path}: implausible sample rate {rate} Hz (header damaged?)")
        tb = s.time_base
        duration = None
        if s.duration is not None and tb is not None:
            duration = float(s.duration * tb) - float(((s.start_time or 0) * tb) if _skips_start(c) else 0)
        elif c.duration is not None:
            duration = c.duration / av.time_base
        origin, first_samples = _first_frame(c, s, path)
        if duration is None or duration <= 0 or c.format.name in _ESTIMATED_FORMATS:
            duration = _count_duration(c, s, origin, path)
        info = AvInfo(duration, rate, channels, any(n in c.format.name for n in _EXACT_FORMATS) and
                      (s.duration is not None or c.duration is not None), c.format.name, cc.name, origin,
                      first_samples)
    with _cache_lock:
        if len(_cache) > 64:
            _cache.clear()
        _cache[key] = info
    return info


def _skips_start(c: av.container.InputContainer) -> bool:
    # Ogg's stream duration counts the Opus pre-skip that the decoder drops.
    return c.format.name == "ogg"


def _first_frame(c: av.container.InputContainer, s: av.audio.stream.AudioStream, path: Path) -> tuple[int, int]:
    """(time stamp, length) of the first decoded frame, whose first sample is sample 0.

    The time stamp is usually the stream's start time, but not always: the WMA decoder
    drops its first block (first frame at 86 ms), and seeks must count from the same
    point as a full read does.
    """
    try:
        for frame in c.decode(s):
            return (frame.pts if frame.pts is not None else (s.start_time or 0)), frame.samples
    except _DAMAGE as e:
        raise CorruptAudio(f"{path}: corrupt audio data at the start ({_message(e)})") from None
    raise NoAudio(f"{path}: contains no audio samples")


def _count_duration(c: av.container.InputContainer, s: av.audio.stream.AudioStream, origin: int,
                    path: Path) -> float:
    end = None
    try:
        for pkt in c.demux(s):
            if pkt.pts is not None:
                e = pkt.pts + (pkt.duration or 0)
                end = e if end is None else max(end, e)
    except _DAMAGE as e:
        raise CorruptAudio(f"{path}: corrupt container ({_message(e)})") from None
    if end is None or s.time_base is None:
        raise NoAudio(f"{path}: contains no audio samples")
    return float((end - origin) * s.time_base)


def check_complete(path: Path, info: AvInfo) -> None:
    """Cheap truncation test for indexed containers: is there a packet near the declared end?

    Seeks to one second before the end and reads packets only (no decoding), so it costs
    milliseconds whatever the length. Raises CorruptAudio when the data stops early.
    """
    if not info.exact or info.duration <= 2 * TRUNCATION_SLACK:
        return
    with contextlib.closing(_open(path)) as c:
        s = _audio_stream(c, path)
        tb = s.time_base
        origin = info.origin
        last = None
        try:
            c.seek(origin + int((info.duration - 1.0) / tb), stream=s, backward=True)
            for pkt in c.demux(s):
                if pkt.pts is not None:
                    last = float((pkt.pts + (pkt.duration or 0) - origin) * tb)
        except _DAMAGE:
            pass  # a read error at the end is what we are looking for; judged below
        if last is None or last < info.duration - TRUNCATION_SLACK - 1.0:
            where = f"audio data stops near {last:.1f} s" if last is not None else "audio data is missing"
            raise CorruptAudio(f"{path}: truncated: the container declares {info.duration:.1f} s, but {where}")


# --------------------------------------------------------------------------- samples
_SCALE = {"s16": 1 / 32768, "s32": 1 / 2147483648, "s64": 1 / 9223372036854775808, "flt": 1.0, "dbl": 1.0}


def _frame_samples(frame: av.AudioFrame, channel: int | None, path: Path) -> np.ndarray:
    """One decoded frame as float32 mono (mixed) or the picked channel."""
    arr = frame.to_ndarray()
    fmt = frame.format
    channels = len(frame.layout.channels)
    if not fmt.is_planar:  # interleaved: (1, samples * channels)
        arr = arr.reshape(-1, channels).T
    base = fmt.name.rstrip("p")
    if base == "u8":
        x = (arr.astype(np.float32) - 128.0) * (1 / 128)
    else:
        x = arr.astype(np.float32, copy=False)
        if _SCALE.get(base, 1.0) != 1.0:
            x = x * np.float32(_SCALE[base])
    if channel is not None:
        if channel >= channels:
            raise CorruptAudio(f"{path}: channel count changes mid-stream (now {channels}, no channel {channel})")
        return np.ascontiguousarray(x[channel])
    return x[0].copy() if channels == 1 else x.mean(axis=0, dtype=np.float32)


class _Overshot(Exception):  # noqa: N818 - internal: a seek landed after its target
    pass


def read(path: Path, info: AvInfo, channel: int | None, start: float, end: float | None) -> Iterator[np.ndarray]:
    """Float32 mono samples at ``info.sample_rate`` covering [start, end), in decoded pieces.

    Positions are counted in samples from the first frame decoded, which is sample 0 of
    a read from the beginning; after a (keyframe-backward) seek, a frame's time stamp
    places it (see ``_place``). A seek that lands after its target or on a frame without a time
    stamp (a file without a usable index) falls back to decoding from the beginning.
    """
    rate = info.sample_rate
    first = max(0, int(round(start * rate)))
    last = None if end is None else int(round(end * rate))
    if start - PREROLL > 0:
        try:
            yield from _decode(path, info, channel, first, last, seek_to=start - PREROLL)
            return
        except _Overshot:
            pass  # raised at the first frame, before anything was yielded
    yield from _decode(path, info, channel, first, last, seek_to=None)


def _decode(path: Path, info: AvInfo, channel: int | None, first: int, last: int | None,
            seek_to: float | None) -> Iterator[np.ndarray]:
    rate = info.sample_rate
    pos = 0  # source-rate index of the next decoded sample
    with contextlib.closing(_open(path)) as c:
        s = _audio_stream(c, path)
        tb: Fraction = s.time_base
        origin = info.origin
        placed = seek_to is None
        try:
            if seek_to is not None:
                c.seek(origin + int(seek_to / tb), stream=s, backward=True)
            dropped = False
            for frame in c.decode(s):
                if not placed and not dropped:
                    # The first frame after a seek may have lost samples at its start that
                    # its time stamp does not account for (Opus applies its pre-skip again
                    # after a Matroska seek: 1 ms off). It is inside the pre-roll: skip it,
                    # and place the stream by the next one.
                    dropped = True
                    continue
                if not placed:
                    if frame.pts is None:
                        raise _Overshot
                    pos = _place(float((frame.pts - origin) * tb) * rate, frame.samples, info, float(tb) * rate)
                    if pos > first:
                        raise _Overshot
                    placed = True
                if frame.sample_rate != rate:
                    raise CorruptAudio(f"{path}: sample rate changes mid-stream ({rate} -> {frame.sample_rate} Hz)")
                n = frame.samples
                if pos + n <= first:  # before the wanted span (pre-roll): not even converted
                    pos += n
                    continue
                x = _frame_samples(frame, channel, path)
                lo, hi = max(0, first - pos), n if last is None else min(n, last - pos)
                pos += n
                if hi > lo:
                    yield x[lo:hi]
                if last is not None and pos >= last:
                    return
        except _DAMAGE as e:
            if not placed:
                raise _Overshot from None  # the seek itself failed: decode from the beginning
            raise CorruptAudio(f"{path}: corrupt or truncated audio data at {pos / rate:.1f} s "
                               f"({_message(e)})") from None
    _check_end(path, info, pos / rate, None if last is None else last / rate)


def _place(raw: float, n: int, info: AvInfo, tick: float) -> int:
    """The sample index of a frame found by seeking, from its time stamp.

    Matroska/WebM and ASF stamp packets in whole milliseconds (48 samples at 48 kHz),
    so the stamp alone misplaces a span by up to a millisecond. Codecs cut the signal
    into frames of one size after the first (AAC 1024, Opus 960, WMA 2048, MP3 1152), so
    the true index is on the grid first_samples + k * n: snap to it when it is within
    one tick of the stamp; a stream of varying frame sizes keeps the stamp's precision.
    """
    if tick <= 1.0 or raw < info.first_samples / 2:
        return max(0, int(round(raw)))
    k = round((raw - info.first_samples) / n)
    snapped = info.first_samples + k * n
    return snapped if abs(snapped - raw) <= tick + 0.5 else max(0, int(round(raw)))


def _check_end(path: Path, info: AvInfo, reached: float, end: float | None) -> None:
    """At the end of the data: was it the end the index promised?"""
    if not info.exact:
        return
    wanted = info.duration if end is None else min(end, info.duration)
    if reached < wanted - TRUNCATION_SLACK:
        raise CorruptAudio(f"{path}: truncated: audio ends at {reached:.1f} s of the {info.duration:.1f} s "
                           "its container declares")


def versions() -> str:
    return f"PyAV {av.__version__} (libavcodec {'.'.join(map(str, av.library_versions['libavcodec']))})"


__all__ = ["AvInfo", "AudioError", "Unrecognised", "check_complete", "looks_like_media", "probe", "read", "versions"]
