"""Long-recording memory benchmark: peak RSS and wall time on a multi-hour file.

Builds a long 16 kHz mono 16-bit WAV on disk from real speech (AMI meeting excerpts and
LibriSpeech utterances, looped with random gain, speed and order so no two minutes are
identical), then measures, each in a fresh child process:

  loader      whispdiar.audio.read.stream() over the whole file (should be flat, ~tens of MB)
  diarize     whispdiar diarize -f rttm
  transcribe  whispdiar transcribe --model tiny.en -f json   (when the command exists)
  asr-lib     whispdiar.asr.whisper.Transcriber (tiny.en + Silero VAD) called directly
  diarize-lib whispdiar.diarization.diarizer.Diarizer called directly (--embedding FILE if not installed)

Peak RSS is the kernel's high-water mark of the child (getrusage RUSAGE_CHILDREN, read in
a one-child wrapper), cross-checked by polling with psutil. The WAV is deleted afterwards
unless --keep. Results go to stdout as a markdown table and to --json.

  python scripts/bench_memory.py --hours 4 --only loader,diarize
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import soundfile as sf

SR = 16000
ROOT = Path(__file__).resolve().parent.parent

# Runs its argv as one child and prints the child's peak RSS (kB): RUSAGE_CHILDREN of a
# process with exactly one child is that child's high-water mark.
WRAPPER = (
    "import resource, subprocess, sys\n"
    "rc = subprocess.call(sys.argv[1:], stdout=subprocess.DEVNULL)\n"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, rc, file=sys.stderr)\n"
)

LOADER = (
    "import sys\n"
    "from whispdiar import audio\n"
    "n = sum(len(b) for b in audio.stream(sys.argv[1]))\n"
    "print(n / audio.SAMPLE_RATE)\n"
)


# The transcription library alone (whisper.cpp + VAD), for when the CLI has no `transcribe` yet.
ASR_LIB = (
    "import sys\n"
    "from whispdiar import models\n"
    "from whispdiar.asr.whisper import Transcriber\n"
    "vad = None\n"
    "try:\n"
    "    from whispdiar.asr.vad import SileroVad\n"
    "    vad = SileroVad(models.resolve('silero-vad'))\n"
    "except Exception as e:\n"
    "    print('no VAD:', e, file=sys.stderr)\n"
    "t = Transcriber(models.resolve(sys.argv[2]), threads=int(sys.argv[3]), vad=vad)\n"
    "r = t.transcribe(sys.argv[1])\n"
    "print(len(r.segments))\n"
)


# The diarization library alone, with explicit model files (e.g. a CAM++ export not installed yet).
DIAR_LIB = (
    "import sys\n"
    "from whispdiar import models\n"
    "from whispdiar.diarization.diarizer import Diarizer\n"
    "emb = sys.argv[2] if sys.argv[2] != '-' else models.resolve('campplus')\n"
    "d = Diarizer(models.resolve('segmentation-3.0'), emb, threads=int(sys.argv[3]))\n"
    "r = d(sys.argv[1])\n"
    "print(len(r.turns), len(r.speakers))\n"
)


def _sources(data: Path) -> list[np.ndarray]:
    clips: list[np.ndarray] = []
    for p in sorted((data / "ami_debug").glob("*.wav")) + sorted((data / "librispeech").glob("*/*.flac")):
        x, sr = sf.read(p, dtype="float32", always_2d=True)
        x = x.mean(axis=1)
        if sr != SR:
            import soxr

            x = soxr.resample(x, sr, SR)
        if len(x):
            clips.append(x.astype(np.float32))
    if not clips:
        raise SystemExit(f"no audio under {data}/ami_debug or {data}/librispeech")
    return clips


def build_recording(path: Path, hours: float, data: Path, seed: int = 0) -> float:
    """Write ``hours`` of varied real speech to ``path`` block by block (flat memory)."""
    import soxr

    rng = np.random.default_rng(seed)
    clips = _sources(data)
    target = int(hours * 3600 * SR)
    written = 0
    with sf.SoundFile(path, "w", SR, 1, subtype="PCM_16", format="WAV") as f:
        while written < target:
            x = clips[rng.integers(len(clips))]
            speed = rng.uniform(0.92, 1.08)  # resampling shifts pitch and tempo: new "voices"
            y = soxr.resample(x, SR, int(SR / speed)) * (10 ** (rng.uniform(-8, 4) / 20))
            gap = np.zeros(int(rng.uniform(0.1, 1.5) * SR), np.float32)
            noise = (rng.standard_normal(len(y) + len(gap)) * 10 ** (rng.uniform(-70, -50) / 20))
            chunk = np.clip(np.concatenate([y, gap]) + noise, -1, 1)[: target - written]
            f.write(chunk.astype(np.float32))
            written += len(chunk)
    return written / SR


def measure(argv: list[str], label: str, env: dict[str, str] | None = None) -> dict[str, object]:
    """Run argv in a wrapper; return peak RSS (kernel and polled), wall time and exit code."""
    import psutil

    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-c", WRAPPER, *argv], stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})
    polled = 0
    samples: list[tuple[float, int]] = []
    stop = threading.Event()

    def poll() -> None:
        nonlocal polled
        wrapper = psutil.Process(proc.pid)
        while not stop.is_set():
            try:
                rss = sum(c.memory_info().rss for c in wrapper.children(recursive=True))
            except psutil.Error:
                rss = 0
            polled = max(polled, rss)
            samples.append((time.monotonic() - t0, rss))
            stop.wait(1.0)

    th = threading.Thread(target=poll, daemon=True)
    th.start()
    _, err = proc.communicate()
    stop.set()
    th.join()
    wall = time.monotonic() - t0
    lines = err.strip().splitlines()
    maxrss_kb, rc = (int(v) for v in lines[-1].split()) if lines else (0, proc.returncode)
    if rc != 0:
        print(f"{label}: exit {rc}\n" + "\n".join(lines[-10:-1]), file=sys.stderr)
    # RSS over time, in ~20 steps: shows whether memory grows with the position in the file.
    step = max(1, len(samples) // 20)
    timeline = [(round(t), round(r / 2**20)) for t, r in samples[::step]]
    return {"run": label, "exit": rc, "peak_rss_mb": round(maxrss_kb / 1024), "polled_peak_mb": round(polled / 2**20),
            "wall_s": round(wall, 1), "timeline_s_mb": timeline}


def _has_transcribe() -> bool:
    r = subprocess.run([sys.executable, "-m", "whispdiar.cli", "transcribe", "--help"], capture_output=True)
    return r.returncode == 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hours", type=float, default=4.0)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--only", default="loader,diarize,transcribe", help="comma-separated runs")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--asr-model", default="tiny.en")
    ap.add_argument("--embedding", type=Path, default=None, help="CAM++ ONNX file for diarize-lib (default: installed)")
    ap.add_argument("--workdir", type=Path, default=None, help="where the long WAV goes (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the generated WAV")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args()
    runs = [r.strip() for r in args.only.split(",") if r.strip()]

    work = Path(tempfile.mkdtemp(prefix="whispdiar-bench-", dir=args.workdir))
    wav = work / f"long-{args.hours:g}h.wav"
    results: list[dict[str, object]] = []
    try:
        t0 = time.monotonic()
        dur = build_recording(wav, args.hours, args.data)
        print(f"built {wav} ({dur / 3600:.2f} h, {wav.stat().st_size / 2**20:.0f} MB) in "
              f"{time.monotonic() - t0:.0f} s", file=sys.stderr)
        cli = [sys.executable, "-m", "whispdiar.cli"]
        threads = ["--threads", str(args.threads)] if args.threads else []
        for run in runs:
            if run == "loader":
                argv = [sys.executable, "-c", LOADER, str(wav)]
            elif run == "diarize":
                argv = cli + ["diarize", "-q", *threads, "-f", "rttm", "-o", str(work / "out.rttm"), str(wav)]
            elif run == "diarize-lib":
                n = str(args.threads or os.cpu_count() or 2)
                argv = [sys.executable, "-c", DIAR_LIB, str(wav), str(args.embedding or "-"), n]
            elif run == "asr-lib":
                n = str(args.threads or os.cpu_count() or 2)
                argv = [sys.executable, "-c", ASR_LIB, str(wav), args.asr_model, n]
            elif run == "transcribe":
                if not _has_transcribe():
                    print("transcribe: not available in this CLI yet, skipped", file=sys.stderr)
                    continue
                argv = cli + ["transcribe", "-q", *threads, "--model", args.asr_model, "-f", "json",
                              "-o", str(work / "out.json"), str(wav)]
            else:
                raise SystemExit(f"unknown run {run!r}")
            print(f"running {run} ...", file=sys.stderr)
            res = measure(argv, run)
            res["audio_hours"] = round(dur / 3600, 3)
            results.append(res)
            print(json.dumps(res), file=sys.stderr)
    finally:
        if not args.keep:
            wav.unlink(missing_ok=True)
            for p in work.iterdir():
                p.unlink()
            work.rmdir()

    print("\n| run | audio | peak RSS | wall | real-time factor | exit |\n|---|---|---|---|---|---|")
    for r in results:
        rtf = float(r["wall_s"]) / (float(r["audio_hours"]) * 3600)
        print(f"| {r['run']} | {r['audio_hours']:g} h | {r['peak_rss_mb']} MB | {float(r['wall_s']) / 60:.1f} min "
              f"| {rtf:.3f} | {r['exit']} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
