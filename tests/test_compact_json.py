"""`-f json-compact` and `-f all` through the real command on real recordings (tiny.en).

One run of ``transcribe -f all`` on the 30 s two-speaker sample gives every format; the
compact JSON must carry the same segments, speakers and words as the full JSON of that
same run, with times rounded to 0.01 s.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import models_installed

from whispdiar.errors import OutputError, UsageError

CLI = [sys.executable, "-m", "whispdiar.cli"]
EVERY = {"txt", "json", "compact.json", "srt", "vtt", "tsv", "rttm", "stats.txt", "stats.tsv", "html"}

pytestmark = pytest.mark.skipif(not models_installed("tiny.en", "segmentation-3.0", "campplus"),
                                reason="needs `make models`")


def _cli(args: list[str], tmp: Path) -> subprocess.CompletedProcess:
    # A scratch speaker database: no enrolled names from the user's own.
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(CLI + [*args, "--speakers-db", str(tmp / "speakers.db")], capture_output=True,
                          env=env, timeout=600)


@pytest.fixture(scope="module")
def every_format(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    out = tmp_path_factory.mktemp("all")
    p = _cli(["transcribe", "-q", "-m", "tiny.en", str(data_dir / "diar_sample.flac"), "-f", "all", "-d", str(out)],
             out)
    assert p.returncode == 0, p.stderr.decode()
    return out


def test_all_writes_every_format(every_format: Path) -> None:
    names = sorted(p.name for p in every_format.iterdir() if p.name not in ("speakers.db", "whispdiar-manifest.jsonl"))
    assert names == sorted(f"diar_sample.{ext}" for ext in EVERY)
    assert all((every_format / n).stat().st_size > 0 for n in names)


def test_compact_json_round_trips_the_full_json(every_format: Path) -> None:
    full = json.loads((every_format / "diar_sample.json").read_text())
    compact = json.loads((every_format / "diar_sample.compact.json").read_text())
    assert (compact["language"], compact["audio"]) == (full["language"], full["audio"])
    assert abs(compact["duration"] - full["duration"]) <= 0.005 + 1e-9
    # The roster: the same speakers, in the same order, with the same names and confidences.
    roster = compact["speakers"]
    assert list(roster) == [f"S{i}" for i in range(1, len(full["speakers"]) + 1)] and len(roster) >= 2
    for key, sp in zip(roster, full["speakers"], strict=True):
        assert roster[key]["name"] == sp["name"]
        assert abs(roster[key]["confidence"] - sp["confidence"]) <= 0.005 + 1e-9
    name = {k: v["name"] for k, v in roster.items()}

    def near(a: float, b: float) -> bool:  # 2-decimal rounding of the value the full JSON has to 3
        return abs(a - b) <= 0.0051 and round(a, 2) == a

    assert len(compact["segments"]) == len(full["segments"]) > 3
    n_words = 0
    for c, f in zip(compact["segments"], full["segments"], strict=True):
        assert c["text"] == f["text"]
        assert name.get(c.get("s")) == f["speaker"]
        assert near(c["t"][0], f["start"]) and near(c["t"][1], f["end"])
        assert len(c.get("w", [])) == len(f["words"])
        for cw, fw in zip(c.get("w", []), f["words"], strict=True):
            n_words += 1
            assert cw["text"] == fw["text"]
            assert name[cw.get("s", c.get("s"))] == fw["speaker"]
            assert near(cw["t"][0], fw["start"]) and near(cw["t"][1], fw["end"])
    assert n_words > 30
    size_full = (every_format / "diar_sample.json").stat().st_size
    assert (every_format / "diar_sample.compact.json").stat().st_size < size_full / 3


def test_no_words_drops_w(tmp_path: Path, data_dir: Path) -> None:
    p = _cli(["transcribe", "-q", "--no-diarize", "-m", "tiny.en", "--no-words", "-f", "json-compact",
              str(data_dir / "jfk.wav")], tmp_path)
    assert p.returncode == 0, p.stderr.decode()
    doc = json.loads(p.stdout)
    assert doc["speakers"] == {} and doc["segments"]
    assert all(set(s) == {"t", "text"} for s in doc["segments"])  # no "w", and no speaker without diarization
    assert "ask not what your country" in " ".join(s["text"] for s in doc["segments"]).lower()


def test_all_needs_an_output_dir(tmp_path: Path, data_dir: Path) -> None:
    p = _cli(["transcribe", "-q", "-m", "tiny.en", "-f", "all", str(data_dir / "jfk.wav")], tmp_path)
    assert p.returncode == UsageError.exit_code
    assert p.stderr.decode().splitlines() == ["whispdiar: error: -f all writes every format and needs --output-dir DIR"]


def test_all_is_all_or_nothing_when_one_file_cannot_be_written(tmp_path: Path, data_dir: Path) -> None:
    out = tmp_path / "out"
    (out / "jfk.vtt").mkdir(parents=True)  # a directory where the VTT file should go: its rename fails
    p = _cli(["transcribe", "-q", "--no-diarize", "-m", "tiny.en", "-f", "all", "-d", str(out),
              str(data_dir / "jfk.wav")], tmp_path)
    err = p.stderr.decode()
    assert p.returncode == OutputError.exit_code and "Traceback" not in err
    assert len(err.splitlines()) == 1 and "jfk.vtt" in err
    left = sorted(x.name for x in out.iterdir() if x.name != "whispdiar-manifest.jsonl")
    assert left == ["jfk.vtt"]  # the other six were removed again, no temp files
