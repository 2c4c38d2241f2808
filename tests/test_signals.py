"""Interrupting the CLI while it copies standard input: exit 130 / 143, no temp file.

Signals during model loading, decoding, diarization and writing are in test_interrupts.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from whispdiar import errors

CLI = [sys.executable, "-m", "whispdiar"]
PROMPT = 5.0  # seconds the process may take to exit after the signal


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
