"""Interrupting a run: exit 130 (SIGINT) / 143 (SIGTERM) promptly, and no output file appears.

A 10-minute generated recording keeps the real pipeline busy; the signal arrives once
the child has burnt some CPU (i.e. models loaded and audio being processed).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from helpers import models_installed

from whispdiar import errors

SR = 16000
CLI = [sys.executable, "-m", "whispdiar.cli"]
PROMPT = 5.0  # seconds the process may take to exit after the signal




RUNS = {
    "diarize": (["diarize", "-f", "rttm"], "rttm", ("segmentation-3.0", "campplus")),
    "transcribe": (["transcribe", "--model", "tiny.en", "-f", "srt"], "srt",
                   ("tiny.en", "segmentation-3.0", "campplus")),
}


@pytest.fixture(scope="module")
def long_recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 min of alternating tone bursts and noise: speech-like enough to keep every stage busy."""
    p = tmp_path_factory.mktemp("sig") / "long.wav"
    rng = np.random.default_rng(0)
    t = np.arange(SR * 10) / SR
    with sf.SoundFile(p, "w", SR, 1, subtype="PCM_16") as f:
        for i in range(60):
            f0 = 120 + 40 * (i % 3)
            envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)  # syllable-rate amplitude modulation
            voiced = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 8)) * envelope
            f.write((0.1 * voiced + 0.02 * rng.standard_normal(len(t))).astype(np.float32) * 0.5)
    return p


def _start(args: list[str], cwd: Path) -> subprocess.Popen:
    # A child started from a non-interactive shell may inherit SIGINT ignored; a terminal
    # user's Ctrl-C never is, so give the child the default disposition like a shell would.
    return subprocess.Popen(CLI + args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _wait_busy(proc: subprocess.Popen, cpu_seconds: float = 3.0, limit: float = 120.0) -> None:
    import psutil

    ps = psutil.Process(proc.pid)
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"finished before the signal: {proc.stderr.read().decode()}"
        t = ps.cpu_times()
        if t.user + t.system >= cpu_seconds:
            return
        time.sleep(0.1)
    pytest.fail("child never got busy")


@pytest.mark.slow
@pytest.mark.parametrize("command", list(RUNS))
@pytest.mark.parametrize(("sig", "code", "word"), [(signal.SIGINT, errors.EXIT_SIGINT, "interrupted"),
                                                   (signal.SIGTERM, errors.EXIT_SIGTERM, "terminated")],
                         ids=["SIGINT", "SIGTERM"])
def test_signal_leaves_no_output(long_recording: Path, tmp_path: Path, command: str, sig: int, code: int,
                                 word: str) -> None:
    args, ext, needed = RUNS[command]
    if not models_installed(*needed):
        pytest.skip(f"models {needed} not all installed (run `make models`)")
    out = tmp_path / f"out.{ext}"
    proc = _start(args + [str(long_recording), "-o", str(out)], tmp_path)
    try:
        _wait_busy(proc)
        sent = time.monotonic()
        proc.send_signal(sig)
        try:
            _, stderr = proc.communicate(timeout=PROMPT + 25)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail(f"still running {PROMPT + 25:.0f} s after {sig.name}")
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = stderr.decode("utf-8", "replace")
    assert "Traceback" not in text, text
    assert proc.returncode == code, f"exit {proc.returncode}: {text}"
    assert took < PROMPT, f"took {took:.1f} s to stop after {sig.name}"
    # typer turns KeyboardInterrupt into a silent Exit(130); a message is nice, not required.
    assert not text.strip() or text.strip().splitlines()[-1] == f"whispdiar: {word}", text
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "partial or temp output left behind"


@pytest.mark.slow
def test_signal_during_stdin_copy_leaves_no_temp_file(tmp_path: Path) -> None:
    """SIGTERM while '-' is still being copied to a temp file: the copy is removed."""
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    env = {**os.environ, "TMPDIR": str(tmpdir)}
    proc = subprocess.Popen(CLI + ["diarize", "-q", "-"], cwd=tmp_path, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert proc.stdin is not None
    proc.stdin.write(b"RIFF" + bytes(1 << 20))  # stays open: the CLI is blocked reading stdin
    proc.stdin.flush()
    def ours() -> list[Path]:  # other libraries may drop their own files in TMPDIR
        return [p for p in tmpdir.iterdir() if p.name.startswith("whispdiar")]

    deadline = time.monotonic() + 30
    while not ours() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ours(), "stdin copy never started"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == errors.EXIT_SIGTERM, err.decode()
    assert "Traceback" not in err.decode()
    assert ours() == []


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, errors.EXIT_SIGINT), (signal.SIGTERM, errors.EXIT_SIGTERM)],
                         ids=["SIGINT", "SIGTERM"])
def test_signal_exit_codes_without_models(tmp_path: Path, sig: int, code: int) -> None:
    """Exit codes while the CLI is blocked reading '-' (needs no model): 130 / 143, no traceback."""
    proc = subprocess.Popen(CLI + ["diarize", "-q", "-"], cwd=tmp_path, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "TMPDIR": str(tmp_path)},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert proc.stdin is not None
    proc.stdin.write(b"RIFF" + bytes(1 << 16))
    proc.stdin.flush()
    deadline = time.monotonic() + 30
    while not any(p.name.startswith("whispdiar") for p in tmp_path.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=PROMPT)
    assert proc.returncode == code, err.decode()
    assert "Traceback" not in err.decode()
    assert not any(p.name.startswith("whispdiar") for p in tmp_path.iterdir())
