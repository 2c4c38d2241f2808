"""Where live audio comes from, and the capture thread that records it.

A source yields raw pieces of its input (``read``) and turns them into 16 kHz mono
float32 (``convert``); the recorder writes the raw pieces to the saved WAV as they
come. Raw PCM on standard input is saved as it arrived (same rate, channels and sample
format: the WAV's data is the input, byte for byte); decoded streams (PyAV: a WAV from
``arecord``, an Ogg stream, a URL) and the microphone are saved as 16-bit PCM at their
own rate.

The capture thread only reads, records and hands samples to the session (``feed``
never blocks), so processing can never make it miss input.
"""

from __future__ import annotations

import contextlib
import queue
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

import numpy as np
import soundfile as sf

from ..audio.read import SAMPLE_RATE
from ..errors import AudioError, UsageError, WhispdiarError

RAW_FORMATS = {"s16le": ("<i2", "PCM_16", 32768.0), "s32le": ("<i4", "PCM_32", 2147483648.0),
               "f32le": ("<f4", "FLOAT", 1.0)}
READ_BYTES = 1 << 13  # a pipe read returns what is there, up to this (0.26 s of 16 kHz s16 mono)


class MissingDevice(WhispdiarError):
    """The microphone cannot be used (no sounddevice/PortAudio, no such device). Exit 1."""


@dataclass(frozen=True, slots=True)
class Layout:
    """What the saved WAV holds: rate, channels, libsndfile subtype."""

    rate: int
    channels: int
    subtype: str


class Source(Protocol):
    layout: Layout
    name: str

    def read(self) -> np.ndarray | None:
        """The next piece of input as [frames, channels] in the saved WAV's sample type
        (blocks until there is some); None at the end."""

    def close(self) -> None: ...


class _Resampler:
    """Mono float32 at 16 kHz from [frames, channels] pieces at any rate (streaming)."""

    def __init__(self, rate: int, scale: float):
        import soxr

        self.scale = scale
        self._rs = soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32") if rate != SAMPLE_RATE else None

    def __call__(self, block: np.ndarray, last: bool = False) -> np.ndarray:
        x = block.astype(np.float32)
        x = (x.mean(axis=1) if x.shape[1] > 1 else x[:, 0]) / np.float32(self.scale)
        if self._rs is None:
            return x
        return self._rs.resample_chunk(x, last=last)


class RawPcm:
    """Raw interleaved PCM from a byte stream (``--format s16le --rate 16000``)."""

    def __init__(self, stream: BinaryIO, fmt: str, rate: int, channels: int = 1, name: str = "stdin"):
        if fmt not in RAW_FORMATS:
            raise UsageError(f"unknown raw format '{fmt}' (choose from: {', '.join(RAW_FORMATS)})")
        if not 1000 <= rate <= 768000:
            raise UsageError(f"--rate {rate}: not a sample rate (1000 to 768000 Hz)")
        if not 1 <= channels <= 32:
            raise UsageError(f"--channels {channels}: must be 1 to 32")
        self._stream = stream
        self._dtype, subtype, scale = RAW_FORMATS[fmt]
        self._frame = np.dtype(self._dtype).itemsize * channels
        self.layout = Layout(rate, channels, subtype)
        self.name = name
        self._rest = b""
        self.convert = _Resampler(rate, scale)

    def read(self) -> np.ndarray | None:
        while True:
            read1 = getattr(self._stream, "read1", self._stream.read)
            data = read1(READ_BYTES)
            if not data:
                return None  # a trailing partial frame is not a sample
            data = self._rest + data
            n = len(data) // self._frame * self._frame
            self._rest = data[n:]
            if n:
                return np.frombuffer(data[:n], self._dtype).reshape(-1, self.layout.channels)

    def close(self) -> None:
        pass


class Decoded:
    """Any stream PyAV decodes: a pipe (WAV from arecord, Ogg, ...), a URL or a file."""

    def __init__(self, target: str | BinaryIO, name: str):
        import av

        self.name = name
        try:
            self._container = av.open(target, mode="r", metadata_errors="ignore", timeout=10.0)
        except (av.error.FFmpegError, OSError, ValueError) as e:
            text = (getattr(e, "strerror", None) or str(e)).splitlines()[0]
            raise AudioError(f"{name}: cannot open it as audio ({text})") from None
        audio = list(self._container.streams.audio)
        if not audio:
            self._container.close()
            raise AudioError(f"{name}: has no audio stream")
        self._stream = audio[0]
        rate = int(self._stream.codec_context.sample_rate or SAMPLE_RATE)
        channels = int(self._stream.codec_context.channels or 1)
        self.layout = Layout(rate, channels, "PCM_16")
        # decoded to interleaved s16 at the stream's own rate: that is what is saved
        self._resampler = av.AudioResampler(format="s16", layout="mono" if channels == 1 else "stereo", rate=rate)
        self.layout = Layout(rate, 1 if channels == 1 else 2, "PCM_16")
        self._frames = self._decode()
        self.convert = _Resampler(rate, 32768.0)

    def _decode(self) -> Iterator[np.ndarray]:
        import av

        try:
            for frame in self._container.decode(self._stream):
                for f in self._resampler.resample(frame):
                    yield f.to_ndarray().reshape(-1, self.layout.channels)
        except av.error.FFmpegError as e:
            raise AudioError(f"{self.name}: stream damaged ({str(e).splitlines()[0]})") from None

    def read(self) -> np.ndarray | None:
        return next(self._frames, None)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._container.close()


class Microphone:
    """A sound card input through sounddevice (PortAudio), 16 kHz mono 16-bit."""

    def __init__(self, device: str | None):
        try:
            import sounddevice as sd
        except (ImportError, OSError) as e:  # OSError: the module is there, PortAudio is not
            raise MissingDevice(
                "--device needs the sounddevice package and the PortAudio library: "
                "pip install 'whispdiar[mic]' and, on Debian/Ubuntu, apt install libportaudio2 "
                f"({str(e).splitlines()[0]})") from None
        self.name = "microphone"
        self.layout = Layout(SAMPLE_RATE, 1, "PCM_16")
        self.convert = _Resampler(SAMPLE_RATE, 32768.0)
        self._q: queue.SimpleQueue[np.ndarray | None] = queue.SimpleQueue()
        dev: int | str | None = None if device in (None, "", "default") else device
        if isinstance(dev, str) and dev.isdigit():
            dev = int(dev)
        try:
            self._sd = sd.InputStream(samplerate=SAMPLE_RATE, channels=1, dtype="int16", device=dev,
                                      blocksize=1600, callback=self._callback)
            self._sd.start()
        except Exception as e:  # PortAudio's errors: no such device, busy, ...
            raise MissingDevice(f"microphone {device or 'default'}: {str(e).splitlines()[0]}") from None

    def _callback(self, indata: np.ndarray, frames: int, time: object, status: object) -> None:
        self._q.put(indata.copy())  # PortAudio's thread: copy and leave at once

    def read(self) -> np.ndarray | None:
        return self._q.get()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._sd.stop()
            self._sd.close()
        self._q.put(None)


def open_source(spec: str, raw_format: str | None, rate: int, channels: int, device: str | None) -> Source:
    """The source for the command line's input: ``-`` (stdin), a URL or file, or a device."""
    if device is not None:
        if spec not in ("", None):
            raise UsageError("give an input (- or a URL) or --device, not both")
        return Microphone(device)
    if not spec:
        raise UsageError("no input: give - (standard input), a stream URL, or --device [NAME]")
    if spec == "-":
        if sys.stdin is None or sys.stdin.isatty():
            raise UsageError("'-' reads audio from standard input, but it is a terminal (pipe audio in, "
                             "or use --device for the microphone)")
        if raw_format is not None:
            return RawPcm(sys.stdin.buffer, raw_format, rate, channels)
        return Decoded(sys.stdin.buffer, "stdin")
    if raw_format is not None:
        raise UsageError("--format raw PCM applies to standard input (-)")
    if "://" not in spec and not Path(spec).exists():
        raise UsageError(f"{spec}: no such file, and not a URL (scheme://...)")
    return Decoded(spec, spec)


class Recorder:
    """The saved recording: every piece the source gives, written as it comes."""

    def __init__(self, path: Path, layout: Layout):
        try:
            self._f = sf.SoundFile(str(path), "w", samplerate=layout.rate, channels=layout.channels,
                                   subtype=layout.subtype, format="WAV")
        except (sf.LibsndfileError, OSError, RuntimeError) as e:
            from ..errors import OutputError

            raise OutputError(f"cannot write the recording {path}: {e}") from None
        self.path = path
        self.frames = 0
        self._lock = threading.Lock()

    def write(self, block: np.ndarray) -> None:
        with self._lock:
            if self._f is not None:
                self._f.write(block)
                self.frames += len(block)

    def close(self) -> None:
        """Finish the WAV (its header gets the final length). Later writes are dropped."""
        with self._lock:
            if self._f is not None:
                self._f.close()
                self._f = None


class Capture:
    """The capture thread: source -> recorder -> ``feed``; ``on_end`` when the input ends."""

    def __init__(self, source: Source, recorder: Recorder, feed: Callable[[np.ndarray], None],
                 on_end: Callable[[BaseException | None], None]):
        self.source, self.recorder, self._feed, self._on_end = source, recorder, feed, on_end
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="live-capture", daemon=True)

    def start(self) -> Capture:
        self.thread.start()
        return self

    def stop(self) -> None:
        """Stop taking input (Ctrl-C); what was read so far stays in the recording."""
        self._stop.set()
        self.source.close()

    def _run(self) -> None:
        error: BaseException | None = None
        convert = self.source.convert  # type: ignore[attr-defined]
        try:
            while not self._stop.is_set():
                block = self.source.read()
                if block is None or self._stop.is_set():
                    break
                self.recorder.write(block)
                self._feed(convert(block))
            tail = convert(np.zeros((0, self.source.layout.channels), np.int16), last=True)
            if len(tail):
                self._feed(tail)
        except WhispdiarError as e:
            error = e
        except Exception as e:  # a broken pipe or device mid-stream: the recording so far is kept
            error = AudioError(f"{self.source.name}: input failed ({str(e).splitlines()[0] if str(e) else e!r})")
        self._on_end(error)
