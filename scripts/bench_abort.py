#!/usr/bin/env python3
"""A/B: whisper.cpp's abort callback on vs off, full pipeline (base, 2 threads), interleaved.

The callback takes the GIL once per decoder step; this measures what that costs on a
152 s recording of the tests/data readers (each utterance twice), three runs each way.

    python scripts/bench_abort.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from whispdiar import models  # noqa: E402
from whispdiar.pipeline import Pipeline  # noqa: E402


class _NoAbort:
    """The binding with assign_abort_callback made a no-op."""

    def __init__(self, real: object):
        self._real = real

    def __getattr__(self, name: str) -> object:
        return getattr(self._real, name)

    def assign_abort_callback(self, params: object, fn: object) -> None:
        pass


def main() -> None:
    parts = []
    for f in sorted((ROOT / "tests" / "data").glob("ls-*.flac")) * 2:
        x, _ = sf.read(f, dtype="float32")
        parts += [x, np.zeros(6400, np.float32)]
    audio = Path("/tmp/bench-abort.wav")
    sf.write(audio, np.concatenate(parts), 16000, subtype="PCM_16")
    with Pipeline(models.resolve("base"), models.resolve("segmentation-3.0"), models.resolve("campplus"),
                  models.resolve("silero-vad"), threads=2) as p:
        p.run(audio)  # warm-up
        real = p.transcriber._pw
        times: dict[str, list[float]] = {"on": [], "off": []}
        for _ in range(3):
            for mode in ("on", "off"):
                p.transcriber._pw = real if mode == "on" else _NoAbort(real)
                t = time.perf_counter()
                p.run(audio)
                times[mode].append(time.perf_counter() - t)
                print(mode, f"{times[mode][-1]:.2f} s", flush=True)
        p.transcriber._pw = real
    for mode, v in times.items():
        print(mode, "median", f"{sorted(v)[1]:.2f} s", [round(x, 2) for x in v])


if __name__ == "__main__":
    main()
