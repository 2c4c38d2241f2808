"""Benchmark ``whispdiar serve`` against the CLI (issue 29's three measurements).

1. **Overhead**: the same file through the CLI (``transcribe -f json``, a new process:
   wall time, and the pipeline's own ``timings.total`` from its JSON) and through the API
   (``POST /v1/audio/transcriptions``, verbose_json, and a job: submit, poll, fetch),
   interleaved run by run so that a machine's drift hits both alike. On a shared machine
   the runs' spread can dwarf the difference, so each API request's own overhead is
   measured too: its wall time minus the pipeline time the server spent on it (the
   ``Server-Timing`` header; a job's JSON ``timings.total``): upload, queue, rendering
   every format, polling, fetching.
2. **Concurrency**: N uploads of a short file at once: each must complete (200) or be
   turned away at once (429, within the queue bound workers + queue); none may fail.
   The server's peak RSS (process and children, sampled every 50 ms) is reported.
3. **Soak**: M jobs in a row (submit, wait, fetch json, delete); the server's RSS after
   the first 10 and after all of them: growth in %.

The server runs as ``whispdiar serve`` in a subprocess on a free loopback port with a
throw-away state directory and an empty speaker database. Example (the figures in
docs/api.md):

    python scripts/bench_server.py meeting.wav --model base --runs 3 \\
        --short tests/data/jfk.wav --concurrent 20 --jobs 100
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil

WD = [sys.executable, "-m", "whispdiar"]


class Server:
    def __init__(self, args: list[str], state: Path):
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("WHISPDIAR_TOKEN", None)
        self.proc = subprocess.Popen(
            WD + ["serve", "--port", "0", "-q", "--offline", "--state-dir", str(state / "state"),
                  "--speakers-db", str(state / "speakers.db"), *args],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode().strip()
            if line.startswith("whispdiar: serving "):
                self.url = line.split()[2]
                break
            print(f"  server: {line}", file=sys.stderr)
        else:
            raise SystemExit(f"the server did not start (exit {self.proc.wait()})")
        threading.Thread(target=lambda: [None for _ in self.proc.stderr], daemon=True).start()  # type: ignore[union-attr]
        self.ps = psutil.Process(self.proc.pid)
        self.peak = 0
        self._sampling = False

    def rss(self) -> int:
        procs = [self.ps, *self.ps.children(recursive=True)]
        return sum(p.memory_info().rss for p in procs if p.is_running())

    def sample(self) -> None:
        self._sampling = True

        def loop() -> None:
            while self._sampling:
                self.peak = max(self.peak, self.rss())
                time.sleep(0.05)

        threading.Thread(target=loop, daemon=True).start()

    def stop(self) -> None:
        self._sampling = False
        self.proc.terminate()
        self.proc.wait(60)


def post_file(client: httpx.Client, path: str, file: Path, **data: str) -> httpx.Response:
    with open(file, "rb") as f:
        return client.post(path, files={"file": (file.name, f)}, data=data)


def run_job(client: httpx.Client, file: Path) -> dict:
    r = post_file(client, "/v1/jobs", file)
    r.raise_for_status()
    job_id = r.json()["id"]
    while (job := client.get(f"/v1/jobs/{job_id}").json())["status"] in ("queued", "running"):
        time.sleep(0.05)
    if job["status"] != "done":
        raise SystemExit(f"job {job_id}: {job['status']} {job['error']}")
    client.get(f"/v1/jobs/{job_id}/result", params={"format": "json"}).raise_for_status()
    return job


def overhead(server: Server, file: Path, model: str, runs: int, tmp: Path) -> None:
    print(f"\n## 1. API overhead against the CLI: {file.name}, {model}, {runs} interleaved runs")
    rows: dict[str, list[float]] = {"cli_wall": [], "cli_pipeline": [], "api_sync": [], "api_job": []}
    own: dict[str, list[float]] = {"api_sync": [], "api_job": []}  # wall minus the server's pipeline time
    with httpx.Client(base_url=server.url, timeout=3600) as client:
        for i in range(runs):
            order = ["cli", "api"] if i % 2 == 0 else ["api", "cli"]
            for what in order:
                if what == "cli":
                    out = tmp / "cli.json"
                    t0 = time.perf_counter()
                    subprocess.run(WD + ["transcribe", "-q", "--offline", "-m", model, str(file), "-f", "json", "-o",
                                         str(out), "--speakers-db", str(tmp / "speakers.db")], check=True)
                    rows["cli_wall"].append(time.perf_counter() - t0)
                    rows["cli_pipeline"].append(json.loads(out.read_text())["timings"]["total"])
                else:
                    t0 = time.perf_counter()
                    r = post_file(client, "/v1/audio/transcriptions", file, response_format="verbose_json",
                                  model=model)
                    r.raise_for_status()
                    rows["api_sync"].append(time.perf_counter() - t0)
                    own["api_sync"].append(rows["api_sync"][-1] - server_timing(r))
                    t0 = time.perf_counter()
                    job = run_job(client, file)
                    rows["api_job"].append(time.perf_counter() - t0)
                    doc = client.get(f"/v1/jobs/{job['id']}/result", params={"format": "json"}).json()
                    own["api_job"].append(rows["api_job"][-1] - doc["timings"]["total"])
                    client.delete(f"/v1/jobs/{job['id']}")
            print(f"  run {i + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in rows.items()))
    med = {k: statistics.median(v) for k, v in rows.items()}
    print("  median: " + ", ".join(f"{k} {v:.2f} s" for k, v in med.items()))
    for k in ("api_sync", "api_job"):
        print(f"  {k}: {100 * (med[k] / med['cli_pipeline'] - 1):+.1f} % against the CLI's pipeline time, "
              f"{100 * (med[k] / med['cli_wall'] - 1):+.1f} % against the CLI's wall time (which loads the models)")
        extra = statistics.median(own[k])
        print(f"  {k} own overhead (wall minus the server's pipeline time): median {extra:.3f} s, "
              f"{100 * extra / med['cli_pipeline']:.1f} % of the CLI's pipeline time; runs: "
              + ", ".join(f"{x:.3f}" for x in own[k]))


def server_timing(r: httpx.Response) -> float:
    """The pipeline seconds in a ``Server-Timing: pipeline;dur=MS`` header."""
    return float(r.headers["server-timing"].split("dur=")[1]) / 1000


def concurrency(server: Server, file: Path, n: int, bound: int) -> None:
    print(f"\n## 2. {n} concurrent uploads of {file.name} (the server takes {bound} at once)")
    server.peak = server.rss()
    server.sample()
    codes: list[tuple[int, float]] = []

    def one(_: int) -> tuple[int, float]:
        with httpx.Client(base_url=server.url, timeout=3600) as client:
            t0 = time.perf_counter()
            r = post_file(client, "/v1/audio/transcriptions", file, response_format="json")
            return r.status_code, time.perf_counter() - t0

    t0 = time.perf_counter()
    with ThreadPoolExecutor(n) as pool:
        codes = list(pool.map(one, range(n)))
    wall = time.perf_counter() - t0
    done = [t for c, t in codes if c == 200]
    busy = [t for c, t in codes if c == 429]
    other = [c for c, _ in codes if c not in (200, 429)]
    print(f"  200: {len(done)} (slowest {max(done, default=0):.2f} s), 429: {len(busy)} (slowest answer "
          f"{max(busy, default=0):.3f} s), failed: {len(other)} {other or ''}; all answered in {wall:.2f} s")
    print(f"  server peak RSS: {server.peak / 2**20:.0f} MiB")


def soak(server: Server, file: Path, jobs: int) -> None:
    print(f"\n## 3. {jobs} jobs in a row ({file.name}): submit, wait, fetch json, delete")
    rss: dict[int, int] = {}
    t0 = time.perf_counter()
    with httpx.Client(base_url=server.url, timeout=3600) as client:
        for i in range(1, jobs + 1):
            job = run_job(client, file)
            client.delete(f"/v1/jobs/{job['id']}").raise_for_status()
            if i in (1, 10) or i % 25 == 0 or i == jobs:
                rss[i] = server.rss()
                print(f"  after job {i}: RSS {rss[i] / 2**20:.1f} MiB ({time.perf_counter() - t0:.0f} s)")
    ref = rss.get(10, rss[1])
    print(f"  growth from job {10 if 10 in rss else 1} to job {jobs}: {100 * (rss[jobs] / ref - 1):+.2f} %")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("file", type=Path, help="recording for the overhead runs (e.g. a 10-minute meeting)")
    ap.add_argument("--model", default="base")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--short", type=Path, default=Path(__file__).parent.parent / "tests" / "data" / "jfk.wav",
                    help="short file for the concurrency and soak parts")
    ap.add_argument("--concurrent", type=int, default=20)
    ap.add_argument("--jobs", type=int, default=100)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--queue", type=int, default=8)
    ap.add_argument("--skip", action="append", default=[], choices=["overhead", "concurrency", "soak"])
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-server-") as tmp:
        server = Server(["-m", a.model, "--workers", str(a.workers), "--queue", str(a.queue)], Path(tmp))
        try:
            print(f"server {server.url}: {a.model}, {a.workers} worker(s), queue {a.queue}; "
                  f"RSS after start {server.rss() / 2**20:.0f} MiB; {os.cpu_count()} CPUs")
            if "overhead" not in a.skip:
                overhead(server, a.file, a.model, a.runs, Path(tmp))
            if "concurrency" not in a.skip:
                concurrency(server, a.short, a.concurrent, a.workers + a.queue)
            if "soak" not in a.skip:
                soak(server, a.short, a.jobs)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
