"""Audio input: any recording FFmpeg or libsndfile reads, as 16 kHz mono float32.

- ``read``: the public loader (``load``, ``info``, ``stream``: checks, resampling, one contract);
- ``decode``: decoding through PyAV (FFmpeg's libraries in-process) for what libsndfile cannot read.
"""

from .read import SAMPLE_RATE, AudioInfo, info, load, stream

__all__ = ["SAMPLE_RATE", "AudioInfo", "info", "load", "stream"]
