"""A real ``whispdiar serve`` in a subprocess on a free loopback port, for the server tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import soundfile as sf

CLI = [sys.executable, "-m", "whispdiar"]
DATA = Path(__file__).parent / "data"
START_TIMEOUT = 240.0  # s: loading the models on a busy 2-core machine


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Served:
    """``whispdiar serve ARGS --port 0``; ``url`` once it listens, ``lines`` its stderr so far."""

    def __init__(self, args: list[str], *, token: str | None = None, env: dict[str, str] | None = None):
        self.token = token
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        full_env.pop("WHISPDIAR_TOKEN", None)
        if token is not None:
            full_env["WHISPDIAR_TOKEN"] = token
        port = _free_port()  # known before the start: readiness is read off /health, not stderr
        self.proc = subprocess.Popen(CLI + ["serve", "--port", str(port), "--offline", "-q", *args],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=full_env)
        self.lines: list[str] = []
        self._ready = threading.Event()
        self.url = f"http://127.0.0.1:{port}"
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.monotonic() + START_TIMEOUT
        while not (self._ready.wait(0.2) or self._answers()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                raise RuntimeError(f"whispdiar serve did not start: {self.lines}")

    def _answers(self) -> bool:
        try:
            httpx.get(f"{self.url}/health", timeout=2)
        except httpx.HTTPError:
            return False
        return True

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.lines.append(line)
            if line.startswith("whispdiar: serving http://"):
                self._ready.set()

    def client(self, **kw: object) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        kw.setdefault("timeout", 300)
        return httpx.Client(base_url=self.url, headers=headers, **kw)  # type: ignore[arg-type]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()

    def stderr(self) -> str:
        return "\n".join(self.lines)


def wait_for(client: httpx.Client, job_id: str, statuses: tuple[str, ...], timeout: float = 300,
              check: object = None) -> dict:
    """Poll a job until its status is one of ``statuses`` (or ``check(job)`` is true)."""
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in statuses or (callable(check) and check(job)):
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {job['status']} after {timeout} s: {job}")
        time.sleep(0.2)


def long_recording(path: Path, repeats: int = 4) -> Path:
    """``repeats`` x the 30 s two-speaker sample, one file (a recording long enough to catch mid-job)."""
    if not path.exists():
        x, sr = sf.read(DATA / "diar_sample.flac", dtype="float32")
        sf.write(path, np.concatenate([x] * repeats), sr)
    return path


def submit(client: httpx.Client, path: Path, **fields: str) -> dict:
    with open(path, "rb") as f:
        r = client.post("/v1/jobs", files={"file": (path.name, f)}, data=fields)
    assert r.status_code == 202, r.text
    return r.json()
