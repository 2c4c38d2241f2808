"""A real server stopped under a running job: SIGKILL (nothing runs on the way out) and
SIGTERM (a clean stop). After a restart the job is resumed, or reported interrupted with
``--no-resume``; never lost, never served half-written; the voiceprint database (written by
speaker memory at the end of each job) passes SQLite's integrity check.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from helpers import models_installed
from server_helpers import CLI, DATA, Served, long_recording, submit, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not models_installed("tiny.en", "segmentation-3.0", "campplus"),
                                                   reason="needs `make models`")]


def _integrity(db: Path) -> None:
    for path in (db, db.parent / "state" / "jobs.db"):
        if path.exists():
            con = sqlite3.connect(path)
            try:
                assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok", path
            finally:
                con.close()


def _setup(tmp_path: Path) -> tuple[list[str], Path, Path]:
    db = tmp_path / "speakers.db"
    # Speaker memory on: every job writes the voiceprint database when it ends.
    p = subprocess.run(CLI + ["speakers", "config", "remember", "on", "--speakers-db", str(db)], capture_output=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr.decode()
    args = ["-m", "tiny.en", "--state-dir", str(tmp_path / "state"), "--speakers-db", str(db)]
    return args, db, long_recording(tmp_path / "long.flac", repeats=2)


def _running(http: object, job_id: str) -> dict:
    return wait_for(http, job_id, ("done", "failed"),  # type: ignore[arg-type]
                    check=lambda j: j["status"] == "running" and j["progress"]["fraction"] > 0.05)


def _complete(http: object, job: dict) -> None:
    """Every format of a finished job is there, whole, and nothing else is in its result directory."""
    assert job["status"] == "done", job
    for fmt in job["formats"]:
        r = http.get(f"/v1/jobs/{job['id']}/result", params={"format": fmt})  # type: ignore[attr-defined]
        assert r.status_code == 200 and r.text.endswith("\n"), fmt
        if fmt in ("json", "json-compact", "verbose_json"):
            json.loads(r.text)
    assert json.loads(http.get(f"/v1/jobs/{job['id']}/result").text)["segments"]  # type: ignore[attr-defined]


def test_sigkill_mid_job_then_restart(tmp_path: Path) -> None:
    args, db, long = _setup(tmp_path)
    state = tmp_path / "state"
    first = Served(args)
    with first.client() as http:
        warm = wait_for(http, submit(http, DATA / "diar_sample.flac")["id"], ("done", "failed"))
        assert warm["status"] == "done"  # the voiceprint database has been written
        killed = submit(http, long)
        _running(http, killed["id"])
    first.proc.kill()  # SIGKILL mid-job
    first.proc.wait(30)
    _integrity(db)
    assert not (state / "jobs" / killed["id"] / "result").exists()

    # --no-resume: the job is reported, with a reason, and has no result.
    second = Served([*args, "--no-resume"])
    with second.client() as http:
        job = http.get(f"/v1/jobs/{killed['id']}").json()
        assert job["status"] == "interrupted" and "restarted with --no-resume" in job["error"]["message"]
        assert http.get(f"/v1/jobs/{killed['id']}/result").status_code == 409
        assert http.get(f"/v1/jobs/{warm['id']}").json()["status"] == "done"  # finished jobs are kept
        again = submit(http, long)
        _running(http, again["id"])
    second.proc.kill()
    second.proc.wait(30)
    _integrity(db)

    # A normal restart resumes it from the start, to a complete result.
    third = Served(args)
    assert any("1 unfinished job resumed" in line for line in third.lines), third.lines
    with third.client() as http:
        job = wait_for(http, again["id"], ("done", "failed", "interrupted"))
        assert job["attempts"] == 2
        _complete(http, job)
        assert not [p for p in (state / "jobs" / job["id"] / "result").iterdir() if p.name.startswith(".")]
    assert third.stop() == 0, third.stderr()
    _integrity(db)


def test_sigterm_stops_cleanly_and_the_job_resumes(tmp_path: Path) -> None:
    args, db, long = _setup(tmp_path)
    first = Served(args)
    with first.client() as http:
        job = submit(http, long)
        _running(http, job["id"])
    t0 = time.monotonic()
    code = first.stop(signal.SIGTERM)
    assert code == 0 and time.monotonic() - t0 < 15, first.stderr()
    assert first.lines[-1] == "whispdiar: serve: stopped (SIGTERM); 1 job cancelled mid-way, resumed at the next start"
    assert "Traceback" not in first.stderr()
    _integrity(db)
    second = Served(args)
    with second.client() as http:
        done = wait_for(http, job["id"], ("done", "failed", "interrupted"))
        _complete(http, done)
    assert second.stop(signal.SIGINT) == 0
    assert second.lines[-1] == "whispdiar: serve: stopped (SIGINT)"
    _integrity(db)
