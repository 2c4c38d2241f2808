#!/usr/bin/env python3
"""Speed and memory of `whispdiar diarize` against another build, and of the clustering alone.

``--ab``: each file is diarized by the build under test (this checkout) and by a baseline
checkout (``--baseline DIR``, e.g. a ``git worktree`` of the previous release), runs
interleaved (A B A B ...) in one sitting so machine load hits both alike; each run is a fresh
child process (`python -m whispdiar.cli diarize -q FILE -f rttm`), its wall time, CPU time
and peak RSS (the kernel's high-water mark, getrusage RUSAGE_CHILDREN of a one-child wrapper)
recorded; speakers found are counted in the RTTM. Ratios new / baseline of the medians.

``--cluster N``: times ``clustering.spectral_cluster_embeddings`` on N embeddings: real CAM++
embeddings from cached analyses (``--cache``, scripts/tune_diarization.py's), tiled with a
little noise when fewer, or synthetic voices when no cache is given.

    git worktree add /tmp/old c6088c2
    python scripts/bench_count.py --ab --baseline /tmp/old --runs 2 interview00.wav crowd-long.wav
    python scripts/bench_count.py --cluster 10000 --cache /tmp/wd-cache
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
WRAPPER = (
    "import resource, subprocess, sys\n"
    "rc = subprocess.call(sys.argv[1:], stdout=subprocess.DEVNULL)\n"
    "u = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
    "print(u.ru_maxrss, u.ru_utime + u.ru_stime, rc, file=sys.stderr)\n"
)


def run_once(code_root: Path, audio: Path, threads: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.rttm"
        env = {**os.environ, "PYTHONPATH": str(code_root), "WHISPDIAR_OFFLINE": "1"}
        cmd = [sys.executable, "-c", WRAPPER, sys.executable, "-m", "whispdiar.cli", "diarize", "-q",
               "--threads", str(threads), str(audio), "-f", "rttm", "-o", str(out)]
        t0 = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp)
        wall = time.perf_counter() - t0
        rss_kb, cpu, rc = p.stderr.strip().splitlines()[-1].split()
        if int(rc) != 0:
            raise SystemExit(f"{code_root}: diarize {audio} failed: {p.stderr.strip()[-500:]}")
        speakers = {line.split()[7] for line in out.read_text().splitlines() if line.startswith("SPEAKER")}
    return {"wall": wall, "cpu": float(cpu), "rss_mb": int(rss_kb) / 1024, "speakers": len(speakers)}


def ab(files: list[Path], baseline: Path, runs: int, threads: int) -> None:
    print("| file | build | wall s (runs) | CPU s | peak RSS MB | speakers |")
    print("|---|---|---|---|---|---|")
    for f in files:
        res: dict[str, list[dict]] = {"baseline": [], "new": []}
        for _ in range(runs):
            for tag, root in (("baseline", baseline), ("new", ROOT)):
                r = run_once(root, f, threads)
                res[tag].append(r)
                print(f"  {f.name} {tag}: {r['wall']:.1f} s, {r['cpu']:.1f} CPU-s, {r['rss_mb']:.0f} MB, "
                      f"{r['speakers']} speakers", file=sys.stderr, flush=True)
        med = {t: {k: statistics.median(x[k] for x in rs) for k in ("wall", "cpu", "rss_mb")} for t, rs in res.items()}
        for tag, rs in res.items():
            walls = " / ".join(f"{x['wall']:.1f}" for x in rs)
            print(f"| {f.name} | {tag} | {walls} | {med[tag]['cpu']:.1f} | {med[tag]['rss_mb']:.0f} | "
                  f"{rs[-1]['speakers']} |")
        print(f"| {f.name} | new / baseline | {med['new']['wall'] / med['baseline']['wall']:.2f}x | "
              f"{med['new']['cpu'] / med['baseline']['cpu']:.2f}x | "
              f"{med['new']['rss_mb'] / med['baseline']['rss_mb']:.2f}x | |")


def cluster_timing(n: int, cache: Path | None) -> None:
    sys.path.insert(0, str(ROOT))
    from whispdiar.diarization.clustering import l2_normalize, spectral_cluster_embeddings

    rng = np.random.default_rng(0)
    if cache is not None:
        embs = []
        for npz in sorted(cache.rglob("*.npz")):
            z = np.load(npz)
            e = z["embeddings"].reshape(-1, z["embeddings"].shape[-1])
            embs.append(e[np.isfinite(e).all(axis=1)])
        x = np.concatenate(embs)
        real = len(x)
        source = f"real CAM++ embeddings of {len(embs)} cached files"
        if real >= n:
            x = x[rng.choice(real, n, replace=False)]
        else:  # tiled: the copies get a little noise, so none is an exact duplicate
            x = np.concatenate([x, x[rng.integers(real, size=n - real)]])
            x[real:] += 0.05 * rng.standard_normal(x[real:].shape)
    else:
        centres = l2_normalize(rng.standard_normal((100, 192)))
        x = centres[rng.integers(100, size=n)] + 0.06 * rng.standard_normal((n, 192))
        source = "synthetic: 100 voices"
    x = l2_normalize(x).astype(np.float32)
    t0 = time.perf_counter()
    c = spectral_cluster_embeddings(x, np.full(n, 2.0))
    dt = time.perf_counter() - t0
    print(f"clustering {n} embeddings ({source}): {dt:.2f} s, {c.num_clusters} clusters")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="*", type=Path)
    ap.add_argument("--ab", action="store_true")
    ap.add_argument("--baseline", type=Path, help="checkout of the baseline build (for --ab)")
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cluster", type=int, default=None, metavar="N")
    ap.add_argument("--cache", type=Path, default=None)
    args = ap.parse_args()
    if args.ab:
        if args.baseline is None or not args.files:
            raise SystemExit("--ab needs --baseline DIR and audio files")
        ab(args.files, args.baseline, args.runs, args.threads)
    if args.cluster:
        cluster_timing(args.cluster, args.cache)


if __name__ == "__main__":
    main()
