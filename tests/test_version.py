"""``whispdiar --version``: whispdiar's, whisper.cpp's and onnxruntime's versions, without loading a model."""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
from pathlib import Path

import onnxruntime
import pytest


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version(flag: str, tmp_path: Path) -> None:
    # An empty data dir: no models to load, so a model load would fail the command.
    env = {**os.environ, "WHISPDIAR_HOME": str(tmp_path / "nothing")}
    proc = subprocess.run([sys.executable, "-m", "whispdiar.cli", flag], capture_output=True, text=True,
                          env=env, timeout=60)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == f"whispdiar {importlib.metadata.version('whispdiar')}"
    # whisper.cpp's own whisper_version(), beside the bindings' package version.
    m = re.fullmatch(r"whisper\.cpp (\d+\.\d+\.\d+) \(pywhispercpp (\S+)\)", lines[1])
    assert m is not None, lines[1]
    assert m.group(2) == importlib.metadata.version("pywhispercpp")
    assert lines[2] == f"onnxruntime {onnxruntime.__version__}"
    assert len(lines) == 3
    assert not (tmp_path / "nothing").exists()
