#!/usr/bin/env python3
"""Whisper alone through the library: wall time, CPU, RSS (and WER) per lanes x beam size.

One lane decodes one chunk at a time on all the threads; two lanes decode two chunks at
once, one thread each, on two whisper.cpp contexts (the pipeline's default once
diarization is done). ``--beam`` compares greedy decoding (1) with beam search of other
widths. With ``--reference`` (one per audio file, in the same order: a plain text file or
an STM, whose sixth field on is the text) it reports the word error rate against it
(lower-cased, punctuation stripped, bench_words.norm) and how many of the reference words
changed compared with the first beam size. RSS is polled every 10 s.

    python scripts/bench_asr.py m10.wav --model base --language en --lanes 1 2
    python scripts/bench_asr.py sample.wav jfk.wav --reference sample.stm jfk.txt \\
        --model tiny.en --threads 1 --lanes 1 --beam 1 2 5
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_words import edit_distance, norm  # noqa: E402

from whispdiar import models  # noqa: E402
from whispdiar.asr.vad import SileroVad  # noqa: E402
from whispdiar.asr.whisper import Transcriber
from whispdiar.audio.read import info  # noqa: E402


def reference_words(path: Path) -> list[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    if path.suffix == ".stm":
        lines = [ln.split(maxsplit=5)[5] for ln in lines if len(ln.split(maxsplit=5)) == 6]
    return [w for w in (norm(t) for ln in lines for t in ln.split()) if w]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("audio", type=Path, nargs="+")
    ap.add_argument("--model", default="base")
    ap.add_argument("--language", default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lanes", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--beam", type=int, nargs="+", default=[1], help="beam sizes (1 = greedy)")
    ap.add_argument("--reference", type=Path, nargs="+", help="reference text per audio file, same order")
    args = ap.parse_args()
    if args.reference and len(args.reference) != len(args.audio):
        ap.error("give one --reference per audio file")
    refs = [reference_words(p) for p in args.reference] if args.reference else None
    duration = sum(info(a).duration for a in args.audio)
    vad = SileroVad(models.resolve("silero-vad"), threads=1)
    proc = psutil.Process()
    regions: dict[Path, tuple] = {}
    first_hyps: list[list[str]] | None = None
    for lanes in args.lanes:
        for beam in args.beam:
            samples: list[int] = []
            stop = threading.Event()

            def watch(samples: list[int] = samples, stop: threading.Event = stop) -> None:
                while not stop.is_set():
                    samples.append(proc.memory_info().rss // 1_000_000)
                    stop.wait(10)

            threading.Thread(target=watch, daemon=True).start()
            wall = cpu = 0.0
            hyps: list[list[str]] = []
            with Transcriber(models.resolve(args.model), threads=args.threads, vad=vad, lanes=lanes,
                             beam_size=beam) as t:
                for a in args.audio:
                    if a not in regions:
                        regions[a] = t.speech_regions(a, info(a).duration)
                    r, p = regions[a]
                    t0, c0 = time.perf_counter(), time.process_time()
                    tr = t.transcribe(a, language=args.language, regions=r, probs=p)
                    wall, cpu = wall + time.perf_counter() - t0, cpu + time.process_time() - c0
                    hyps.append([w for w in (norm(x.text) for s in tr.segments for x in s.words) if w])
            stop.set()
            words = sum(len(h) for h in hyps)
            line = (f"lanes={lanes} threads={args.threads} beam={beam}: wall {wall:.1f} s (RTF {wall / duration:.3f}), "
                    f"CPU {cpu:.1f} s, {words} words, RSS {min(samples)}-{max(samples)} MB")
            if refs is not None:
                edits = sum(edit_distance(h, r) for h, r in zip(hyps, refs, strict=True))
                n = sum(len(r) for r in refs)
                line += f", WER {100 * edits / n:.1f} % ({edits}/{n})"
            if first_hyps is None:
                first_hyps = hyps
            else:
                changed = sum(edit_distance(h, f) for h, f in zip(hyps, first_hyps, strict=True))
                line += f", {changed} word edits from beam={args.beam[0]}"
            print(line, flush=True)


if __name__ == "__main__":
    main()
