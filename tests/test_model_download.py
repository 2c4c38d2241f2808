"""The whisper.cpp ggml family by name, and the download path against a real HTTP server.

The server is ``http.server`` on loopback in a thread, serving our converted tiny.en
(a real 78 MB ggml file) under the name whisper.cpp publishes it as; a scratch manifest
holds one family row with that file's size and SHA-1, and ``WHISPDIAR_MODEL_BASE_URL``
points the family at the server. Each test changes what the server does: flips bytes,
closes the connection mid-file, ignores Range, offers a file of the wrong size.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from whispdiar import models
from whispdiar.cli import app
from whispdiar.errors import FetchError, ModelNotInstalled

NAME = "tiny.en"
FILE = f"ggml-{NAME}.bin"
CLI = [sys.executable, "-m", "whispdiar.cli"]


@dataclass
class Behaviour:
    mode: str = "good"  # good, flip, cut-once, cut-once-no-range, cut-always, short
    cut_at: int = 0
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range header)


def _handler(data: bytes, b: Behaviour) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # keep the test output clean
            pass

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            rng = self.headers.get("Range")
            b.requests.append((self.path, rng))
            if self.path != f"/{FILE}":
                self.send_error(404)
                return
            body = data
            if b.mode == "flip":
                body = bytearray(data)
                for i in range(len(body) // 2, len(body) // 2 + 64):
                    body[i] ^= 0xFF
                body = bytes(body)
            elif b.mode == "short":
                body = data[:-4096]
            start = 0
            m = re.fullmatch(r"bytes=(\d+)-", rng or "")
            honours_range = b.mode not in ("cut-once-no-range",)
            if m and honours_range:
                start = int(m[1])
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(200)
            self.send_header("Content-Length", str(len(body) - start))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()
            first = len(b.requests) == 1
            if b.mode == "cut-always" or (b.mode.startswith("cut-once") and first):
                self.wfile.write(body[start:start + b.cut_at])
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)  # the connection drops mid-file
                return
            self.wfile.write(body[start:])

    return Handler


@pytest.fixture(scope="module")
def served(whisper_tiny_en_path: Path) -> tuple[bytes, str]:
    data = whisper_tiny_en_path.read_bytes()  # read-only use of the installed model
    return data, hashlib.sha1(data).hexdigest()


@pytest.fixture
def server(served: tuple[bytes, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Behaviour]:
    data, sha1 = served
    b = Behaviour(cut_at=len(data) // 3)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(data, b))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    manifest = tmp_path / "manifest.json"
    real = json.loads(models.MANIFEST.read_text())["whisper_family"]
    family = {**real, "models": [[NAME, len(data), sha1, "test"]]}
    manifest.write_text(json.dumps({"whisper_family": family, "models": {}}))
    monkeypatch.setattr(models, "MANIFEST", manifest)
    monkeypatch.setattr(models, "RESUME_DELAY", 0.0)
    monkeypatch.setenv("WHISPDIAR_HOME", str(tmp_path / "home"))
    monkeypatch.setenv(models.BASE_URL_ENV, f"http://127.0.0.1:{httpd.server_address[1]}/")
    try:
        yield b
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def _leftovers(home: Path) -> list[str]:
    d = home / "models"
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


# --- the family table --------------------------------------------------------------------


def test_the_whole_family_is_in_the_registry_with_published_checksums(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(models.BASE_URL_ENV, raising=False)
    specs = models.load_manifest()
    wanted = {"tiny", "tiny.en", "base", "base.en", "small", "small.en", "medium", "medium.en", "large-v1",
              "large-v2", "large-v3", "large-v3-turbo", "base-q5_1", "large-v3-turbo-q5_0", "large-v3-turbo-q8_0"}
    family = {n: s for n, s in specs.items() if s.role == "asr"}
    assert wanted <= set(family) and len(family) == 29
    for name, spec in family.items():
        official = spec.sources[0]
        assert official.url == f"https://huggingface.co/ggerganov/whisper.cpp/resolve/main/ggml-{name}.bin"
        assert spec.file == f"ggml-{name}.bin"
        assert re.fullmatch(r"[0-9a-f]{40}", official.sha1 or "") and official.size and official.size > 30e6
    assert specs["small"].sources[0].sha1 == "55356645c2b361a969dfd0ef2c5a50d530afd8d5"  # whisper.cpp README
    # The registry-package fallbacks stay, after the official file: the two defaults, and
    # base quantized (from the installed base, or the same packages) like whisper.cpp's tool.
    for name in ("base", "tiny.en"):
        assert [s.kind for s in specs[name].sources] == ["url", "pypi"] and specs[name].default
    for name in ("base-q8_0", "base-q5_1"):
        assert [s.kind for s in specs[name].sources] == ["url", "model", "pypi"] and not specs[name].default
        assert {s.quantize for s in specs[name].sources[1:]} == {name[-4:]} and specs[name].family
        assert specs[name].sources[1].sha256 == specs[name].sources[2].sha256
        assert specs[name].sources[0].size == specs[name].sources[2].size  # the official file's size
    assert {n for n, s in family.items() if len(s.sources) > 1} == {"base", "tiny.en", "base-q8_0", "base-q5_1"}
    assert not specs["small"].default and specs["small"].family and not specs["base"].family
    monkeypatch.setenv(models.BASE_URL_ENV, "http://mirror.example/whisper/")
    assert models.get("large-v3").sources[0].url == "http://mirror.example/whisper/ggml-large-v3.bin"


def test_models_list_is_short_unless_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WHISPDIAR_HOME", str(tmp_path))
    short = CliRunner().invoke(app, ["models", "list"])
    names = [r.split("\t")[0] for r in short.stdout.splitlines()]
    assert "base" in names and "small" not in names
    assert "27 more whisper models" in short.stderr and "models list --all" in short.stderr
    full = CliRunner().invoke(app, ["models", "list", "--all"])
    rows = {r.split("\t")[0]: r.split("\t") for r in full.stdout.splitlines()}
    assert rows["large-v3-turbo-q5_0"][3:5] == ["missing", "547 MiB"]
    assert rows["small"][4] == "465 MiB" and full.stderr == ""


# --- downloads from the loopback server ----------------------------------------------------


def test_good_download_installs_stamps_and_transcribes(server: Behaviour, served: tuple[bytes, str],
                                                       data_dir: Path) -> None:
    res = models.fetch(NAME)
    spec = models.get(NAME)
    assert res.fetched and res.source == "huggingface ggerganov/whisper.cpp"
    stamp = json.loads(spec.path.with_name(FILE + ".verified.json").read_text())
    assert stamp["sha1"] == served[1] and stamp["size"] == len(served[0]) and stamp["source"] == res.source
    assert server.requests == [(f"/{FILE}", None)]
    assert _leftovers(spec.path.parent.parent) == [FILE, FILE + ".verified.json"]
    # `--model NAME` uses the fetched file (the test manifest has no diarization models).
    r = CliRunner().invoke(app, ["transcribe", "-q", "--no-diarize", "-m", NAME, str(data_dir / "jfk.wav")])
    assert r.exit_code == 0, r.stderr
    assert "ask not what your country can do for you" in r.stdout.lower()


def test_first_use_fetches_the_missing_model_then_transcribes(server: Behaviour, data_dir: Path) -> None:
    # No `models fetch`: transcribe finds tiny.en missing, says what it downloads from where
    # and how big, fetches it (verified as by `models fetch`) and goes on.
    r = CliRunner().invoke(app, ["transcribe", "--no-diarize", "-m", NAME, str(data_dir / "jfk.wav")])
    assert r.exit_code == 0, r.stderr
    host = os.environ[models.BASE_URL_ENV].split("//")[1].rstrip("/")
    assert (f"whispdiar: model '{NAME}' is not installed: downloading it from {host} (74 MiB) to "
            f"{models.get(NAME).path.parent}") in r.stderr
    assert "ask not what your country can do for you" in r.stdout.lower()
    assert server.requests == [(f"/{FILE}", None)]
    assert models.verify(models.get(NAME)) == "huggingface ggerganov/whisper.cpp"
    r = CliRunner().invoke(app, ["transcribe", "-q", "--no-diarize", "-m", NAME, str(data_dir / "jfk.wav")])
    assert r.exit_code == 0 and len(server.requests) == 1  # the second run downloads nothing


def test_corrupted_download_is_refused(server: Behaviour) -> None:
    server.mode = "flip"
    r = CliRunner().invoke(app, ["models", "fetch", "-q", NAME])
    assert r.exit_code == FetchError.exit_code
    (line,) = r.stderr.splitlines()
    assert line.startswith(f"whispdiar: error: could not fetch model '{NAME}'; tried: huggingface")
    assert "sha1" in line and "differs from the published" in line
    assert _leftovers(Path(os.environ["WHISPDIAR_HOME"])) == []  # nothing installed, no temp files
    with pytest.raises(ModelNotInstalled):
        models.resolve(NAME)


def test_interrupted_download_resumes_with_a_range_request(server: Behaviour, served: tuple[bytes, str]) -> None:
    server.mode = "cut-once"
    log: list[str] = []
    res = models.fetch(NAME, report=log.append)
    assert res.fetched
    assert server.requests == [(f"/{FILE}", None), (f"/{FILE}", f"bytes={server.cut_at}-")]
    assert any("resuming (1/" in m for m in log)
    assert hashlib.sha1(models.get(NAME).path.read_bytes()).hexdigest() == served[1]


def test_interrupted_download_restarts_when_the_server_ignores_range(server: Behaviour,
                                                                      served: tuple[bytes, str]) -> None:
    server.mode = "cut-once-no-range"
    log: list[str] = []
    models.fetch(NAME, report=log.append)
    assert len(server.requests) == 2 and server.requests[1][1] == f"bytes={server.cut_at}-"
    assert any("does not resume downloads; starting again" in m for m in log)
    assert hashlib.sha1(models.get(NAME).path.read_bytes()).hexdigest() == served[1]


def test_download_that_keeps_breaking_is_never_installed(server: Behaviour, monkeypatch: pytest.MonkeyPatch) -> None:
    server.mode, server.cut_at = "cut-always", 1 << 20  # 3 x 1 MiB of 78 MB: never complete
    monkeypatch.setattr(models, "RESUMES", 2)
    with pytest.raises(FetchError, match=r"broke 3 times; last: connection closed at byte \d+ of \d+") as exc:
        models.fetch(NAME)
    assert "\n" not in str(exc.value) and len(server.requests) == 3
    assert _leftovers(Path(os.environ["WHISPDIAR_HOME"])) == []


def test_wrong_size_is_refused_before_downloading(server: Behaviour, served: tuple[bytes, str]) -> None:
    server.mode = "short"
    with pytest.raises(FetchError, match=f"offers {len(served[0]) - 4096} bytes, expected {len(served[0])}"):
        models.fetch(NAME)
    assert _leftovers(Path(os.environ["WHISPDIAR_HOME"])) == []


# --- offline, through the real command -------------------------------------------------------


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(CLI + args, capture_output=True, env={**os.environ, **env}, timeout=120)


def test_offline_fetch_and_unfetched_model_fail_in_one_line(tmp_path: Path) -> None:
    # Nothing listens on port 9 of loopback: the hub is as unreachable as on an offline machine.
    env = {"WHISPDIAR_HOME": str(tmp_path), models.BASE_URL_ENV: "http://127.0.0.1:9"}
    p = _cli(["models", "fetch", "small"], env)
    err = p.stderr.decode()
    assert p.returncode == FetchError.exit_code and "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last == ("whispdiar: error: could not fetch model 'small'; tried: huggingface ggerganov/whisper.cpp "
                    "(http://127.0.0.1:9/ggml-small.bin): 127.0.0.1:9: [Errno 111] Connection refused")
    assert _leftovers(tmp_path) == []
    jfk = str(Path(__file__).parent / "data" / "jfk.wav")
    # First use tries the download itself; unreachable, that is one line and fetch's exit code.
    p = _cli(["transcribe", "-q", "--no-diarize", "-m", "small", jfk], env)
    lines = p.stderr.decode().splitlines()
    assert p.returncode == FetchError.exit_code and "Traceback" not in p.stderr.decode()
    assert lines[0].startswith("whispdiar: model 'small' is not installed: downloading it from 127.0.0.1:9 (465 MiB)")
    assert lines[-1].startswith("whispdiar: error: could not fetch model 'small'; tried: huggingface")
    assert _leftovers(tmp_path) == []
    # --offline (or WHISPDIAR_OFFLINE=1) refuses at once, naming the fetch command.
    for args, extra in ((["--offline"], {}), ([], {"WHISPDIAR_OFFLINE": "1"})):
        p = _cli(["transcribe", "-q", "--no-diarize", *args, "-m", "small", jfk], {**env, **extra})
        assert p.returncode == ModelNotInstalled.exit_code
        assert p.stderr.decode().splitlines() == [
            "whispdiar: error: model 'small' is not installed; run `whispdiar models fetch small` "
            "(--offline: nothing is downloaded)"]
