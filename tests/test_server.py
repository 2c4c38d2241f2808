"""whispdiar serve, the parts that need no model: settings, the request gate (Host, Origin,
token, size), uploads streamed to disk, the job store and queue, OpenAI's response shapes,
and the command's refusals. The real server with real models: tests/test_server_api.py
and tests/test_server_restart.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from whispdiar.errors import UsageError
from whispdiar.records import Result, Segment, Speaker, Turn, Word
from whispdiar.server.config import ServerConfig, is_loopback, parse_keep, parse_size
from whispdiar.server.errors import ApiError
from whispdiar.server.jobs import DONE, QUEUED, Job, JobQueue, JobStore, QueueFull, Stopping
from whispdiar.server.openai_api import compression_ratio, render, verbose_json
from whispdiar.server.security import Guard, split_host
from whispdiar.server.uploads import read_form, safe_filename

CLI = [sys.executable, "-m", "whispdiar"]
BASE = "http://127.0.0.1:8765"


# --------------------------------------------------------------------------- settings

def test_loopback_and_sizes() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("[::1]") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("::") and not is_loopback("192.168.1.5")
    assert parse_size("500M") == 500 << 20 and parse_size("2G") == 2 << 30
    assert parse_size("1.5GiB") == int(1.5 * (1 << 30))
    assert parse_size("4096") == 4096 and parse_keep("24h") == 86400 and parse_keep("90m") == 5400
    with pytest.raises(UsageError, match="--max-upload"):
        parse_size("lots")
    with pytest.raises(UsageError, match="--keep"):
        parse_keep("forever")


def test_config_refuses_unsafe_settings() -> None:
    ServerConfig().check()
    with pytest.raises(UsageError, match="set a token"):
        ServerConfig(host="0.0.0.0").check()
    with pytest.raises(UsageError, match="at least 16"):
        ServerConfig(host="0.0.0.0", token="short").check()
    ServerConfig(host="0.0.0.0", token="x" * 32).check()
    with pytest.raises(UsageError, match="without spaces"):
        ServerConfig(token="two words").check()
    with pytest.raises(UsageError, match="--workers"):
        ServerConfig(workers=0).check()
    with pytest.raises(UsageError, match="--allow-origin"):
        ServerConfig(allowed_origins=("https://app.example/path",)).check()


def _one_line_error(proc: subprocess.CompletedProcess, code: int, pattern: str) -> None:
    err = proc.stderr.decode()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert proc.returncode == code, err
    assert len(lines) == 1 and lines[0].startswith("whispdiar: error: ") and pattern in lines[0], lines
    assert "Traceback" not in err


def test_serve_refuses_a_public_address_without_token(tmp_path: Path) -> None:
    env = {**os.environ, "WHISPDIAR_TOKEN": ""}
    env.pop("WHISPDIAR_TOKEN")
    proc = subprocess.run(CLI + ["serve", "--host", "0.0.0.0", "--state-dir", str(tmp_path)], capture_output=True,
                          env=env, timeout=60)
    _one_line_error(proc, UsageError.exit_code, "--host 0.0.0.0 is reachable from other machines: set a token")
    proc = subprocess.run(CLI + ["serve", "--host", "0.0.0.0", "--token", "abc", "--state-dir", str(tmp_path)],
                          capture_output=True, env=env, timeout=60)
    _one_line_error(proc, UsageError.exit_code, "needs at least 16")
    proc = subprocess.run(CLI + ["serve", "--max-upload", "huge", "--state-dir", str(tmp_path)], capture_output=True,
                          env=env, timeout=60)
    _one_line_error(proc, UsageError.exit_code, "--max-upload 'huge'")
    assert not any(tmp_path.iterdir())  # refused before anything was created


def test_serve_help_has_examples() -> None:
    proc = subprocess.run(CLI + ["serve", "--help"], capture_output=True, timeout=60)
    out = proc.stdout.decode()
    assert proc.returncode == 0 and "Examples:" in out and "--token" in out and "WHISPDIAR_TOKEN" in out


# --------------------------------------------------------------------------- the gate

def _gated(config: ServerConfig, tmp: Path) -> TestClient:
    async def upload(request: Request) -> Response:
        form = await read_form(request.stream(), request.headers.get("content-type"), tmp,
                               max_file_bytes=config.max_upload_bytes)
        return JSONResponse({"files": [[f.field, f.path.name, f.filename, f.size, f.path.read_bytes().decode()]
                                       for f in form.files], "fields": form.fields})

    async def api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return Response(exc.body(), status_code=exc.status, media_type="application/json")

    app = Starlette(routes=[Route("/", lambda r: PlainTextResponse("ok")), Route("/up", upload, methods=["POST"])],
                    exception_handlers={ApiError: api_error})
    return TestClient(Guard(app, config), base_url=BASE)


def _error(r: httpx.Response, status: int, code: str) -> dict:
    assert r.status_code == status, r.text
    doc = r.json()["error"]
    assert doc["code"] == code and doc["message"] and "Traceback" not in r.text
    return doc


def test_host_names_dns_rebinding(tmp_path: Path) -> None:
    assert split_host("[::1]:8765") == "::1" and split_host("Example.COM:80") == "example.com"
    client = _gated(ServerConfig(), tmp_path)
    for host in ("127.0.0.1:8765", "localhost:8765", "[::1]:8765", "10.1.2.3"):
        assert client.get("/", headers={"Host": host}).text == "ok", host
    for host in ("evil.example", "evil.example:8765", "127.0.0.1.nip.io:8765"):
        _error(client.get("/", headers={"Host": host}), 403, "host_not_allowed")
    client = _gated(ServerConfig(allowed_hosts=("whisper.example",)), tmp_path)
    assert client.get("/", headers={"Host": "whisper.example"}).text == "ok"
    assert _gated(ServerConfig(allowed_hosts=("*",)), tmp_path).get("/", headers={"Host": "a.b"}).text == "ok"


def test_browser_origins(tmp_path: Path) -> None:
    client = _gated(ServerConfig(), tmp_path)
    assert client.get("/", headers={"Origin": BASE}).text == "ok"  # the server's own origin
    for origin in ("http://evil.example", "null", "http://127.0.0.1:9999"):
        _error(client.post("/up", headers={"Origin": origin}, files={"file": ("a.wav", b"x")}), 403,
               "origin_not_allowed")
    client = _gated(ServerConfig(allowed_origins=("https://app.example",)), tmp_path)
    r = client.get("/", headers={"Origin": "https://app.example"})
    assert r.text == "ok" and r.headers["access-control-allow-origin"] == "https://app.example"
    pre = client.options("/up", headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"})
    assert pre.status_code == 204 and "authorization" in pre.headers["access-control-allow-headers"]


def test_token(tmp_path: Path) -> None:
    client = _gated(ServerConfig(token="s3cret-token-0123456789"), tmp_path)
    r = client.get("/")
    _error(r, 401, "invalid_token")
    assert r.headers["www-authenticate"].startswith("Bearer")
    _error(client.get("/", headers={"Authorization": "Bearer wrong"}), 401, "invalid_token")
    _error(client.get("/", headers={"Authorization": "Basic s3cret-token-0123456789"}), 401, "invalid_token")
    r = client.get("/", headers={"Authorization": "Bearer s3cret-token-0123456789"})
    assert r.text == "ok" and r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["cache-control"] == "no-store"
    # Host is checked before the token: a rebinding page learns nothing either way.
    _error(client.get("/", headers={"Host": "evil.example", "Authorization": "Bearer s3cret-token-0123456789"}),
           403, "host_not_allowed")


def test_uploads_stream_to_disk_safely(tmp_path: Path) -> None:
    assert safe_filename("../../x") == "x" and safe_filename("..\\..\\win.wav") == "win.wav"
    assert safe_filename("/etc/passwd") == "passwd" and safe_filename("..") == "audio" and safe_filename("") == "audio"
    assert safe_filename("a\x00b\nc.wav") == "abc.wav" and len(safe_filename("x" * 500 + ".flac")) == 200
    dest = tmp_path / "uploads"
    dest.mkdir(mode=0o700)
    client = _gated(ServerConfig(max_upload_bytes=4096), dest)
    r = client.post("/up", files={"file": ("../../x", b"hello")}, data={"language": "en", "names": "false"})
    assert r.status_code == 200, r.text
    (field, stored, shown, size, content), = r.json()["files"]
    assert (field, stored, shown, size, content) == ("file", "upload-1", "x", 5, "hello")
    assert r.json()["fields"] == {"language": ["en"], "names": ["false"]}
    assert sorted(p.name for p in dest.iterdir()) == ["upload-1"]
    assert (dest / "upload-1").stat().st_mode & 0o777 == 0o600
    assert not (tmp_path / "x").exists() and not Path("x").exists()
    (dest / "upload-1").unlink()  # (the server gives every request a directory of its own)
    # Too large: declared (Content-Length) -> 413 before the body is stored; chunked -> cut at the limit.
    big = b"\0" * (1 << 21)
    _error(client.post("/up", files={"file": ("big.wav", big)}), 413, "upload_too_large")

    def chunks():  # no Content-Length: the parser counts
        for _ in range(8):
            yield b"--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"c.wav\"\r\n\r\n" if _ == 0 \
                else b"\1" * 1024
        yield b"\r\n--B--\r\n"

    r = client.post("/up", content=chunks(), headers={"Content-Type": "multipart/form-data; boundary=B"})
    _error(r, 413, "upload_too_large")
    assert not any(dest.iterdir())  # the cut upload was removed
    r = client.post("/up", files={"other": ("a.wav", b"x")})
    assert r.status_code == 400 and "'other'" in r.json()["error"]["message"]
    r = client.post("/up", content=b"{}", headers={"Content-Type": "application/json"})
    assert r.status_code == 415


# --------------------------------------------------------------------------- jobs

def test_queue_is_bounded_and_reservations_count() -> None:
    q = JobQueue(2)
    q.reserve()
    q.reserve()
    with pytest.raises(QueueFull):
        q.reserve()
    a = Job("a", "transcribe", "a.wav", "base", {})
    q.put(a)
    q.unreserve()
    q.reserve()  # room again: one waits, one reserved
    with pytest.raises(QueueFull):
        q.reserve()
    assert q.position(a) == 0 and q.get() is a and q.remove(a) is False
    assert q.close() == [] and q.get() is None
    with pytest.raises(Stopping):
        q.reserve()


def test_store_round_trip(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.db")
    assert (tmp_path / "jobs.db").stat().st_mode & 0o777 == 0o600
    job = Job("j1", "diarize", "m.wav", "", {"diarize": True, "num_speakers": 2}, size=10)
    store.add(job)
    job.status, job.formats, job.expires = DONE, ("json", "rttm"), 5.0
    store.save(job)
    again = store.get("j1")
    assert again is not None and (again.status, again.formats, again.options) == (DONE, ("json", "rttm"),
                                                                                   job.options)
    assert store.expired(4.0) == [] and store.expired(6.0) == ["j1"]
    store.add(Job("j2", "transcribe", "n.wav", "base", {}))
    assert [j.id for j in store.unfinished()] == ["j2"] and store.unfinished()[0].status == QUEUED
    store.delete("j1")
    assert store.get("j1") is None and store.ids() == {"j2"}
    store.close()


def test_progress_never_goes_back() -> None:
    job = Job("p", "transcribe", "a.wav", "base", {"diarize": True})
    assert job.progress is not None
    job.progress.update("vad", 10, 10)
    job.progress.update("diarize", 5, 10)
    first = job.progress.fraction
    job.progress.update("transcribe", 3, 6)
    assert 0 < first < job.progress.fraction < 1
    job.progress.update("diarize", 1, 10)  # a stage reporting less does not move it back
    assert job.progress.fraction >= first
    alone = Job("q", "transcribe", "a.wav", "base", {"diarize": False})
    assert alone.progress is not None
    alone.progress.update("vad", 1, 1)
    alone.progress.update("transcribe", 9, 9)
    assert alone.progress.fraction == 0.99  # 1.0 only when done


# --------------------------------------------------------------------------- OpenAI shapes

def _result() -> Result:
    words = [Word(" Hello", 0.5, 0.9, 0.9, "SPEAKER_00"), Word(" there.", 0.9, 1.3, 0.8, "SPEAKER_00")]
    return Result("call.wav", 3.2, "en", [Segment(0.5, 1.3, " Hello there.", "SPEAKER_00", words),
                                          Segment(1.5, 2.5, " Hi.", "SPEAKER_01", [Word(" Hi.", 1.5, 2.5, 0.7,
                                                                                         "SPEAKER_01")])],
                  [Speaker("SPEAKER_00", "Anna", 0.8, 0.8, True), Speaker("SPEAKER_01", "Speaker 2", 0.9, 1.0)],
                  [Turn(0.5, 1.3, "SPEAKER_00"), Turn(1.5, 2.5, "SPEAKER_01")])


def test_verbose_json_has_openai_fields_and_speakers() -> None:
    doc = verbose_json(_result(), ("segment", "word"))
    assert (doc["task"], doc["language"], doc["duration"], doc["text"]) == ("transcribe", "english", 3.2,
                                                                            "Hello there. Hi.")
    seg = doc["segments"][0]
    assert set(seg) >= {"id", "seek", "start", "end", "text", "tokens", "temperature", "avg_logprob",
                        "compression_ratio", "no_speech_prob", "speaker"}
    assert seg["speaker"] == "Anna" and seg["seek"] == 50 and seg["avg_logprob"] < 0 and seg["tokens"] == []
    assert [(w["word"], w["speaker"]) for w in doc["words"]] == [("Hello", "Anna"), ("there.", "Anna"),
                                                                  ("Hi.", "Speaker 2")]
    assert doc["usage"] == {"type": "duration", "seconds": 4}
    assert "words" not in verbose_json(_result()) and "segments" not in verbose_json(_result(), ("word",))
    assert compression_ratio("la " * 50) > 2.4 > compression_ratio("The quick brown fox.")
    body, media = render(_result(), "diarized_json", ())
    d = json.loads(body)
    assert media == "application/json" and d["segments"][1] == {"type": "transcript.text.segment", "id": "seg_1",
                                                                "start": 1.5, "end": 2.5, "text": "Hi.",
                                                                "speaker": "Speaker 2"}
    assert render(_result(), "text", ())[0] == "Hello there. Hi.\n"
    assert render(_result(), "srt", ())[0].startswith("1\n00:00:00,500 --> ")
