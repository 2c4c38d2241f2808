"""Resumable batches (issue 19): the manifest, skipping complete inputs, --from-list, batch-status.

Real CLI runs in subprocesses (tiny.en, short LibriSpeech clips); a batch is interrupted
by SIGINT or SIGKILL once the first input's outputs appear, then restarted.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import models_installed

from whispdiar import errors
from whispdiar.batch.manifest import MANIFEST_NAME, FileRecord, Manifest, read_list

DATA = Path(__file__).parent / "data"
CLI = [sys.executable, "-m", "whispdiar"]
ARGS = ["transcribe", "-m", "tiny.en", "--no-diarize", "--threads", "1", "-f", "txt", "-f", "json"]
CLIPS = ["ls-1688-142285-0006.flac", "ls-1998-15444-0001.flac", "ls-2033-164914-0003.flac", "jfk.wav"]
needs_models = pytest.mark.skipif(not models_installed("tiny.en", "silero-vad"), reason="models not installed")


def run(args: list[str], cwd: Path, stdin: bytes = b"") -> subprocess.CompletedProcess:
    return subprocess.run(CLI + args, cwd=cwd, input=stdin, capture_output=True, timeout=300)


def inputs(tmp: Path) -> list[Path]:
    d = tmp / "in"
    d.mkdir(exist_ok=True)
    return [Path(shutil.copy(DATA / c, d / c)) for c in CLIPS]


def outputs(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.name != MANIFEST_NAME}


def latest(out: Path) -> dict[str, FileRecord]:
    return {Path(k).name: r for k, r in Manifest(out).latest().items()}


# ------------------------------------------------------------------------- manifest unit


def test_torn_last_line_is_ignored_and_ended(tmp_path: Path) -> None:
    m = Manifest(tmp_path)
    for i in range(3):
        m.append(FileRecord(f"/a/{i}.wav", f"{i}.wav", "done", 1, "x"))
    whole = m.path.read_bytes()
    m.path.write_bytes(whole + whole.splitlines(keepends=True)[0][:40])  # what a write cut short leaves
    assert len(m.latest()) == 3 and m.torn_lines == 1
    m.append(FileRecord("/a/3.wav", "3.wav", "failed", error="bad"))
    recs = m.latest()
    assert sorted(recs) == ["/a/0.wav", "/a/1.wav", "/a/2.wav", "/a/3.wav"] and recs["/a/3.wav"].error == "bad"
    assert m.torn_lines == 1  # the torn line stayed alone on its line; ours is whole
    assert m.path.read_bytes().startswith(whole)  # earlier lines never rewritten


def test_read_list(tmp_path: Path) -> None:
    lst = tmp_path / "files.txt"
    lst.write_text("a b.wav\n\n#c.wav\r\n")
    assert read_list(str(lst)) == ["a b.wav", "#c.wav"]
    with pytest.raises(errors.UsageError, match="names '-'"):
        read_list("-", stdin_text="a.wav\n-\n")
    with pytest.raises(errors.UsageError, match="no such list file"):
        read_list(str(tmp_path / "nope.txt"))


def test_stdin_cannot_be_list_and_audio(tmp_path: Path) -> None:
    proc = run(ARGS + ["--from-list", "-", "-", "-d", "out"], tmp_path, stdin=b"a.wav\n")
    assert proc.returncode == errors.UsageError.exit_code
    assert proc.stderr.decode().strip().splitlines() == [
        "whispdiar: error: standard input is the list (--from-list -); it cannot also be audio (-)"]
    proc = run(["batch-status", "out"], tmp_path)
    assert proc.returncode == errors.UsageError.exit_code and "no batch manifest" in proc.stderr.decode()


# ------------------------------------------------------------------------- end to end


def _interrupt_after_first(cmd: list[str], cwd: Path, out: Path, sig: int) -> subprocess.CompletedProcess:
    """Start the batch; send ``sig`` as soon as the first input's outputs are on disk."""
    proc = subprocess.Popen(CLI + cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if any(r.status == "done" for r in (Manifest(out).latest().values() if out.is_dir() else [])):
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the batch ended before it could be interrupted"
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=30)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


@pytest.mark.slow
@needs_models
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["sigint", "kill-9"])
def test_interrupted_batch_resumes(tmp_path: Path, sig: int) -> None:
    files = inputs(tmp_path)
    out = tmp_path / "out"
    cmd = ARGS + ["-q", "-d", str(out)] + [str(f) for f in files]
    first = _interrupt_after_first(cmd, tmp_path, out, sig)
    assert first.returncode == (errors.EXIT_SIGINT if sig == signal.SIGINT else -signal.SIGKILL)
    done_before = {n for n, r in latest(out).items() if r.status == "done"}
    assert 1 <= len(done_before) < len(files)
    kept = {n: (out / n).stat().st_mtime_ns for n in os.listdir(out) if n != MANIFEST_NAME}
    status = run(["batch-status", str(out)], tmp_path)
    assert status.returncode == errors.EXIT_PARTIAL
    assert f"done: {len(done_before)}" in status.stdout.decode()

    again = run(ARGS + ["-d", str(out)] + [str(f) for f in files], tmp_path)
    assert again.returncode == 0, again.stderr.decode()
    err = again.stderr.decode()
    assert f"skipped {len(done_before)} input" in err
    for name in done_before:  # not redone: their outputs untouched
        stem = Path(name).stem
        assert f"wrote {out / stem}.txt" not in err
        for ext in ("txt", "json"):
            if f"{stem}.{ext}" in kept:
                assert (out / f"{stem}.{ext}").stat().st_mtime_ns == kept[f"{stem}.{ext}"]
    assert sorted(outputs(out)) == sorted(f"{f.stem}.{e}" for f in files for e in ("json", "txt"))
    assert all(r.status == "done" for r in latest(out).values())
    status = run(["batch-status", str(out)], tmp_path)
    assert status.returncode == 0 and f"done: {len(files)}" in status.stdout.decode()


@pytest.mark.slow
@needs_models
def test_skip_changed_tampered_overwrite_and_from_list(tmp_path: Path) -> None:
    files = inputs(tmp_path)[:3]
    bad = tmp_path / "in" / "corrupt.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really")
    lst = tmp_path / "files.txt"
    lst.write_text("".join(f"{f}\n" for f in files[1:]))
    out = tmp_path / "out"
    # arguments and a list file together; the corrupt input fails alone
    proc = run(ARGS + ["-d", str(out), "--from-list", str(lst), str(files[0]), str(bad)], tmp_path)
    assert proc.returncode == errors.EXIT_PARTIAL, proc.stderr.decode()
    assert proc.stderr.decode().strip().splitlines()[-1].startswith("whispdiar: 3 of 4 inputs done, 1 failed")
    first = outputs(out)
    assert len(first) == 6
    recs = latest(out)
    assert recs["corrupt.wav"].status == "failed" and recs["corrupt.wav"].exit_code == errors.CorruptAudio.exit_code
    assert {json.loads(line)["kind"] for line in (out / MANIFEST_NAME).read_text().splitlines()} == {"run", "file"}

    # from stdin; a changed input and a tampered output are redone, the rest skipped
    shutil.copy(DATA / "ls-2033-164914-0009.flac", files[1])
    (out / f"{files[2].stem}.json").write_text("{}\n")  # same name, not what the manifest recorded
    listing = "".join(f"{f}\n" for f in files).encode()
    proc = run(ARGS + ["-d", str(out), "--from-list", "-"], tmp_path, stdin=listing)
    assert proc.returncode == 0, proc.stderr.decode()
    err = proc.stderr.decode()
    assert "skipped 1 input" in err and f"wrote {out / files[0].stem}.txt" not in err
    assert f"wrote {out / files[1].stem}.txt" in err and f"wrote {out / files[2].stem}.json" in err
    now = outputs(out)
    assert now[f"{files[1].stem}.txt"] != first[f"{files[1].stem}.txt"]  # the new content's transcript
    assert json.loads(now[f"{files[2].stem}.json"])["segments"]  # the tampered file replaced by a real one

    # other options change the outputs: redone; --overwrite redoes all
    proc = run(ARGS + ["-d", str(out), "--no-words", "-q"] + [str(f) for f in files], tmp_path)
    assert proc.returncode == 0 and "skipped" not in proc.stderr.decode()
    proc = run(ARGS + ["-d", str(out), "--no-words"] + [str(f) for f in files], tmp_path)
    assert "skipped 3 inputs" in proc.stderr.decode()
    proc = run(ARGS + ["-d", str(out), "--no-words", "--overwrite"] + [str(f) for f in files], tmp_path)
    assert proc.returncode == 0 and "skipped" not in proc.stderr.decode()
    assert proc.stderr.decode().count("wrote ") == 6


@needs_models
def test_ray_unreachable_address_fails_fast(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    t0 = time.monotonic()
    proc = run(ARGS + ["-q", "--ray", "--ray-address", "127.0.0.1:1", "-d", "out", str(DATA / "jfk.wav")], tmp_path)
    assert time.monotonic() - t0 < 30
    lines = proc.stderr.decode().strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1, lines
    assert lines[0].startswith("whispdiar: error: cannot reach Ray at 127.0.0.1:1: ")
