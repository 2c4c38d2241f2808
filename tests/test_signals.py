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


_HOLD_STDERR = """
import os, signal, threading, time
from whispdiar import signals
from whispdiar.audio import read as audio
signals.install()
held = threading.Event()
def open_audio():  # what a reader thread does around every soundfile open
    with audio._quiet_native_stderr(True):
        held.set()
        time.sleep(10)
threading.Thread(target=open_audio, daemon=True).start()
held.wait()
try:
    os.kill(os.getpid(), signal.{sig})
    time.sleep(10)
except BaseException as e:
    signals.exit_for(e)
"""


@pytest.mark.parametrize(("sig", "code", "word"), [("SIGINT", errors.EXIT_SIGINT, "interrupted"),
                                                   ("SIGTERM", errors.EXIT_SIGTERM, "terminated")])
def test_signal_line_survives_a_silenced_stderr(sig: str, code: int, word: str) -> None:
    """A signal that lands while another thread has fd 2 pointed at /dev/null (an audio
    open silencing libmpg123) still prints its line: the race a CI run once lost it to."""
    proc = subprocess.run([sys.executable, "-c", _HOLD_STDERR.format(sig=sig)], capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == code, proc.stderr
    assert proc.stderr == f"whispdiar: {word}\n"
