#!/usr/bin/env python3
"""Whisper alone through the library: wall time, CPU and RSS for 1 and 2 lanes.

One lane decodes one chunk at a time on all the threads; two lanes decode two chunks at
once, one thread each, on two whisper.cpp contexts (the pipeline's default once
diarization is done). RSS is polled every 10 s.

    python scripts/bench_asr.py m10.wav --model base --language en --lanes 1 2
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from whispdiar import models  # noqa: E402
from whispdiar.audio import info  # noqa: E402
from whispdiar.transcription import Transcriber  # noqa: E402
from whispdiar.vad import SileroVad  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("audio", type=Path)
    ap.add_argument("--model", default="base")
    ap.add_argument("--language", default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lanes", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()
    duration = info(args.audio).duration
    vad = SileroVad(models.resolve("silero-vad"), threads=1)
    proc = psutil.Process()
    regions = probs = None
    for lanes in args.lanes:
        samples: list[int] = []
        stop = threading.Event()

        def watch(samples: list[int] = samples, stop: threading.Event = stop) -> None:
            while not stop.is_set():
                samples.append(proc.memory_info().rss // 1_000_000)
                stop.wait(10)

        threading.Thread(target=watch, daemon=True).start()
        with Transcriber(models.resolve(args.model), threads=args.threads, vad=vad, lanes=lanes) as t:
            if regions is None:
                regions, probs = t.speech_regions(args.audio, duration)
            t0, c0 = time.perf_counter(), time.process_time()
            tr = t.transcribe(args.audio, language=args.language, regions=regions, probs=probs)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        stop.set()
        words = sum(len(s.words) for s in tr.segments)
        print(f"lanes={lanes} threads={args.threads}: wall {wall:.1f} s (RTF {wall / duration:.3f}), "
              f"CPU {cpu:.1f} s, {words} words, RSS {min(samples)}-{max(samples)} MB", flush=True)


if __name__ == "__main__":
    main()
