#!/usr/bin/env python3
"""Word error rate of whisper weight variants (f16, q8_0, q5_1, ...) on named sets, greedy.

Every model transcribes every file of every set through the library (Silero VAD regions,
one lane, greedy unless ``--beam``), files in turn, the models in turn per file. Per set
and model it reports the words, the WER against human references where a file has one
(``<stem>.txt`` plain text or ``<stem>.stm`` beside the audio, or ``--ref AUDIO=REF``),
and the word edits against the first model's output (on sets without references that
bounds the WER change: |WER(q) - WER(f16)| <= edits(q, f16) / reference words).
Text is compared lower-cased without punctuation (bench_words.norm).

A set is ``NAME=PATH[,PATH...]`` (files, or folders whose .wav/.flac files are taken in
name order, at most ``--max-files`` each) with an optional language, ``NAME:LANG=...``
(default: whisper detects it per file).

    python scripts/bench_quant.py --models base base-q8_0 base-q5_1 \\
        --set en-ref:en=/tmp/refs/jfk.wav,/tmp/refs/sample.wav \\
        --set multilingual=../shared/data/multilingual \\
        --set ls-other:en=../shared/data/librispeech --max-files 4 --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_asr import reference_words  # noqa: E402
from bench_words import edit_distance, norm  # noqa: E402

from whispdiar import models  # noqa: E402
from whispdiar.asr.vad import SileroVad  # noqa: E402
from whispdiar.asr.whisper import Transcriber
from whispdiar.audio.read import info  # noqa: E402

AUDIO = (".wav", ".flac")


def parse_set(spec: str, max_files: int) -> tuple[str, str | None, list[Path]]:
    name, _, paths = spec.partition("=")
    name, _, lang = name.partition(":")
    files: list[Path] = []
    for p in (Path(x) for x in paths.split(",") if x):
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.suffix in AUDIO)
            files += found[:max_files] if max_files else found
        else:
            files.append(p)
    if not name or not files:
        raise SystemExit(f"--set {spec!r}: give NAME[:LANG]=FILES_OR_FOLDERS with audio in them")
    return name, lang or None, files


def reference_of(audio: Path, explicit: dict[Path, Path]) -> list[str] | None:
    ref = explicit.get(audio.resolve())
    for cand in ([ref] if ref else [audio.with_suffix(".stm"), audio.with_suffix(".txt")]):
        if cand.is_file():
            return reference_words(cand)
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["base", "base-q8_0", "base-q5_1"],
                    help="registry names or ggml files; edits are counted against the first")
    ap.add_argument("--set", dest="sets", action="append", required=True, help="NAME[:LANG]=PATH[,PATH...]")
    ap.add_argument("--ref", action="append", default=[], help="AUDIO=REFERENCE (.txt or .stm)")
    ap.add_argument("--max-files", type=int, default=0, help="per folder (0 = all)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--beam", type=int, default=1)
    ap.add_argument("--json", type=Path, help="write every hypothesis and score here")
    args = ap.parse_args()
    explicit = {Path(a).resolve(): Path(r) for a, _, r in (x.partition("=") for x in args.ref)}
    sets = [parse_set(s, args.max_files) for s in args.sets]
    vad = SileroVad(models.resolve("silero-vad"), threads=1)
    names = [Path(m).name if Path(m).suffix else m for m in args.models]
    transcribers = [Transcriber(models.resolve(m), threads=args.threads, vad=vad, lanes=1, beam_size=args.beam)
                    for m in args.models]
    out: dict[str, dict] = {}
    try:
        for set_name, lang, files in sets:
            rows = {n: {"hyps": [], "cpu": 0.0, "wall": 0.0} for n in names}
            refs = [reference_of(f, explicit) for f in files]
            duration = 0.0
            for f in files:
                d = info(f).duration
                duration += d
                regions, probs = transcribers[0].speech_regions(f, d)
                for n, t in zip(names, transcribers, strict=True):  # the models in turn per file
                    t0, c0 = time.perf_counter(), time.process_time()
                    tr = t.transcribe(f, language=lang, regions=regions, probs=probs)
                    rows[n]["wall"] += time.perf_counter() - t0
                    rows[n]["cpu"] += time.process_time() - c0
                    rows[n]["hyps"].append([w for w in (norm(x.text) for s in tr.segments for x in s.words) if w])
            first = rows[names[0]]["hyps"]
            scored = [(h, r) for h, r in zip(first, refs, strict=True) if r is not None]
            n_ref = sum(len(r) for r in refs if r is not None)
            print(f"\n## {set_name} ({len(files)} files, {duration / 60:.1f} min, language {lang or 'detected'}, "
                  f"{n_ref or 'no'} reference words)")
            print("| model | words | WER | edits vs " + names[0] + " | CPU s |\n|---|---|---|---|---|")
            for n in names:
                r = rows[n]
                words = sum(len(h) for h in r["hyps"])
                wer = "-"
                if scored:
                    pairs = zip(r["hyps"], refs, strict=True)
                    edits = sum(edit_distance(h, ref) for h, ref in pairs if ref is not None)
                    r["wer"], r["ref_edits"] = edits / n_ref, edits
                    wer = f"{100 * edits / n_ref:.1f} % ({edits}/{n_ref})"
                changed = sum(edit_distance(h, f) for h, f in zip(r["hyps"], first, strict=True))
                base_words = sum(len(h) for h in first)
                r["edits_vs_first"], r["words"] = changed, words
                print(f"| {n} | {words} | {wer} | {changed} ({100 * changed / max(base_words, 1):.1f} %) | "
                      f"{r['cpu']:.1f} |", flush=True)
            out[set_name] = {"files": [str(f) for f in files], "language": lang, "duration": duration,
                             "reference_words": n_ref, "models": rows}
    finally:
        for t in transcribers:
            t.close()
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
