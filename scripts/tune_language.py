#!/usr/bin/env python3
"""Check the live language rule (``LANGUAGE_SURE``, ``LANGUAGE_HEARD``) across data sets.

A live session with a multilingual model and no ``--language`` decodes each line in the
language whisper hears in all the speech so far (up to 30 s), and keeps it once its
probability reaches ``sure`` or ``heard`` seconds of speech have gone by. Here every
file is cut as ``LiveSession`` cuts it (Silero VAD endpointing), whisper's guess is
taken after each utterance (``Transcriber.detect_language``, the same call), and each
rule is replayed over that trace. Per rule and set:

- ``wrong kept``: files whose kept language is not the file's;
- ``wrong lines``: lines decoded in a language that is not the file's (before the
  language was kept, or after a wrong one was);
- ``heard``: median seconds of speech before the language is kept.

    python scripts/tune_language.py --set ami=/work/shared/data/ami_debug:en \\
        --set multi=/work/shared/data/multilingual:auto --rule 0.9,20 --rule 0.8,10

``auto`` takes each file's language from its name (``de.wav``: de).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from tune_live import cut_stream  # noqa: E402

from whispdiar import models  # noqa: E402
from whispdiar.asr.chunks import MAX_CHUNK_SECONDS  # noqa: E402
from whispdiar.asr.vad import SileroVad  # noqa: E402
from whispdiar.asr.whisper import Transcriber  # noqa: E402
from whispdiar.audio.read import load  # noqa: E402
from whispdiar.live.session import LANGUAGE_HEARD, LANGUAGE_SURE  # noqa: E402
from whispdiar.live.utterances import Endpointer  # noqa: E402

TRACE_SECONDS = 40.0  # no rule looks further; later lines are in the kept language


def trace(whisper: Transcriber, vad: SileroVad, x: np.ndarray) -> list[tuple[float, str | None, float]]:
    """(speech heard so far, whisper's language, its probability) after each utterance,
    up to ``TRACE_SECONDS`` of speech (then (s, None, 1.0) for each later utterance)."""
    heard, seconds, out = [], 0.0, []
    for u in cut_stream(Endpointer(vad.stream()), x):
        if seconds < MAX_CHUNK_SECONDS:
            heard.append(u.samples)
        seconds += u.speech_seconds
        if seconds > TRACE_SECONDS and out:
            out.append((seconds, out[-1][1], 1.0))
            continue
        code, p = whisper.detect_language(np.concatenate(heard)[: 30 * 16000], 2)
        out.append((seconds, code, p))
    return out


def replay(tr: list, sure: float, heard: float, truth: str) -> tuple[str | None, int, float]:
    """(kept language, lines in a wrong language, speech heard when kept)."""
    wrong = 0
    for k, (seconds, code, p) in enumerate(tr):
        wrong += code != truth
        if p >= sure or seconds >= heard:
            return code, wrong + (len(tr) - 1 - k) * (code != truth), seconds
    return (tr[-1][1] if tr else None), wrong, float("inf")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", action="append", required=True, metavar="NAME=FOLDER:LANG")
    ap.add_argument("--rule", action="append", default=[], metavar="SURE,HEARD")
    ap.add_argument("--model", default="base")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/wd-tune-language"))
    ap.add_argument("--max-files", type=int, default=12)
    args = ap.parse_args()
    rules = [tuple(map(float, r.split(","))) for r in args.rule] or [(LANGUAGE_SURE, LANGUAGE_HEARD)]
    args.cache.mkdir(parents=True, exist_ok=True)
    whisper = vad = None
    traces: dict[str, list] = {}
    try:
        for spec in args.set:
            name, rest = spec.split("=", 1)
            folder, lang = rest.rsplit(":", 1)
            files = sorted(p for p in Path(folder).iterdir() if p.suffix in (".wav", ".flac"))[: args.max_files]
            for f in files:
                key = f"{name}-{f.stem}-{args.model}"
                cached = args.cache / f"{key}.json"
                if not cached.exists():
                    if whisper is None:
                        whisper = Transcriber(models.resolve(args.model), threads=2, lanes=1)
                        vad = SileroVad(models.resolve("silero-vad"), threads=1, lanes=1)
                    cached.write_text(json.dumps(trace(whisper, vad, load(f))))
                truth = f.stem.split("-")[0] if lang == "auto" else lang
                tr = json.loads(cached.read_text())
                if tr:  # a file with no utterance has no line to decode
                    traces.setdefault(name, []).append((truth, tr))
    finally:
        if whisper is not None:
            whisper.close()
    print("| rule (sure, heard s) | " + " | ".join(f"{s}: wrong kept, wrong lines / lines, heard" for s in traces)
          + " |")
    print("|---|" + "---|" * len(traces))
    for sure, heard in rules:
        cells = []
        for _name, items in traces.items():
            kept_wrong = lines_wrong = lines = 0
            when = []
            for truth, tr in items:
                tr = [tuple(t) for t in tr]
                code, wrong, at = replay(tr, sure, heard, truth)
                kept_wrong += code != truth
                lines_wrong += wrong
                lines += len(tr)
                when.append(at)
            cells.append(f"{kept_wrong}/{len(items)}, {lines_wrong}/{lines}, {np.median(when):.1f} s")
        print(f"| {sure:g}, {heard:g} | " + " | ".join(cells) + " |")
    for name, items in traces.items():  # the first guesses, for the record
        firsts = [f"{t[0][1]} {t[0][2]:.2f}" for _, t in items if t]
        print(f"{name}: first guesses {', '.join(firsts)}", file=sys.stderr)


if __name__ == "__main__":
    main()
