"""A broken or partial install: every command answers in one line with an exit code, never
a traceback. (`make wheel-check` installs the real wheel and runs it from elsewhere.)"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import whispdiar

PACKAGE = Path(whispdiar.__file__).parent


def _run(args: list[str], pythonpath: Path, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(pythonpath), "WHISPDIAR_HOME": str(home), "WHISPDIAR_OFFLINE": "1"}
    env.pop("WHISPDIAR_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "whispdiar", *args], capture_output=True, text=True, env=env,
                          cwd=pythonpath, timeout=120)


def test_package_without_its_manifest_fails_in_one_line(tmp_path: Path) -> None:
    # The install of issue #25: the model registry was not in the wheel.
    shutil.copytree(PACKAGE, tmp_path / "whispdiar", ignore=shutil.ignore_patterns("__pycache__", "manifest.json"))
    for args in (["models", "list"], ["models", "verify"], ["models", "fetch", "base"],
                 ["transcribe", str(Path(__file__).parent / "data" / "jfk.wav")]):
        p = _run(args, tmp_path, tmp_path / "home")
        assert "Traceback" not in p.stderr, p.stderr
        assert p.returncode == 5, (args, p.returncode, p.stderr)
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("whispdiar: error: cannot read the model manifest"), lines


def test_missing_dependency_is_a_broken_install_not_a_traceback(tmp_path: Path) -> None:
    # A dependency that cannot be imported (a half-finished pip install, a removed package).
    (tmp_path / "typer.py").write_text("raise ImportError(\"No module named 'typer'\")\n")
    shutil.copytree(PACKAGE, tmp_path / "whispdiar", ignore=shutil.ignore_patterns("__pycache__"))
    p = _run(["models", "list"], tmp_path, tmp_path / "home")
    assert p.returncode == 18 and "Traceback" not in p.stderr
    assert p.stderr.splitlines() == ["whispdiar: error: broken installation: No module named 'typer'; reinstall "
                                     "whispdiar (e.g. `pip install --force-reinstall whispdiar`)"]


def test_the_package_carries_what_it_reads_at_run_time() -> None:
    # What setuptools puts in the wheel: package data declared in pyproject.toml.
    assert (PACKAGE / "manifest.json").is_file() and (PACKAGE / "diarization" / "export_campplus.py").is_file()
    assert (PACKAGE / "py.typed").is_file()
    from whispdiar import models

    assert models.MANIFEST.parent == PACKAGE and models.EXPORT_CAMPPLUS.parent == PACKAGE / "diarization"
