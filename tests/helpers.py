"""Helpers shared by test modules (plain functions; fixtures live in conftest.py)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

from whispdiar import errors, models


def models_installed(*names: str) -> bool:
    """True when every named model resolves (installed and intact)."""
    try:
        for n in names:
            models.resolve(n)
    except errors.ModelError:
        return False
    return True


def encode(path: Path, x: np.ndarray, rate_in: int, codec: str, *, rate: int | None = None, video: bool = False,
           bit_rate: int | None = None, container: str | None = None) -> Path:
    """Encode float samples ``x`` ((frames,) or (frames, channels) at ``rate_in``) with PyAV.

    ``codec`` is an FFmpeg encoder name (aac, libopus, libmp3lame, libopencore_amrnb, ...);
    ``rate`` the encoded sample rate (resampled by PyAV: test material, not the code under
    test); ``video`` adds an MPEG-4 part 2 video stream of a few 64x64 frames first,
    as in a screen recording. The container follows the suffix unless ``container`` says.
    """
    import av

    data = np.asarray(x, np.float32)
    data = data[:, None] if data.ndim == 1 else data
    layout = {1: "mono", 2: "stereo"}[data.shape[1]]
    rate = rate or rate_in
    with av.open(str(path), "w", format=container) as out:
        vs = _video_stream(out) if video else None
        s = out.add_stream(codec, rate=rate, layout=layout)
        if bit_rate:
            s.codec_context.bit_rate = bit_rate
        cc = s.codec_context
        if vs is not None:
            _write_video(out, vs)
        resampler = av.AudioResampler(format=cc.codec.audio_formats[0].name, layout=layout, rate=rate,
                                      frame_size=cc.frame_size or 1024)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data.T), format="fltp", layout=layout)
        frame.sample_rate = rate_in
        done = 0
        for f in resampler.resample(frame) + resampler.resample(None):
            f.pts, f.time_base = done, Fraction(1, rate)  # time stamps, so the muxer can interleave
            done += f.samples
            for pkt in s.encode(f):
                out.mux(pkt)
        for pkt in s.encode(None):
            out.mux(pkt)
    return path


def video_only(path: Path) -> Path:
    """A video file with no audio stream (a screen recording without sound)."""
    import av

    with av.open(str(path), "w") as out:
        _write_video(out, _video_stream(out))
    return path


def _video_stream(out):  # noqa: ANN001, ANN202 - PyAV container and stream
    vs = out.add_stream("mpeg4", rate=2)
    vs.width, vs.height, vs.pix_fmt = 64, 64, "yuv420p"
    return vs


def _write_video(out, vs, frames: int = 6) -> None:  # noqa: ANN001 - PyAV container and stream
    """A few 64x64 grey frames, flushed."""
    import av

    for i in range(frames):
        vf = av.VideoFrame.from_ndarray(np.full((64, 64, 3), 40 * i, np.uint8), format="rgb24")
        vf.pts = i
        for pkt in vs.encode(vf):
            out.mux(pkt)
    for pkt in vs.encode():
        out.mux(pkt)


def streamed_peak(path: Path) -> tuple[int, int]:
    """(samples, peak bytes traced by tracemalloc) of reading ``path`` through audio.stream."""
    import tracemalloc

    from whispdiar.audio import read as audio

    tracemalloc.start()
    try:
        total = sum(len(b) for b in audio.stream(path))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return total, peak
