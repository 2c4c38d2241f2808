"""Naming speakers after the fact: enroll from a result, speaker memory ("Unknown N").

Real segmentation + CAM++ models on meetings concatenated from the LibriSpeech fixtures
(tests/data/ls-*.flac); real SQLite. Synthetic vectors only for the memory's bounds.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from whispdiar.diarization.clustering import l2_normalize
from whispdiar.diarization.confidence import speaker_confidence
from whispdiar.diarization.diarizer import Diarization, Diarizer
from whispdiar.errors import UsageError, VoiceprintError
from whispdiar.outputs.rttm import format_rttm
from whispdiar.outputs.writers import JsonWriter
from whispdiar.records import Result, Turn
from whispdiar.speakers import memory
from whispdiar.speakers.from_result import enroll_from_result, load_result
from whispdiar.speakers.naming import speaker_records
from whispdiar.speakers.source import fingerprint
from whispdiar.speakers.spans import solo_spans
from whispdiar.speakers.store import MIGRATIONS, NotEnoughSpeech, VoiceprintNamer, VoiceprintStore, embedding_model_id

DATA = Path(__file__).resolve().parent / "data"
JAN = [DATA / "ls-1998-15444-0001.flac", DATA / "ls-1998-15444-0003.flac"]  # reader 1998
ANNA = [DATA / "ls-2033-164914-0001.flac", DATA / "ls-2033-164914-0003.flac"]  # reader 2033
JAN_TALK = [DATA / "ls-1998-15444-0004.flac", DATA / "ls-1998-15444-0006.flac"]
ANNA_TALK = [DATA / "ls-2033-164914-0000.flac", DATA / "ls-2033-164914-0009.flac"]
MODEL = "campplus-test"


def _meeting(path: Path, parts: list[tuple[str, Path]], gap: float = 0.6) -> dict[str, list[tuple[float, float]]]:
    """Concatenate (who, file) parts with pauses; returns who -> spans."""
    out, spans, t = [], {}, 0.0
    for who, p in parts:
        x, sr = sf.read(p, dtype="float32")
        out += [x, np.zeros(int(gap * sr), np.float32)]
        spans.setdefault(who, []).append((t, t + len(x) / sr))
        t += len(x) / sr + gap
    sf.write(path, np.concatenate(out), 16000)
    return spans


def _owner(diar: Diarization, spans: dict[str, list[tuple[float, float]]]) -> dict[str, str]:
    """Diarization label -> the person whose parts it overlaps most."""
    out = {}
    for label in diar.speakers:
        over = {who: sum(max(0.0, min(t.end, b) - max(t.start, a)) for t in diar.exclusive if t.speaker == label
                         for a, b in ss) for who, ss in spans.items()}
        out[label] = max(over, key=over.__getitem__)
    return out


@pytest.fixture(scope="module")
def diarizer(segmentation_model_path: Path, embedding_model_path: Path) -> Diarizer:
    return Diarizer(segmentation_model_path, embedding_model_path, threads=2)


@pytest.fixture(scope="module")
def meetings(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict]]:
    """Two meetings of the same two people, from different utterances."""
    d = tmp_path_factory.mktemp("meetings")
    a = d / "a.wav"
    b = d / "b.wav"
    return {
        "a": (a, _meeting(a, [("jan", JAN_TALK[0]), ("anna", ANNA_TALK[0]), ("jan", JAN_TALK[1]),
                              ("anna", ANNA_TALK[1])])),
        "b": (b, _meeting(b, [("jan", JAN[0]), ("anna", ANNA[0]), ("jan", JAN[1]), ("anna", ANNA[1])])),
    }


@pytest.fixture(scope="module")
def result_a(meetings: dict, diarizer: Diarizer, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """Meeting a's JSON result (the JSON writer's own output, no transcript) and who each label is."""
    wav, spans = meetings["a"]
    diar = diarizer(wav)
    conf = speaker_confidence(diar.centroids, diar.turns)
    speakers = speaker_records(list(diar.turns), {}, (), [], conf)
    result = Result(str(wav), diar.duration, "en", [], speakers, list(diar.turns), source=fingerprint(wav))
    path = tmp_path_factory.mktemp("results") / "a.json"
    path.write_text(JsonWriter().render(result))
    owner = _owner(diar, spans)
    names = {owner[s.label]: (s.label, s.name) for s in speakers}
    assert set(names) == {"jan", "anna"}
    return path, names


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    # sys.executable -m whispdiar.cli: runs this checkout's code (PYTHONPATH / the editable install)
    return subprocess.run([sys.executable, "-m", "whispdiar.cli", *args], capture_output=True, text=True,
                          timeout=300, env={**os.environ})


def _one_error_line(proc: subprocess.CompletedProcess[str], code: int) -> str:
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("whispdiar: error: "), lines
    return lines[0]


def _copy_db(src: Path, dest_dir: Path) -> Path:
    db = dest_dir / "speakers.db"
    shutil.copyfile(src, db)
    os.chmod(db, 0o600)  # a copy made with the umask would be warned about as readable by others
    return db


def _dump(db: Path) -> list[str]:
    with sqlite3.connect(db) as raw:
        return list(raw.iterdump())


# --------------------------------------------------------------------------- the result's audio
@pytest.mark.slow
def test_json_result_records_its_audio(result_a: tuple[Path, dict], meetings: dict) -> None:
    doc = json.loads(result_a[0].read_text())
    wav = meetings["a"][0]
    assert doc["source"] == {"path": str(wav.resolve()), "size": wav.stat().st_size,
                             "sha256": hashlib.sha256(wav.read_bytes()).hexdigest(), "channel": None}


def test_solo_spans_leave_out_overlap_and_short_stretches() -> None:
    turns = [Turn(0, 5, "A"), Turn(4, 6, "B"), Turn(5.5, 9, "A"), Turn(8, 8.5, "C"), Turn(10, 10.5, "A")]
    assert solo_spans(turns, "A") == ([(0, 4), (6, 8), (8.5, 9), (10, 10.5)], pytest.approx(2.0))
    assert solo_spans(turns, "A", 1.0) == ([(0, 4), (6, 8)], pytest.approx(3.0))


# --------------------------------------------------------------------------- enroll --from
@pytest.mark.slow
def test_enroll_from_json_then_recognised_by_name(result_a: tuple[Path, dict], meetings: dict,
                                                  diarizer: Diarizer, tmp_path: Path) -> None:
    path, names = result_a
    label, shown = names["jan"]
    db = tmp_path / "speakers.db"
    with VoiceprintStore(db) as store:
        r = enroll_from_result(store, "Bob", path, shown, diarizer=diarizer)
        assert r.speaker.label == label and r.stored_before == 0
        jan_secs = sum(b - a for a, b in meetings["a"][1]["jan"])
        assert 8 < r.speech_seconds <= jan_secs and r.embeddings >= 2, r
        # by the raw label too: more samples of the same person (normal enroll behaviour)
        again = enroll_from_result(store, "bob", path, label, diarizer=diarizer)
        assert again.stored_before == pytest.approx(r.speech_seconds)
        (info,) = store.speakers()
        assert info.name == "Bob" and info.samples == 2
    # Another recording of that voice (other utterances): named Bob, the other stays anonymous.
    wav_b, spans_b = meetings["b"]
    namer = VoiceprintNamer(db, embedding_model_id(diarizer))
    diar = diarizer(wav_b, relabel=namer.relabel)
    matches = namer(diar)
    owner = _owner(diar, spans_b)
    named = {owner[label]: m for label, m in matches.items()}
    assert list(named) == ["jan"] and named["jan"].name == "Bob" and named["jan"].confidence > 0.6, matches


@pytest.mark.slow
def test_enroll_from_rttm_with_its_audio(result_a: tuple[Path, dict], meetings: dict, diarizer: Diarizer,
                                         tmp_path: Path) -> None:
    doc = json.loads(result_a[0].read_text())
    label = {s["name"]: s["label"] for s in doc["speakers"]}
    turns = [Turn(t["start"], t["end"], label[t["speaker"]]) for t in doc["turns"]]
    rttm = tmp_path / "a.rttm"
    rttm.write_text(format_rttm(turns, "a"))
    anna_label = result_a[1]["anna"][0]
    with VoiceprintStore(tmp_path / "speakers.db") as store:
        with pytest.raises(UsageError, match="give it with --audio"):
            enroll_from_result(store, "Anna", rttm, anna_label, diarizer=diarizer)
        r = enroll_from_result(store, "Anna", rttm, anna_label, diarizer=diarizer, audio_path=meetings["a"][0])
        assert r.speech_seconds > 8 and store.speakers()[0].name == "Anna"


@pytest.mark.slow
def test_enroll_from_result_refusals(result_a: tuple[Path, dict], diarizer: Diarizer, tmp_path: Path) -> None:
    path, names = result_a
    db = tmp_path / "speakers.db"
    doc = json.loads(path.read_text())
    with VoiceprintStore(db) as store:
        with pytest.raises(VoiceprintError, match=r"no speaker 'Speaker 9' in .*\(speakers: Speaker 1 \(SPEAKER_0"):
            enroll_from_result(store, "Bob", path, "Speaker 9", diarizer=diarizer)
        with pytest.raises(VoiceprintError, match="reserved for remembered unknown voices"):
            enroll_from_result(store, "Unknown 4", path, names["jan"][1], diarizer=diarizer)
        # too little clean speech: only 2 s of the speaker's turns are left, and half overlaps another
        short = dict(doc)
        jan = names["jan"][1]
        short["turns"] = [{"start": 1.0, "end": 3.0, "speaker": jan}, {"start": 2.0, "end": 3.5, "speaker": "x"}]
        p = tmp_path / "short.json"
        p.write_text(json.dumps(short))
        with pytest.raises(NotEnoughSpeech, match=r"only 1\.0 s of speech in all.*1\.0 s overlapped or shorter"):
            enroll_from_result(store, "Bob", p, jan, diarizer=diarizer)
        # a speaker recognised from the database when the result was made is not another person
        recognised = dict(doc)
        recognised["speakers"] = [dict(s, name="Unknown 3", enrolled=True) if s["name"] == jan else s
                                  for s in doc["speakers"]]
        recognised["turns"] = [dict(t, speaker="Unknown 3") if t["speaker"] == jan else t for t in doc["turns"]]
        p.write_text(json.dumps(recognised))
        store.db.execute("INSERT INTO speakers (name, created, anonymous) "
                         "VALUES ('Unknown 3', '2026-01-01T00:00:00+00:00', 1)")
        with pytest.raises(VoiceprintError, match="speakers rename 'Unknown 3' 'Bob'"):
            enroll_from_result(store, "Bob", p, "Unknown 3", diarizer=diarizer)
        assert [s.name for s in store.speakers()] == ["Unknown 3"]
        store.rename("Unknown 3", "Carl")  # renamed since the result was made: enrolling from it is fine
        assert enroll_from_result(store, "Bob", p, "Unknown 3", diarizer=diarizer).speech_seconds > 8
        store.remove("Bob")
        store.remove("Carl")
        p.write_text(json.dumps({"version": 1, "segments": []}))
        with pytest.raises(VoiceprintError, match="not a whispdiar JSON result"):
            load_result(p)


@pytest.mark.slow
def test_cli_enroll_from_json(result_a: tuple[Path, dict], meetings: dict, tmp_path: Path) -> None:
    src, names = result_a
    wav = tmp_path / "meeting.wav"
    shutil.copyfile(meetings["a"][0], wav)
    doc = json.loads(src.read_text())
    doc["source"]["path"] = str(wav)
    js = tmp_path / "meeting.json"
    js.write_text(json.dumps(doc))
    db = tmp_path / "home" / "speakers.db"
    label, shown = names["anna"]
    # unknown label: one line, nothing created
    line = _one_error_line(_cli("enroll", "Bob", "--from", str(js), "--speaker", "SPEAKER_07",
                                "--speakers-db", str(db)), 7)
    assert "no speaker 'SPEAKER_07'" in line and not db.exists()
    # the happy path, by raw label; the output says how much speech was used
    proc = _cli("enroll", "Bob", "--from", str(js), "--speaker", label, "--speakers-db", str(db))
    assert proc.returncode == 0, proc.stderr
    (last,) = proc.stderr.strip().splitlines()
    assert last.startswith("enrolled Bob: ") and f"of '{shown}' from {wav}" in last and "left out" in last, last
    listed = _cli("speakers", "list", "--speakers-db", str(db)).stdout.split("\t")
    assert listed[0] == "Bob" and listed[1] == "1" and float(listed[2]) > 8 and listed[4] == "enrolled"
    before = _dump(db)
    # moved together with the result: found beside it
    moved = tmp_path / "moved"
    moved.mkdir()
    shutil.move(wav, moved / "meeting.wav")
    shutil.move(js, moved / "meeting.json")
    js = moved / "meeting.json"
    # missing audio
    (moved / "meeting.wav").rename(moved / "elsewhere.wav")
    line = _one_error_line(_cli("enroll", "Bob", "--from", str(js), "--speaker", label,
                                "--speakers-db", str(db)), 3)
    assert f"its audio {wav} is missing" in line and "--audio" in line
    # changed since the result: same size, other bytes
    changed = moved / "elsewhere.wav"
    data = bytearray(changed.read_bytes())
    data[-100] ^= 0xFF
    changed.write_bytes(bytes(data))
    line = _one_error_line(_cli("enroll", "Bob", "--from", str(js), "--speaker", label, "--audio", str(changed),
                                "--speakers-db", str(db)), 7)
    assert "is not the audio" in line and "SHA-256 differs" in line
    # usage errors
    line = _one_error_line(_cli("enroll", "Bob", "--from", str(js), "--speakers-db", str(db)), 2)
    assert "--from needs --speaker" in line
    assert _dump(db) == before


@pytest.mark.slow
def test_cli_diarize_names_enrolled_speakers(meetings: dict, tmp_path: Path) -> None:
    """`diarize` names speakers as `transcribe` does: Speaker N, then an enrolled name after
    `enroll --from` its own JSON; RTTM carries the names (underscored) and confidences;
    -f stats leaves words undefined (no transcript); --no-names keeps Speaker N."""
    wav, spans = meetings["a"]
    db = tmp_path / "speakers.db"
    js = tmp_path / "a.json"
    proc = _cli("diarize", "-q", str(wav), "-f", "json", "-o", str(js), "--speakers-db", str(db))
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(js.read_text())
    assert doc["segments"] == [] and doc["language"] is None and doc["source"]["sha256"]
    shown = [sp["name"] for sp in doc["speakers"]]
    assert shown == ["Speaker 1", "Speaker 2"] and all(0 < sp["confidence"] <= 1 for sp in doc["speakers"])
    assert all(sp["words"] is None for sp in doc["speakers"])
    # who is Speaker 2: the voice of most of its turns
    turns2 = [(t["start"], t["end"]) for t in doc["turns"] if t["speaker"] == "Speaker 2"]
    talk = {who: sum(max(0.0, min(e, b) - max(s0, a)) for s0, e in turns2 for a, b in ss) for who, ss in spans.items()}
    who2 = max(talk, key=talk.__getitem__)
    proc = _cli("enroll", who2.title(), "--from", str(js), "--speaker", "Speaker 2", "--speakers-db", str(db))
    assert proc.returncode == 0, proc.stderr
    txt = _cli("diarize", "-q", str(wav), "--speakers-db", str(db))
    assert txt.returncode == 0, txt.stderr
    lines = txt.stdout.splitlines()
    assert re.match(rf"# speakers: Speaker 1 [01]\.\d\d, {who2.title()} [01]\.\d\d$", lines[0]), lines[0]
    assert lines[1].startswith("# talk time: ") and all(re.fullmatch(r"\[\d\d:\d\d\.\d\d - \d\d:\d\d\.\d\d\] .+", ln)
                                                       for ln in lines[2:])
    assert any(ln.endswith(f"] {who2.title()}") for ln in lines[2:])
    rttm = _cli("diarize", "-q", str(wav), "-f", "rttm", "--speakers-db", str(db)).stdout.splitlines()
    fields = [ln.split() for ln in rttm]
    assert {f[7] for f in fields} == {"Speaker_1", who2.title()} and all(0 < float(f[8]) <= 1 for f in fields)
    stats = _cli("diarize", "-q", str(wav), "-f", "stats", "--tsv", "--speakers-db", str(db)).stdout.splitlines()
    assert stats[0].split("\t")[5] == "words" and all(row.split("\t")[5] == "" for row in stats[1:])
    anon = _cli("diarize", "-q", str(wav), "--no-names", "--speakers-db", str(db)).stdout
    assert re.match(r"# speakers: Speaker 1 [01]\.\d\d, Speaker 2 [01]\.\d\d$", anon.splitlines()[0]), anon


# --------------------------------------------------------------------------- speaker memory
@pytest.fixture(scope="module")
def remembered(meetings: dict, diarizer: Diarizer, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Meeting a, then meeting b, with remembering on (as `transcribe --remember` does)."""
    db = tmp_path_factory.mktemp("memory") / "speakers.db"
    model_id = embedding_model_id(diarizer)
    out: dict = {"db": db, "who": {}}
    for key in ("a", "b"):
        wav, spans = meetings[key]
        namer = VoiceprintNamer(db, model_id, remember=True, warn=lambda m: None)
        diar = diarizer(wav, relabel=namer.relabel)
        matches = dict(namer(diar))
        new = namer.remember(diar, matches, speaker_confidence(diar.centroids, diar.turns), str(wav))
        owner = _owner(diar, spans)
        out[key] = {owner[label]: m.name for label, m in {**matches, **new}.items()}
        out[f"new_{key}"] = {owner[label]: m.name for label, m in new.items()}
    return out


@pytest.mark.slow
def test_remember_then_the_next_recording_uses_the_same_labels(remembered: dict) -> None:
    assert remembered["new_a"] == {"jan": "Unknown 1", "anna": "Unknown 2"} or \
        remembered["new_a"] == {"jan": "Unknown 2", "anna": "Unknown 1"}, remembered
    assert remembered["new_b"] == {}  # nothing new: both voices were known
    assert remembered["b"] == remembered["a"], remembered
    with VoiceprintStore(remembered["db"]) as store:
        infos = {s.name: s for s in store.speakers()}
    assert set(infos) == {"Unknown 1", "Unknown 2"}
    for s in infos.values():
        assert s.anonymous and s.recordings == 2 and s.first_heard <= s.last_heard
        assert s.heard_seconds > 10 and s.last_source is not None and s.last_source.endswith("b.wav")
        assert s.samples <= memory.SAMPLES_PER_ENTRY and s.embeddings <= 2 * memory.EMBEDDINGS_PER_HEARING


@pytest.mark.slow
def test_cli_rename_merge_list_forget(remembered: dict, tmp_path: Path) -> None:
    db = _copy_db(remembered["db"], tmp_path)
    args = ("--speakers-db", str(db))
    rows = [r.split("\t") for r in _cli("speakers", "list", *args).stdout.splitlines()]
    assert [r[0] for r in rows] == ["Unknown 1", "Unknown 2"] and all(r[4] == "unknown" and r[7] == "2"
                                                                       for r in rows), rows
    assert _cli("speakers", "rename", "Unknown 1", "Bob", *args).returncode == 0
    line = _one_error_line(_cli("speakers", "rename", "Unknown 2", "bob", *args), 7)
    assert "a speaker named 'Bob' is already enrolled" in line and "speakers merge 'Unknown 2' Bob" in line
    line = _one_error_line(_cli("speakers", "merge", "Bob", "BOB", *args), 7)
    assert "cannot merge 'Bob' with itself" in line
    line = _one_error_line(_cli("speakers", "merge", "Bob", "Unknown 2", *args), 7)
    assert "merge the other way round" in line
    line = _one_error_line(_cli("speakers", "forget-unknown", "--older-than", "soon", *args), 2)
    assert "expected a number and a unit" in line
    before = _dump(db)
    assert _cli("speakers", "forget-unknown", "--older-than", "30d", *args).stderr.strip() == "forgot 0 unknown voices"
    assert _dump(db) == before
    rows = [r.split("\t") for r in _cli("speakers", "list", *args).stdout.splitlines()]
    assert [(r[0], r[4], r[7]) for r in rows] == [("Bob", "enrolled", "2"), ("Unknown 2", "unknown", "2")]
    proc = _cli("speakers", "merge", "Unknown 2", "Bob", *args)
    assert proc.returncode == 0 and proc.stderr.strip() == "merged 'Unknown 2' into 'Bob'", proc.stderr
    rows = [r.split("\t") for r in _cli("speakers", "list", *args).stdout.splitlines()]
    assert [(r[0], r[4], r[7]) for r in rows] == [("Bob", "enrolled", "4")]


@pytest.mark.slow
def test_forget_unknown_by_age_and_the_setting(tmp_path: Path, remembered: dict) -> None:
    db = _copy_db(remembered["db"], tmp_path)
    with VoiceprintStore(db) as store:
        assert memory.get_setting(store, "remember") == "off"
        memory.set_setting(store, "remember", "ON")
        with pytest.raises(UsageError, match="on or off"):
            memory.set_setting(store, "remember", "maybe")
        later = datetime.now(UTC) + timedelta(days=31)
        assert memory.forget_unknown(store, timedelta(days=32), now=later) == []
        assert memory.forget_unknown(store, memory.parse_age("30d"), now=later) == ["Unknown 1", "Unknown 2"]
        assert store.speakers() == []
    assert VoiceprintNamer(db, MODEL).remembering and not VoiceprintNamer(db, MODEL, remember=False).remembering
    assert _cli("speakers", "config", "--speakers-db", str(db)).stdout == "remember\ton\n"


def _fake(rng: np.random.Generator, voices: dict[str, np.ndarray], speech: float = 20.0) -> Diarization:
    """A diarization of one voice per label, each with ``speech`` s alone (real records, synthetic vectors)."""
    turns, cents, embs, t = [], {}, {}, 0.0
    for i, (_, v) in enumerate(voices.items()):
        label = f"SPEAKER_{i:02d}"
        turns.append(Turn(t, t + speech, label))
        t += speech + 1
        e = l2_normalize(v + 0.15 * rng.standard_normal((12, len(v)))).astype(np.float32)
        embs[label], cents[label] = e, l2_normalize(e.mean(axis=0))
    return Diarization(turns, turns, cents, embs, t)


def test_memory_bounds_lru_and_bounded_updates(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    voices = {k: l2_normalize(rng.standard_normal(192)) for k in "abcde"}
    db = tmp_path / "speakers.db"
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    with VoiceprintStore(db) as store:
        for i, k in enumerate("abc"):  # three recordings, one new voice each; at most 2 entries kept
            diar = _fake(rng, {k: voices[k]})
            done = memory.remember(store, diar, {}, {"SPEAKER_00": 0.99}, f"r{i}.wav", MODEL,
                                   now=t0 + timedelta(days=i), max_anonymous=2)
            assert [h.name for h in done.heard] == [f"Unknown {i + 1}"]
            assert done.evicted == (["Unknown 1"] if i == 2 else [])
        # too little speech or a doubtful cluster: not remembered
        low = memory.remember(store, _fake(rng, {"d": voices["d"]}, speech=9.0), {}, {"SPEAKER_00": 0.99},
                              "r3.wav", MODEL, now=t0 + timedelta(days=3))
        doubt = memory.remember(store, _fake(rng, {"d": voices["d"]}), {}, {"SPEAKER_00": 0.5}, "r4.wav", MODEL,
                                now=t0 + timedelta(days=4))
        assert low.heard == [] and doubt.heard == []
        # Unknown 2 re-heard many times: its voiceprint keeps the newest SAMPLES_PER_ENTRY hearings
        for j in range(6):
            memory.remember(store, _fake(rng, {"b": voices["b"]}), {"SPEAKER_00": ("Unknown 2", 0.9)},
                            {"SPEAKER_00": 0.99}, f"b{j}.wav", MODEL, now=t0 + timedelta(days=5 + j))
        info = {s.name: s for s in store.speakers()}
        assert set(info) == {"Unknown 2", "Unknown 3"}
        assert info["Unknown 2"].samples == memory.SAMPLES_PER_ENTRY and info["Unknown 2"].recordings == 7
        assert info["Unknown 2"].embeddings <= memory.SAMPLES_PER_ENTRY * memory.EMBEDDINGS_PER_HEARING
        # Unknown 3 is now the least recently heard: a new voice over the bound evicts it, not Unknown 2
        done = memory.remember(store, _fake(rng, {"e": voices["e"]}), {}, {"SPEAKER_00": 0.99}, "e.wav", MODEL,
                               now=t0 + timedelta(days=20), max_anonymous=2)
        assert [h.name for h in done.heard] == ["Unknown 4"] and done.evicted == ["Unknown 3"]  # numbers not reused
        found = store.voiceprints(MODEL).voiceprints
        assert float(found["Unknown 2"].centroid @ voices["b"]) > 0.9


def test_old_database_is_migrated_in_place(tmp_path: Path) -> None:
    db = tmp_path / "speakers.db"
    old = [m for m in MIGRATIONS if m[0] != "m004_speaker_memory"]
    with sqlite3.connect(db, isolation_level=None) as raw:  # a database as the previous release wrote it
        raw.execute("CREATE TABLE _migrations (name TEXT PRIMARY KEY, applied TEXT NOT NULL)")
        for name, fn in old:
            fn(raw)
            raw.execute("INSERT INTO _migrations VALUES (?, 'then')", (name,))
        raw.execute("INSERT INTO speakers (name, created) VALUES ('Jan', '2026-01-01T00:00:00+00:00')")
        sid = raw.execute("SELECT id FROM speakers").fetchone()[0]
        raw.execute("INSERT INTO samples (speaker_id, model_id, source, speech_seconds, created) "
                    "VALUES (?, ?, 's', 5, '2026-01-01T00:00:00+00:00')", (sid, MODEL))
        raw.execute("INSERT INTO embeddings (sample_id, dim, vector) VALUES (1, 192, ?)",
                    (np.ones(192, np.float32).tobytes(),))
    with VoiceprintStore(db) as store:
        assert store.schema == [name for name, _ in MIGRATIONS]
        (jan,) = store.speakers()
        assert jan.name == "Jan" and not jan.anonymous and jan.recordings == 0 and jan.speech_seconds == 5
        assert memory.get_setting(store, "remember") == "off"
        assert set(store.voiceprints(MODEL).voiceprints) == {"Jan"}


@pytest.mark.slow
def test_cli_transcribe_remembers_by_the_database_setting(remembered: dict, meetings: dict, tmp_path: Path,
                                                          whisper_tiny_en_path: Path) -> None:
    db = _copy_db(remembered["db"], tmp_path)
    assert _cli("speakers", "config", "remember", "on", "--speakers-db", str(db)).returncode == 0
    out = tmp_path / "b.json"
    proc = _cli("transcribe", str(meetings["b"][0]), "-m", "tiny.en", "-l", "en", "-f", "json", "-o", str(out),
                "--speakers-db", str(db), "--threads", "2")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    assert sorted((s["name"], s["enrolled"]) for s in doc["speakers"]) == [("Unknown 1", True), ("Unknown 2", True)]
    assert doc["source"]["sha256"] == hashlib.sha256(meetings["b"][0].read_bytes()).hexdigest()
    with VoiceprintStore(db) as store:
        assert [s.recordings for s in store.speakers()] == [3, 3]  # this run was remembered too


CONCURRENT = """
import sys
import numpy as np
from datetime import UTC, datetime
from whispdiar.diarization.clustering import l2_normalize
from whispdiar.diarization.diarizer import Diarization
from whispdiar.records import Turn
from whispdiar.speakers import memory
from whispdiar.speakers.store import VoiceprintStore

rng = np.random.default_rng(int(sys.argv[2]))
for i in range(3):
    e = l2_normalize(rng.standard_normal((8, 192))).astype(np.float32)
    turns = [Turn(0.0, 20.0, "SPEAKER_00")]
    diar = Diarization(turns, turns, {"SPEAKER_00": l2_normalize(e.mean(axis=0))}, {"SPEAKER_00": e}, 20.0)
    with VoiceprintStore(sys.argv[1]) as store:
        memory.remember(store, diar, {}, {"SPEAKER_00": 0.99}, f"p{sys.argv[2]}-{i}.wav", "campplus-test")
"""


def test_concurrent_runs_remember_distinct_entries(tmp_path: Path) -> None:
    db = tmp_path / "speakers.db"
    with VoiceprintStore(db):
        pass  # created (and migrated) once, as a first run would
    procs = [subprocess.Popen([sys.executable, "-c", CONCURRENT, str(db), str(k)], stderr=subprocess.PIPE, text=True)
             for k in range(4)]
    for p in procs:
        assert p.wait(timeout=120) == 0, p.stderr.read() if p.stderr else ""
    with VoiceprintStore(db) as store:
        infos = store.speakers()
    assert sorted(int(s.name.split()[1]) for s in infos) == list(range(1, 13))
    assert all(s.anonymous and s.recordings == 1 and s.samples == 1 for s in infos)
    with sqlite3.connect(db) as raw:
        assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
