"""A real ``whispdiar serve`` (uvicorn on a free loopback port, tiny.en) driven by the
official ``openai`` client and by plain HTTP: every response format, speakers in segments
and words, results equal to the CLI's for the same file and options, jobs (progress,
cancel, delete, expiry), the queue bound, the security checks, and the speaker endpoints.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from helpers import models_installed
from openai import OpenAI
from server_helpers import CLI, DATA, Served, long_recording, submit, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not models_installed("tiny.en", "segmentation-3.0", "campplus"),
                                                   reason="needs `make models`")]

TOKEN = "test-token-0123456789abcdef"
SAMPLE = DATA / "diar_sample.flac"
EXT = {"txt": "txt", "json": "json", "json-compact": "compact.json", "srt": "srt", "vtt": "vtt", "tsv": "tsv",
       "rttm": "rttm", "stats": "stats.txt", "stats-tsv": "stats.tsv", "html": "html"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Served:
    root = tmp_path_factory.mktemp("serve")
    s = Served(["-m", "tiny.en", "--state-dir", str(root / "state"), "--speakers-db", str(root / "speakers.db"),
                "--max-upload", "2M", "--queue", "8"], token=TOKEN)
    s.root = root  # type: ignore[attr-defined]
    yield s
    code = s.stop()
    assert code == 0, s.stderr()
    assert "Traceback" not in s.stderr() and s.lines[-1].startswith("whispdiar: serve: stopped (SIGTERM)")


@pytest.fixture(scope="module")
def http(server: Served) -> httpx.Client:
    with server.client() as c:
        yield c


@pytest.fixture(scope="module")
def cli(server: Served, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The CLI's every format for the sample, run where the sample is (so both name it alike),
    with the server's speaker database; plus `diarize`'s."""
    out = tmp_path_factory.mktemp("cli")
    db = str(server.root / "speakers.db")  # type: ignore[attr-defined]
    for args in (["transcribe", "-m", "tiny.en", "-f", "all", "-d", str(out / "t")],
                 ["diarize", "-f", "all", "-d", str(out / "d")]):
        p = subprocess.run(CLI + [*args, "-q", "--offline", "--speakers-db", db, SAMPLE.name], cwd=DATA,
                           capture_output=True, timeout=600)
        assert p.returncode == 0, p.stderr.decode()
    texts = {f: (out / "t" / f"diar_sample.{e}").read_text() for f, e in EXT.items()}
    texts |= {f"diarize-{f}": (out / "d" / f"diar_sample.{EXT[f]}").read_text()
              for f in ("txt", "rttm", "json", "stats", "stats-tsv")}
    return texts


@pytest.fixture(scope="module")
def sample_job(http: httpx.Client) -> dict:
    job = submit(http, SAMPLE)
    return wait_for(http, job["id"], ("done", "failed", "cancelled", "interrupted"))


def _comparable_json(text: str) -> dict:
    doc = json.loads(text)
    doc.pop("timings")
    doc["source"].pop("path")  # the CLI's absolute path; the server records the client's file name
    return doc


def test_openai_client_every_format(server: Served, cli: dict[str, str]) -> None:
    client = OpenAI(base_url=f"{server.url}/v1", api_key=TOKEN, max_retries=0, timeout=600)
    full = json.loads(cli["json"])
    text = " ".join(s["text"] for s in full["segments"])

    def create(fmt: str, path: Path = SAMPLE, **kw: object) -> object:
        with open(path, "rb") as f:
            return client.audio.transcriptions.create(model="whisper-1", file=f, response_format=fmt, **kw)

    # The two-speaker sample: the CLI's bytes, speakers in every segment and word.
    assert create("srt") == cli["srt"]
    assert create("vtt") == cli["vtt"]
    verbose = create("verbose_json", timestamp_granularities=["word", "segment"])
    assert verbose.language == "english" and verbose.duration == 30.0 and verbose.text == text
    assert [s.text for s in verbose.segments] == [s["text"] for s in full["segments"]]
    assert [(s.start, s.end, s.speaker) for s in verbose.segments] == [
        (s["start"], s["end"], s["speaker"]) for s in full["segments"]]
    assert {s.speaker for s in verbose.segments} == {"Speaker 1", "Speaker 2"}
    words = [w for s in full["segments"] for w in s["words"]]
    assert len(verbose.words) == len(words) > 40
    assert [(w.word, w.start, w.end, w.speaker) for w in verbose.words] == [
        (w["text"].strip(), w["start"], w["end"], w["speaker"]) for w in words]
    seg = verbose.segments[0]
    assert seg.id == 0 and seg.tokens == [] and seg.no_speech_prob == 0.0 and -5 < seg.avg_logprob <= 0
    # The other formats on a shorter file (quicker): the same text in each.
    jfk = DATA / "jfk.wav"
    words_only = create("verbose_json", jfk, timestamp_granularities=["word"])
    assert words_only.segments is None and len(words_only.words) > 15
    assert {w.speaker for w in words_only.words} == {"Speaker 1"}
    assert create("json", jfk).text == words_only.text
    assert create("text", jfk).strip() == words_only.text
    diarized = create("diarized_json", jfk)
    assert " ".join(s.text for s in diarized.segments) == words_only.text
    assert {(s.type, s.speaker) for s in diarized.segments} == {("transcript.text.segment", "Speaker 1")}


def test_job_results_equal_the_cli(http: httpx.Client, sample_job: dict, cli: dict[str, str]) -> None:
    assert sample_job["status"] == "done", sample_job
    assert sample_job["progress"]["fraction"] == 1.0 and sample_job["file"] == "diar_sample.flac"
    assert set(sample_job["formats"]) == set(EXT) | {"verbose_json"}
    for fmt in EXT:
        r = http.get(f"/v1/jobs/{sample_job['id']}/result", params={"format": fmt})
        assert r.status_code == 200, r.text
        if fmt == "json":
            assert _comparable_json(r.text) == _comparable_json(cli[fmt])
        elif fmt == "html":  # the CLI links ../../data/diar_sample.flac from its output directory; the server by name
            page = re.sub(r'src="[^"]*diar_sample\.flac"', "SRC", r.text)
            cli_page = re.sub(r'src="[^"]*diar_sample\.flac"', "SRC", cli[fmt])
            strip = re.compile(r'"timings": \{[^}]*\}|"(?:path|total|asr|diarization)": [^,}]*')
            assert strip.sub("", page) == strip.sub("", cli_page)
        else:
            assert r.text == cli[fmt], fmt
    r = http.get(f"/v1/jobs/{sample_job['id']}/result", params={"format": "srt", "download": "1"})
    assert r.headers["content-disposition"] == 'attachment; filename="diar_sample.srt"'
    r = http.get(f"/v1/jobs/{sample_job['id']}/result", params={"format": "html"})
    assert r.headers["content-security-policy"] == "sandbox allow-scripts"
    verbose = http.get(f"/v1/jobs/{sample_job['id']}/result", params={"format": "verbose_json"}).json()
    assert verbose["segments"] and verbose["words"] and all(w["speaker"] for w in verbose["words"])


def test_diarization_endpoint_equals_the_cli(http: httpx.Client, cli: dict[str, str]) -> None:
    for fmt in ("rttm", "json", "txt"):
        with open(SAMPLE, "rb") as f:
            r = http.post("/v1/audio/diarizations", files={"file": (SAMPLE.name, f)}, data={"response_format": fmt})
        assert r.status_code == 200, r.text
        if fmt == "json":
            assert _comparable_json(r.text) == _comparable_json(cli["diarize-json"])
        else:
            assert r.text == cli[f"diarize-{fmt}"]


def test_job_progress_cancel_delete(http: httpx.Client, tmp_path: Path) -> None:
    long = long_recording(tmp_path / "long.flac")
    first = submit(http, long)
    second = submit(http, long, task="diarize")
    assert second["status"] == "queued" and second["queue_position"] == 0
    running = wait_for(http, first["id"], ("done",), check=lambda j: (j["progress"] or {}).get("fraction", 0) > 0.02)
    assert running["status"] == "running" and 0 < running["progress"]["fraction"] < 1, running
    assert http.get(f"/v1/jobs/{first['id']}/result").status_code == 409  # nothing before it is done
    r = http.post(f"/v1/jobs/{second['id']}/cancel")
    assert r.status_code == 202 and r.json()["status"] == "cancelled"
    t0 = time.monotonic()
    assert http.post(f"/v1/jobs/{first['id']}/cancel").json()["cancel_requested"] is True
    stopped = wait_for(http, first["id"], ("cancelled", "done", "failed"), timeout=30)
    assert stopped["status"] == "cancelled" and time.monotonic() - t0 < 15
    err = http.get(f"/v1/jobs/{first['id']}/result").json()["error"]
    assert err["code"] == "job_not_done"
    assert http.post(f"/v1/jobs/{first['id']}/cancel").status_code == 409
    listed = {j["id"]: j["status"] for j in http.get("/v1/jobs").json()["data"]}
    assert listed[first["id"]] == "cancelled" and listed[second["id"]] == "cancelled"
    assert http.delete(f"/v1/jobs/{first['id']}").status_code == 204
    assert http.get(f"/v1/jobs/{first['id']}").status_code == 404


def test_a_client_that_goes_away_cancels_its_request(server: Served, http: httpx.Client, tmp_path: Path) -> None:
    long = long_recording(tmp_path / "long.flac")
    with server.client(timeout=httpx.Timeout(60, read=3)) as impatient, open(long, "rb") as f, \
            pytest.raises(httpx.ReadTimeout):
        impatient.post("/v1/audio/transcriptions", files={"file": ("long.flac", f)})
    deadline = time.monotonic() + 20  # it notices within a second, the engines stop within a few
    while time.monotonic() < deadline and http.get("/health").json()["running"]:
        time.sleep(0.2)
    assert http.get("/health").json()["running"] == 0
    state = server.root / "state"  # type: ignore[attr-defined]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any((state / "tmp").iterdir()):
        time.sleep(0.2)
    assert not any((state / "tmp").iterdir())


def test_security_on_the_live_server(server: Served, http: httpx.Client, tmp_path: Path) -> None:
    assert httpx.get(f"{server.url}/health").status_code == 401
    assert httpx.get(f"{server.url}/health", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert http.get("/health").json()["models"] == ["tiny.en"]
    r = http.get("/health", headers={"Host": "rebind.example:80"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "host_not_allowed"
    with open(DATA / "jfk.wav", "rb") as f:
        r = http.post("/v1/jobs", files={"file": ("a.wav", f)}, headers={"Origin": "https://evil.example"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "origin_not_allowed"
    # Too large, declared and streamed (chunked): 413, nothing kept, the server goes on.
    r = http.post("/v1/jobs", files={"file": ("big.wav", b"\0" * (3 << 20))})
    assert r.status_code == 413 and r.json()["error"]["code"] == "upload_too_large"

    def body():
        yield b'--XX\r\nContent-Disposition: form-data; name="file"; filename="big.wav"\r\n\r\n'
        for _ in range(48):
            yield b"\0" * (64 << 10)
        yield b"\r\n--XX--\r\n"

    r = http.post("/v1/audio/transcriptions", content=body(),
                  headers={"Content-Type": "multipart/form-data; boundary=XX"})
    assert r.status_code == 413
    state = server.root / "state"  # type: ignore[attr-defined]
    assert not any((state / "tmp").iterdir())
    # A client's file name is shown, never used as a path.
    with open(DATA / "jfk.wav", "rb") as f:
        r = http.post("/v1/jobs", files={"file": ("../../x", f)}, data={"diarize": "false"})
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["file"] == "x"
    assert sorted(p.name for p in (state / "jobs" / job["id"]).iterdir()) == ["audio"]
    assert not (state / "x").exists() and not (state.parent / "x").exists() and not Path("x").exists()
    done = wait_for(http, job["id"], ("done", "failed"))
    assert done["status"] == "done"
    r = http.get(f"/v1/jobs/{job['id']}/result", params={"format": "json"})
    assert r.json()["audio"] == "x" and r.json()["speakers"] == []  # diarize=false: no speakers
    assert r.headers["content-disposition"] == 'inline; filename="x.json"'
    # Unreadable audio: 400 naming the client's file, not the server's path.
    r = http.post("/v1/audio/transcriptions", files={"file": ("notes.wav", b"this is not audio at all")})
    assert r.status_code == 400 and r.json()["error"]["code"] == "unreadable_audio"
    assert r.json()["error"]["message"].startswith("notes.wav: ") and str(state) not in r.text
    # Bad fields, unknown things: JSON errors with their status, never a traceback.
    cases = [
        ("post", "/v1/audio/transcriptions", {"model": "small"}, 400, "model_not_served"),
        ("post", "/v1/audio/transcriptions", {"response_format": "doc"}, 400, None),
        ("post", "/v1/audio/transcriptions", {"stream": "true"}, 400, None),
        ("post", "/v1/audio/transcriptions", {"language": "xx"}, 400, None),
        ("post", "/v1/audio/transcriptions", {"num_speakers": "0"}, 400, None),
        ("post", "/v1/jobs", {"task": "dance"}, 400, None),
    ]
    for method, path, data, status, code in cases:
        with open(DATA / "jfk.wav", "rb") as f:
            r = getattr(http, method)(path, files={"file": ("jfk.wav", f)}, data=data)
        assert r.status_code == status, (data, r.text)
        assert r.json()["error"]["message"] and (code is None or r.json()["error"]["code"] == code)
    for method, path, status in [("get", "/v1/jobs/nope", 404), ("get", "/v1/nothing", 404),
                                 ("put", "/v1/jobs", 405), ("get", "/v1/jobs/nope/result", 404)]:
        r = getattr(http, method)(path)
        assert r.status_code == status and "error" in r.json() and "Traceback" not in r.text
    assert not any((state / "tmp").iterdir())  # answered requests leave nothing


def test_speakers_endpoints(http: httpx.Client, sample_job: dict) -> None:
    assert http.get("/v1/speakers").json() == {"object": "list", "data": []}
    job = sample_job["id"]
    r = http.post("/v1/speakers", json={"name": "Diane", "job": job, "speaker": "Speaker 2"})
    assert r.status_code == 201, r.text
    assert r.json()["name"] == "Diane" and r.json()["label"] == "SPEAKER_01" and r.json()["speech_seconds"] > 3
    r = http.post("/v1/speakers", json={"name": "Sheila", "job": job, "speaker": "SPEAKER_00"})
    assert r.status_code == 201, r.text
    listed = http.get("/v1/speakers").json()["data"]
    assert [s["name"] for s in listed] == ["Diane", "Sheila"]
    keys = {"name", "kind", "samples", "speech_seconds", "created_at", "first_heard_at", "last_heard_at",
            "recordings", "heard_seconds"}
    assert all(set(s) == keys and s["kind"] == "enrolled" for s in listed)  # never a voiceprint
    # The enrolled voice is named in the next run.
    with open(SAMPLE, "rb") as f:
        rttm = http.post("/v1/audio/diarizations", files={"file": (SAMPLE.name, f)},
                         data={"response_format": "rttm"}).text
    assert " Diane " in rttm and " Sheila " in rttm
    with open(SAMPLE, "rb") as f:
        plain = http.post("/v1/audio/diarizations", files={"file": (SAMPLE.name, f)},
                          data={"response_format": "rttm", "names": "false"}).text
    assert " Diane " not in plain
    # Errors of the enroll --from rules: unknown speaker, unknown or unfinished job, bad names.
    assert http.post("/v1/speakers", json={"name": "X", "job": job, "speaker": "Speaker 9"}).status_code == 400
    assert http.post("/v1/speakers", json={"name": "X", "job": "nope", "speaker": "Speaker 1"}).status_code == 404
    assert http.post("/v1/speakers", json={"name": "Speaker 3", "job": job, "speaker": "Speaker 1"}).status_code == 400
    assert http.post("/v1/speakers", json={"name": "X"}).status_code == 400
    assert http.post("/v1/speakers", content=b"[", headers={"content-type": "application/json"}).status_code == 400
    # Rename, merge, forget.
    assert http.patch("/v1/speakers/Diane", json={"name": "Dee"}).json() == {"name": "Dee", "previous": "Diane"}
    r = http.patch("/v1/speakers/Dee", json={"name": "Sheila"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "speaker_exists"
    assert http.patch("/v1/speakers/Nobody", json={"name": "Y"}).status_code == 404
    assert http.post("/v1/speakers/merge", json={"source": "Sheila", "target": "Dee"}).json()["name"] == "Dee"
    assert [(s["name"], s["samples"]) for s in http.get("/v1/speakers").json()["data"]] == [("Dee", 2)]
    assert http.post("/v1/speakers/forget-unknown", json={"older_than": "30d"}).json() == {"forgotten": []}
    assert http.delete("/v1/speakers/Dee").status_code == 204
    assert http.delete("/v1/speakers/Dee").status_code == 404
    assert http.get("/v1/speakers").json()["data"] == []


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Served:
    """One worker, a queue of one, results kept 2 s, no token."""
    root = tmp_path_factory.mktemp("small")
    s = Served(["-m", "tiny.en", "--state-dir", str(root / "state"), "--speakers-db", str(root / "speakers.db"),
                "--workers", "1", "--queue", "1", "--keep", "2s"])
    s.root = root  # type: ignore[attr-defined]
    yield s
    assert s.stop() == 0, s.stderr()


def test_full_queue_answers_429_at_once_and_results_expire(small: Served, tmp_path: Path) -> None:
    long = long_recording(tmp_path / "long.flac")
    with small.client() as http:
        first = submit(http, long)
        wait_for(http, first["id"], ("running", "done"))
        second = submit(http, long)
        assert second["status"] == "queued"
        for path in ("/v1/jobs", "/v1/audio/transcriptions"):
            t0 = time.monotonic()
            with open(long, "rb") as f:
                r = http.post(path, files={"file": ("long.flac", f)})
            assert r.status_code == 429 and r.headers["retry-after"] == "10", r.text
            assert r.json()["error"]["code"] == "queue_full" and time.monotonic() - t0 < 5
        assert http.get("/health").json()["waiting"] == 1
        for job in (second, first):
            http.post(f"/v1/jobs/{job['id']}/cancel")
        wait_for(http, first["id"], ("cancelled", "done"), timeout=30)
        # Kept 2 s after they ended, then deleted with their files.
        state = small.root / "state"  # type: ignore[attr-defined]
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and http.get(f"/v1/jobs/{first['id']}").status_code != 404:
            time.sleep(0.5)
        assert http.get(f"/v1/jobs/{first['id']}").status_code == 404
        assert http.get(f"/v1/jobs/{second['id']}").status_code == 404
        assert not (state / "jobs" / first["id"]).exists() and not (state / "jobs" / second["id"]).exists()
