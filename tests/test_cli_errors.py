"""Bad input through the real CLI: one line on stderr, a distinct exit code, never a traceback.

Each test runs ``python -m whispdiar.cli`` in a subprocess (the same entry point as the
console script) on audio generated into tmp_path. The exit codes are the table in
docs/cli.md; they come from whispdiar.errors so the two cannot drift apart silently.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from helpers import encode, video_only

from whispdiar import errors
from whispdiar.batch.manifest import MANIFEST_NAME

SR = 16000
CLI = [sys.executable, "-m", "whispdiar.cli"]
# As root, permission bits are ignored unless these capabilities are dropped.
DROP_DAC = ["setpriv", "--inh-caps=-dac_override,-dac_read_search",
            "--bounding-set=-dac_override,-dac_read_search"]


def run(args: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None, stdin: bytes | None = None,
        prefix: list[str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run((prefix or []) + CLI + args, input=stdin if stdin is not None else b"",
                          capture_output=True, env=full_env, cwd=cwd, timeout=timeout)


def stderr_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [ln for ln in proc.stderr.decode("utf-8", "replace").splitlines() if ln.strip()]


def assert_error(proc: subprocess.CompletedProcess, code: int, pattern: str) -> str:
    """Exit ``code``; stderr is exactly one line ``whispdiar: error: ...`` matching ``pattern``."""
    err = proc.stderr.decode("utf-8", "replace")
    assert "Traceback" not in err, err
    lines = stderr_lines(proc)
    assert proc.returncode == code, f"exit {proc.returncode}, expected {code}; stderr: {err}"
    assert len(lines) == 1, f"expected one line on stderr, got: {lines}"
    assert lines[0].startswith("whispdiar: error: "), lines[0]
    assert re.search(pattern, lines[0]), f"{pattern!r} not in {lines[0]!r}"
    return lines[0]




# Each command as it would be used on one file; -q keeps stderr to the error line only.
COMMANDS = {
    "diarize": ["diarize", "-q"],
    "transcribe": ["transcribe", "-q", "--no-diarize", "--model", "tiny.en"],
}


@pytest.fixture(params=list(COMMANDS), scope="module")
def cmd(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    name = request.param
    argv = COMMANDS[name]
    probe = run(argv + [str(tmp_path_factory.mktemp("probe") / "missing.wav")])
    if probe.returncode in (errors.ModelError.exit_code, errors.ModelNotInstalled.exit_code):
        pytest.skip(f"`whispdiar {name}` loads its models before checking inputs and they are not installed: "
                    + stderr_lines(probe)[-1])
    return argv


def tone_file(path: Path, seconds: float = 2.0, rate: int = SR, subtype: str = "PCM_16", **kw: object) -> Path:
    t = np.arange(int(seconds * rate)) / rate
    sf.write(path, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), rate, subtype=subtype, **kw)
    return path


# --------------------------------------------------------------------------- input files
def test_missing_file(cmd: list[str], tmp_path: Path) -> None:
    assert_error(run(cmd + [str(tmp_path / "nope.wav")]), errors.InputNotFound.exit_code, "nope.wav: no such file")


def test_directory(cmd: list[str], tmp_path: Path) -> None:
    assert_error(run(cmd + [str(tmp_path)]), errors.InputIsDirectory.exit_code, "is a directory")


def test_empty_file(cmd: list[str], tmp_path: Path) -> None:
    (tmp_path / "empty.wav").touch()
    assert_error(run(cmd + [str(tmp_path / "empty.wav")]), errors.EmptyInput.exit_code, r"empty \(0 bytes\)")


def test_zero_length_audio(cmd: list[str], tmp_path: Path) -> None:
    p = tmp_path / "zero.wav"
    sf.write(p, np.zeros(0, np.float32), SR)
    assert_error(run(cmd + [str(p)]), errors.NoAudio.exit_code, "no audio samples")


def test_truncated_wav(cmd: list[str], tmp_path: Path) -> None:
    p = tone_file(tmp_path / "cut.wav", 6.0)
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    assert_error(run(cmd + [str(p)]), errors.CorruptAudio.exit_code, "truncated: header promises 6.0 s")


def test_truncated_flac(cmd: list[str], tmp_path: Path) -> None:
    p = tmp_path / "cut.flac"
    sf.write(p, (0.3 * np.random.default_rng(0).standard_normal(SR * 20)).astype(np.float32), SR)
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    assert_error(run(cmd + [str(p)]), errors.CorruptAudio.exit_code, "cut.flac: (corrupt|truncated)")


def test_text_file_renamed_wav(cmd: list[str], tmp_path: Path) -> None:
    p = tmp_path / "notes.wav"
    p.write_text("these are meeting notes, not a recording\n" * 50)
    assert_error(run(cmd + [str(p)]), errors.NotAudio.exit_code, "not an audio file")


def test_nan_samples(cmd: list[str], tmp_path: Path) -> None:
    p = tmp_path / "nan.wav"
    x = np.zeros(SR * 3, np.float32)
    x[SR * 2] = np.nan
    sf.write(p, x, SR, subtype="FLOAT")
    assert_error(run(cmd + [str(p)]), errors.NonFiniteAudio.exit_code, "NaN or infinite")


def test_inf_samples(cmd: list[str], tmp_path: Path) -> None:
    p = tmp_path / "inf.wav"
    x = np.zeros(SR * 3, np.float32)
    x[10] = np.inf
    sf.write(p, x, SR, subtype="FLOAT")
    assert_error(run(cmd + [str(p)]), errors.NonFiniteAudio.exit_code, "NaN or infinite")


def test_random_bytes(cmd: list[str], tmp_path: Path) -> None:
    p = tmp_path / "noise.flac"
    p.write_bytes(np.random.default_rng(7).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    assert_error(run(cmd + [str(p)]), errors.NotAudio.exit_code, "not an audio file")


def _can_drop_dac(tmp_path: Path) -> bool:
    """True when running the CLI under DROP_DAC really makes mode-000 files unreadable."""
    if shutil.which("setpriv") is None:
        return False
    probe = tmp_path / "probe"
    probe.write_text("x")
    probe.chmod(0)
    try:
        r = subprocess.run(DROP_DAC + ["cat", str(probe)], capture_output=True)
        return r.returncode != 0 and b"denied" in r.stderr
    finally:
        probe.chmod(0o600)


def _deny_prefix(tmp_path: Path) -> list[str]:
    if os.geteuid() != 0:
        return []
    if not _can_drop_dac(tmp_path):
        pytest.skip("running as root and cannot drop CAP_DAC_OVERRIDE (no setpriv / not permitted): "
                    "permission bits are not enforced for root")
    return DROP_DAC


def test_permission_denied(cmd: list[str], tmp_path: Path) -> None:
    prefix = _deny_prefix(tmp_path)
    p = tone_file(tmp_path / "secret.wav")
    p.chmod(0)
    try:
        assert_error(run(cmd + [str(p)], prefix=prefix), errors.InputPermissionDenied.exit_code,
                     "secret.wav: permission denied")
    finally:
        p.chmod(0o600)


def test_channel_out_of_range(cmd: list[str], tmp_path: Path) -> None:
    p = tone_file(tmp_path / "mono.wav")
    assert_error(run(cmd + ["--channel", "3", str(p)]), errors.UsageError.exit_code, "there is no channel 3")


def test_damaged_m4a(cmd: list[str], tmp_path: Path) -> None:
    p = tmp_path / "talk.m4a"
    p.write_bytes(b"\x00\x00\x00\x20ftypM4A " + bytes(256))
    assert_error(run(cmd + [str(p)]), errors.CorruptAudio.exit_code, "talk.m4a: corrupt or truncated")


def test_cut_m4a(cmd: list[str], tmp_path: Path) -> None:
    t = np.arange(SR * 4) / SR
    p = encode(tmp_path / "call.m4a", (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), SR, "aac")
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    assert_error(run(cmd + [str(p)]), errors.CorruptAudio.exit_code, "call.m4a: corrupt or truncated")


def test_video_without_audio(cmd: list[str], tmp_path: Path) -> None:
    p = video_only(tmp_path / "screen.mp4")
    assert_error(run(cmd + [str(p)]), errors.NoAudio.exit_code, r"screen.mp4: has no audio stream \(only video\)")


def test_unknown_codec(cmd: list[str], tmp_path: Path) -> None:
    p = tone_file(tmp_path / "odd.wav")
    b = bytearray(p.read_bytes())
    i = b.find(b"fmt ")
    b[i + 8 : i + 10] = struct.pack("<H", 0x1234)  # a format tag no decoder knows
    p.write_bytes(bytes(b))
    assert_error(run(cmd + [str(p)]), errors.UnsupportedCodec.exit_code, "odd.wav: its audio codec is not one")


def test_stdin_empty(cmd: list[str]) -> None:
    assert_error(run(cmd + ["-"], stdin=b""), errors.EmptyInput.exit_code, "empty")


def test_stdin_not_audio(cmd: list[str]) -> None:
    assert_error(run(cmd + ["-"], stdin=b"hello, world\n" * 100), errors.NotAudio.exit_code, "not an audio file")


# --------------------------------------------------------------------------- outputs
def test_unwritable_output_dir(cmd: list[str], tmp_path: Path) -> None:
    prefix = _deny_prefix(tmp_path)
    p = tone_file(tmp_path / "a.wav")
    ro = tmp_path / "readonly"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        assert_error(run(cmd + [str(p), "-o", str(ro / "a.txt")], prefix=prefix), errors.OutputError.exit_code,
                     "not writable")
        assert not any(ro.iterdir())
    finally:
        ro.chmod(0o755)


def test_output_dir_is_a_file(cmd: list[str], tmp_path: Path) -> None:
    p = tone_file(tmp_path / "a.wav")
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    assert_error(run(cmd + [str(p), "-d", str(blocker / "sub")]), errors.OutputError.exit_code,
                 "cannot create output directory")


# --------------------------------------------------------------------------- models
def test_missing_model_names_the_fetch_command(tmp_path: Path) -> None:
    # An empty WHISPDIAR_HOME has no models: the message must say how to get them.
    p = tone_file(tmp_path / "a.wav")
    # --offline (here its environment variable): no first-use download.
    proc = run(["diarize", "-q", str(p)], env={"WHISPDIAR_HOME": str(tmp_path / "home"), "WHISPDIAR_OFFLINE": "1"})
    assert_error(proc, errors.ModelNotInstalled.exit_code,
                 r"not installed; run `whispdiar models fetch segmentation-3.0 campplus` \(--offline")


def test_transcribe_missing_model(tmp_path: Path) -> None:
    p = tone_file(tmp_path / "a.wav")
    proc = run(["transcribe", "-q", "--no-diarize", "--model", "tiny.en", str(p)],
               env={"WHISPDIAR_HOME": str(tmp_path / "home"), "WHISPDIAR_OFFLINE": "1"})
    assert_error(proc, errors.ModelNotInstalled.exit_code, r"run `whispdiar models fetch tiny.en`")


def test_unknown_model(tmp_path: Path) -> None:
    p = tone_file(tmp_path / "a.wav")
    assert_error(run(["transcribe", "-q", "--model", "nosuch", str(p)]), errors.ModelError.exit_code,
                 "unknown model 'nosuch'")


def test_unknown_model_name_in_models_path() -> None:
    assert_error(run(["models", "path", "nosuch"]), errors.ModelError.exit_code, "unknown model 'nosuch'")


# --------------------------------------------------------------------------- batch
def test_batch_all_bad_reports_each_and_summary(cmd: list[str], tmp_path: Path) -> None:
    (tmp_path / "empty.wav").touch()
    out = tmp_path / "out"
    proc = run(cmd + [str(tmp_path / "missing.wav"), str(tmp_path / "empty.wav"), "-d", str(out)])
    lines = stderr_lines(proc)
    assert "Traceback" not in proc.stderr.decode()
    assert proc.returncode == errors.InputNotFound.exit_code  # the first failure's code when nothing succeeded
    assert any("missing.wav: no such file" in ln for ln in lines)
    assert any("empty.wav: file is empty" in ln for ln in lines)
    assert lines[-1].startswith("whispdiar: 0 of 2 inputs done, 2 failed")
    assert not out.exists() or [p.name for p in out.iterdir()] == [MANIFEST_NAME]  # no outputs, the failures noted


@pytest.mark.slow
def test_batch_continues_past_a_bad_file(cmd: list[str], tmp_path: Path) -> None:
    good = tone_file(tmp_path / "good.wav", 5.0)
    bad = tmp_path / "bad.wav"
    bad.write_text("not audio")
    good2 = tone_file(tmp_path / "good2.wav", 5.0)
    out = tmp_path / "out"
    proc = run(cmd + [str(good), str(bad), str(good2), "-d", str(out)])
    assert "Traceback" not in proc.stderr.decode()
    assert proc.returncode == errors.EXIT_PARTIAL
    assert sorted(p.name for p in out.iterdir()) == ["good.txt", "good2.txt", MANIFEST_NAME]
    lines = stderr_lines(proc)
    assert any("bad.wav: not an audio file" in ln for ln in lines)
    assert lines[-1] == "whispdiar: 2 of 3 inputs done, 1 failed: " + str(bad)


@pytest.mark.slow
def test_silence_is_not_an_error(cmd: list[str], tmp_path: Path) -> None:
    p = tmp_path / "silence.wav"
    sf.write(p, np.zeros(SR * 20, np.int16), SR)
    proc = run(cmd + [str(p)])
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout.strip() == b""
    assert stderr_lines(proc) == []


@pytest.mark.slow
@pytest.mark.parametrize("rate", [8000, 44100])
def test_other_rates_and_formats_run(cmd: list[str], tmp_path: Path, rate: int) -> None:
    p = tmp_path / "tone.flac"
    tone_file(p, 12.0, rate, subtype="PCM_24")
    proc = run(cmd + [str(p)])
    assert proc.returncode == 0, proc.stderr.decode()


def test_streaming_wav_header(cmd: list[str], tmp_path: Path) -> None:
    # Header with size 0xFFFFFFFF (recorders, pipes) is valid: must not be called truncated.
    p = tone_file(tmp_path / "s.wav", 1.0)
    b = bytearray(p.read_bytes())
    i = b.find(b"data")
    b[i + 4 : i + 8] = struct.pack("<I", 0xFFFFFFFF)
    p.write_bytes(bytes(b))
    proc = run(cmd + [str(p)])
    assert "truncated" not in proc.stderr.decode()
    assert "Traceback" not in proc.stderr.decode()


def test_stdin_copy_is_removed_after_an_early_error(tmp_path: Path) -> None:
    # Whatever fails after stdin was copied (here: no models installed), the copy must go.
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    wav = tone_file(tmp_path / "a.wav")
    proc = run(["diarize", "-q", "-"], stdin=wav.read_bytes(),
               env={"TMPDIR": str(tmpdir), "WHISPDIAR_HOME": str(tmp_path / "home"), "WHISPDIAR_OFFLINE": "1"})
    assert proc.returncode != 0
    assert [p.name for p in tmpdir.iterdir() if p.name.startswith("whispdiar")] == []
