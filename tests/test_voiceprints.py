"""Voiceprint store, recognition and enrollment.

Fast tests use synthetic vectors; @slow tests enroll and recognise real LibriSpeech
speakers (tests/data/ls-*.flac) with the real segmentation and CAM++ models.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from whispdiar.diarization.clustering import Clustering, centroids_of, l2_normalize
from whispdiar.diarization.diarizer import Diarizer
from whispdiar.diarization.embedding import model_fingerprint
from whispdiar.errors import AudioError, InputNotFound, VoiceprintError
from whispdiar.records import Turn
from whispdiar.speakers.naming import (
    DEFAULT_MEMBER_MEDIAN,
    Match,
    Voiceprint,
    assign,
    display_names,
    member_agreement,
    merge_clustering,
    merge_groups,
    name_speakers,
    speaker_records,
    steer_clustering,
    threshold_for,
)
from whispdiar.speakers.store import (
    CAMPPLUS_SHA256,
    CAMPPLUS_STEM,
    MIGRATIONS,
    NotEnoughSpeech,
    Sample,
    Skipped,
    VoiceprintNamer,
    VoiceprintStore,
    check_name,
    embedding_model_id,
    enroll,
    speech_chunks,
)

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
D = 192
MODEL = "campplus-test"


def unit(rng: np.random.Generator, n: int = 1) -> np.ndarray:
    return l2_normalize(rng.standard_normal((n, D))).astype(np.float32)


def near(v: np.ndarray, rng: np.random.Generator, n: int, noise: float = 0.3) -> np.ndarray:
    """n unit vectors around v (cosine to v about 1 / sqrt(1 + noise^2 * D / |v|^2 ...))."""
    return l2_normalize(v + noise * rng.standard_normal((n, D)) / np.sqrt(D) * 3).astype(np.float32)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "home" / "speakers.db"


# --------------------------------------------------------------------------- store
def test_store_add_list_voiceprints(db: Path) -> None:
    rng = np.random.default_rng(0)
    jan, anna = unit(rng)[0], unit(rng)[0]
    with VoiceprintStore(db) as store:
        assert sorted(store.schema) == sorted(name for name, _ in MIGRATIONS)
        store.add_sample("Jan", near(jan, rng, 3), model_id=MODEL, source="/a/jan1.wav", speech_seconds=14.5)
        store.add_sample(" Jan ", near(jan, rng, 2), model_id=MODEL, source="/a/jan2.flac", speech_seconds=8,
                         start=1.0, end=11.0)
        store.add_sample("Anna", near(anna, rng, 4), model_id=MODEL, source="/a/m.wav", speech_seconds=20)
        info = store.speakers()
        assert [s.name for s in info] == ["Anna", "Jan"]
        assert (info[1].samples, info[1].embeddings, info[1].speech_seconds) == (2, 5, 22.5)
        assert info[1].model_ids == (MODEL,)
        assert info[1].created.tzinfo is not None
        vs = store.voiceprints(MODEL)
    assert set(vs.voiceprints) == {"Jan", "Anna"} and not vs.incompatible
    v = vs.voiceprints["Jan"]
    assert v.embeddings.shape == (5, D) and v.embeddings.dtype == np.float32
    assert float(v.centroid @ jan) > 0.8 and float(v.centroid @ anna) < 0.5
    assert abs(np.linalg.norm(v.centroid) - 1) < 1e-5
    with sqlite3.connect(db) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_names_are_case_insensitive_and_checked(db: Path) -> None:
    rng = np.random.default_rng(1)
    with VoiceprintStore(db) as store:
        store.add_sample("Jan", unit(rng, 2), model_id=MODEL, source="x", speech_seconds=5)
        store.add_sample("jan", unit(rng, 2), model_id=MODEL, source="y", speech_seconds=5)
        assert [(s.name, s.samples) for s in store.speakers()] == [("Jan", 2)]
    for bad in ["", "   ", "Speaker 3", "SPEAKER_01", "a\nb", "x" * 101]:
        with pytest.raises(VoiceprintError):
            check_name(bad)
    assert check_name("  Anna-Lena Müller ") == "Anna-Lena Müller"


def test_rename_and_remove(db: Path) -> None:
    rng = np.random.default_rng(2)
    with VoiceprintStore(db) as store:
        for n in ("Jan", "Anna"):
            store.add_sample(n, unit(rng, 2), model_id=MODEL, source="s", speech_seconds=5)
        store.rename("Jan", "Janek")
        assert [s.name for s in store.speakers()] == ["Anna", "Janek"]
        store.rename("janek", "JANEK")  # a change of case only is allowed
        with pytest.raises(VoiceprintError, match="already enrolled"):
            store.rename("JANEK", "anna")
        with pytest.raises(VoiceprintError, match="no enrolled speaker"):
            store.rename("Nobody", "X")
        store.remove("Anna")
        with pytest.raises(VoiceprintError, match="no enrolled speaker"):
            store.remove("Anna")
        assert [s.name for s in store.speakers()] == ["JANEK"]
        assert set(store.voiceprints(MODEL).voiceprints) == {"JANEK"}
        # ON DELETE CASCADE: no orphan samples or embeddings are left behind.
        assert store.db.execute("SELECT COUNT(*) FROM samples").fetchone()[0] == 1
        assert store.db.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0] == 2


def test_other_embedding_model_is_refused(db: Path) -> None:
    rng = np.random.default_rng(3)
    with VoiceprintStore(db) as store:
        store.add_sample("Jan", unit(rng, 2), model_id="old-model", source="s", speech_seconds=5)
        store.add_sample("Anna", unit(rng, 2), model_id=MODEL, source="s", speech_seconds=5)
        with pytest.raises(VoiceprintError, match="enrolled with embedding model old-model"):
            store.add_sample("Jan", unit(rng, 2), model_id=MODEL, source="s", speech_seconds=5)
        vs = store.voiceprints(MODEL)
    assert set(vs.voiceprints) == {"Anna"}
    assert vs.incompatible == {"Jan": ("old-model",)}
    assert "not compared" in vs.messages()[0] and "Jan" in vs.messages()[0]
    warnings: list[str] = []
    namer = VoiceprintNamer(db, MODEL, warn=warnings.append)
    assert namer.names == ["Anna"] and len(warnings) == 1 and "old-model" in warnings[0]


@pytest.mark.parametrize("content", [b"this is not a database at all" * 100, b"SQLite format 3\x00" + b"\xff" * 5000])
def test_corrupt_file_gives_clear_error(db: Path, content: bytes) -> None:
    db.parent.mkdir(parents=True)
    db.write_bytes(content)
    with pytest.raises(VoiceprintError, match="not a whispdiar speaker database or is corrupt"):
        VoiceprintStore(db)


def test_damaged_pages_give_clear_error(db: Path) -> None:
    rng = np.random.default_rng(4)
    with VoiceprintStore(db) as store:
        for i in range(40):
            store.add_sample(f"P{i}", unit(rng, 5), model_id=MODEL, source="s" * 200, speech_seconds=5)
        store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(db.read_bytes())
    page = 4096
    for p in range(1, len(data) // page):  # keep the header page, scribble over the others
        data[p * page + 8 : p * page + 200] = b"\x5a" * 192
    db.write_bytes(bytes(data))
    with pytest.raises(VoiceprintError, match="corrupt"), VoiceprintStore(db) as store:
        store.speakers()
        store.voiceprints(MODEL)


def test_foreign_sqlite_database_is_refused(db: Path) -> None:
    db.parent.mkdir(parents=True)
    with sqlite3.connect(db) as raw:
        raw.execute("CREATE TABLE notes (x TEXT)")
    with pytest.raises(VoiceprintError, match="not a whispdiar speaker database"):
        VoiceprintStore(db)


def test_missing_db_read_only(db: Path) -> None:
    with pytest.raises(VoiceprintError, match="no speaker database"):
        VoiceprintStore(db, create=False)
    namer = VoiceprintNamer(db, MODEL)  # nobody enrolled: no names, no file created
    assert namer.names == [] and not db.exists()


def test_migrations_run_once_and_newer_schema_is_refused(db: Path) -> None:
    with VoiceprintStore(db):
        pass
    # An old database (only m001) is brought up to date.
    with sqlite3.connect(db) as raw:
        raw.execute("DROP INDEX samples_speaker")
        raw.execute("DROP INDEX samples_model")
        raw.execute("DROP INDEX embeddings_sample")
        raw.execute("DELETE FROM _migrations WHERE name = 'm002_indexes'")
    with VoiceprintStore(db) as store:
        assert sorted(store.schema) == sorted(name for name, _ in MIGRATIONS)
    with sqlite3.connect(db) as raw:
        raw.execute("INSERT INTO _migrations VALUES ('m999_future', 'x')")
    with pytest.raises(VoiceprintError, match="newer whispdiar"):
        VoiceprintStore(db)


def test_m003_rewrites_old_stem_ids_to_the_content_id(db: Path, embedding_model_path: Path) -> None:
    rng = np.random.default_rng(3)
    with VoiceprintStore(db) as store:
        store.add_sample("Jan", unit(rng, 2), model_id=CAMPPLUS_STEM, source="s", speech_seconds=5)
        store.add_sample("Anna", unit(rng, 2), model_id="other-model", source="s", speech_seconds=5)
    with sqlite3.connect(db) as raw:  # as a database written before m003
        raw.execute("UPDATE samples SET model_id = ? WHERE model_id LIKE ?", (CAMPPLUS_STEM, CAMPPLUS_STEM + "%"))
        raw.execute("DELETE FROM _migrations WHERE name = 'm003_model_id_by_content'")
    current = model_fingerprint(embedding_model_path)  # the shipped export, hashed now
    assert current == f"{CAMPPLUS_STEM}@{CAMPPLUS_SHA256[:12]}"
    with VoiceprintStore(db) as store:
        found = store.voiceprints(current)
        assert set(found.voiceprints) == {"Jan"} and found.incompatible == {"Anna": ("other-model",)}


def test_failed_write_rolls_back(db: Path) -> None:
    rng = np.random.default_rng(5)
    with VoiceprintStore(db) as store:
        bad = unit(rng, 2)
        bad[1, 0] = np.nan
        with pytest.raises(VoiceprintError):
            store.add_sample("Jan", bad, model_id=MODEL, source="s", speech_seconds=5)
        with pytest.raises(sqlite3.IntegrityError), store._write() as w:  # crash mid-transaction
            w.execute("INSERT INTO speakers (name, created) VALUES ('Eve', 'x')")
            w.execute("INSERT INTO samples (speaker_id, model_id, source, speech_seconds, created) "
                      "VALUES (999, 'm', 's', 1, 'x')")  # foreign key violation
        assert store.speakers() == []


_WORKER = textwrap.dedent(
    """
    import os, sys
    import numpy as np
    sys.path.insert(0, {root!r})
    from whispdiar.speakers.store import VoiceprintStore
    db, worker, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    rng = np.random.default_rng(worker)
    with VoiceprintStore(db) as store:
        if mode == "kill":  # die in the middle of a transaction
            with store._write() as w:
                w.execute("INSERT INTO speakers (name, created) VALUES ('Ghost', 'x')")
                os._exit(3)
        for i in range(5):
            store.add_sample(f"W{{worker}}-{{i}}", rng.standard_normal((4, 192)).astype(np.float32),
                             model_id="m", source="s", speech_seconds=3)
            store.add_sample("Shared", rng.standard_normal((2, 192)).astype(np.float32),
                             model_id="m", source=f"w{{worker}}", speech_seconds=1)
    """
)


def _spawn(db: Path, worker: int, mode: str = "add") -> subprocess.Popen[bytes]:
    code = _WORKER.format(root=str(ROOT))
    return subprocess.Popen([sys.executable, "-c", code, str(db), str(worker), mode], stderr=subprocess.PIPE)


def test_concurrent_enrolls_from_several_processes(db: Path) -> None:
    procs = [_spawn(db, w) for w in range(6)]  # all create the database and migrate at once
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
    with VoiceprintStore(db) as store:
        info = {s.name: s for s in store.speakers()}
        assert store.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert sorted(store.schema) == sorted(name for name, _ in MIGRATIONS)
        assert store.db.execute("SELECT COUNT(*) FROM _migrations").fetchone()[0] == len(MIGRATIONS)
    assert len(info) == 6 * 5 + 1
    assert info["Shared"].samples == 6 * 5 and info["Shared"].embeddings == 6 * 5 * 2
    assert all(info[f"W{w}-{i}"].embeddings == 4 for w in range(6) for i in range(5))


def test_killed_writer_leaves_db_consistent(db: Path) -> None:
    with VoiceprintStore(db):
        pass
    p = _spawn(db, 0, "kill")
    p.communicate(timeout=60)
    assert p.returncode == 3
    with VoiceprintStore(db) as store:
        assert store.speakers() == []
        store.add_sample("Jan", np.ones((1, D), np.float32), model_id=MODEL, source="s", speech_seconds=3)
        assert [s.name for s in store.speakers()] == ["Jan"]


def _sample(rng: np.random.Generator, source: str, seconds: float, n: int = 1) -> Sample:
    return Sample(source=source, path=f"/a/{source}", speech_seconds=seconds, embeddings=unit(rng, n), voices=1)


def test_add_samples_stores_all_or_none_and_the_minimum_is_on_the_total(db: Path) -> None:
    rng = np.random.default_rng(6)
    with VoiceprintStore(db) as store:
        # 1.0 + 1.5 s is under 3 s: refused, nothing written (not even the speaker).
        with pytest.raises(NotEnoughSpeech, match=r"only 2\.5 s of speech in all \(a\.wav 1\.0 s, b\.wav 1\.5 s\)"):
            store.add_samples("Jan", [_sample(rng, "a.wav", 1.0), _sample(rng, "b.wav", 1.5)],
                              model_id=MODEL, min_speech_seconds=3.0)
        assert store.speakers() == []
        # One bad sample among good ones: none of them is stored.
        bad = _sample(rng, "c.wav", 4.0)
        bad.embeddings[0, 0] = np.nan
        with pytest.raises(VoiceprintError, match="c.wav: no usable embeddings"):
            store.add_samples("Jan", [_sample(rng, "a.wav", 4.0), bad], model_id=MODEL, min_speech_seconds=3.0)
        assert store.speakers() == []
        # Short samples add up: 1.5 + 2.0 s.
        added = store.add_samples("Jan", [_sample(rng, "a.wav", 1.5, 2), _sample(rng, "b.wav", 2.0)],
                                  model_id=MODEL, min_speech_seconds=3.0)
        assert len(added.sample_ids) == 2 and added.stored_before == 0.0
        # What is stored counts too: 1 s more is enough now.
        added = store.add_samples("jan", [_sample(rng, "c.wav", 1.0)], model_id=MODEL, min_speech_seconds=3.0)
        assert added.stored_before == 3.5
        (info,) = store.speakers()
        assert (info.name, info.samples, info.embeddings, info.speech_seconds) == ("Jan", 3, 4, 4.5)
        sources = [r[0] for r in store.db.execute("SELECT source FROM samples ORDER BY id")]
        assert sources == ["/a/a.wav", "/a/b.wav", "/a/c.wav"]
        # A new speaker with too little is refused even though Jan has plenty.
        with pytest.raises(NotEnoughSpeech, match="'Anna': only 1.0 s"):
            store.add_samples("Anna", [_sample(rng, "d.wav", 1.0)], model_id=MODEL, min_speech_seconds=3.0)
        assert [s.name for s in store.speakers()] == ["Jan"]


# --------------------------------------------------------------------------- privacy
@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_new_database_and_its_directory_are_private(tmp_path: Path, umask_022: None) -> None:
    db = tmp_path / "home" / "speakers.db"
    warnings: list[str] = []
    with VoiceprintStore(db, warn=warnings.append) as store:
        store.add_sample("Jan", np.ones((1, D), np.float32), model_id=MODEL, source="s", speech_seconds=3)
        wal, shm = db.with_name("speakers.db-wal"), db.with_name("speakers.db-shm")
        assert wal.exists() and shm.exists()  # WAL mode: both exist while the database is open
        assert (_mode(db.parent), _mode(db), _mode(wal), _mode(shm)) == (0o700, 0o600, 0o600, 0o600)
    assert _mode(db) == 0o600 and _mode(db.parent) == 0o700
    assert warnings == []


def test_an_existing_directory_keeps_its_mode(tmp_path: Path, umask_022: None) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    os.chmod(shared, 0o755)
    db = shared / "x.db"
    warnings: list[str] = []
    with VoiceprintStore(db, warn=warnings.append) as store:
        store.add_sample("Jan", np.ones((1, D), np.float32), model_id=MODEL, source="s", speech_seconds=3)
    assert _mode(shared) == 0o755 and _mode(db) == 0o600
    assert warnings == []  # a directory of the user's choosing is not ours to judge; the file is private


def test_readable_database_is_warned_about_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                umask_022: None) -> None:
    db = tmp_path / "a" / "speakers.db"
    with VoiceprintStore(db):
        pass
    os.chmod(db, 0o644)  # as an older whispdiar created it
    warnings: list[str] = []
    for _ in range(3):
        with VoiceprintStore(db, warn=warnings.append):
            pass
    VoiceprintNamer(db, MODEL, warn=warnings.append)
    assert len(warnings) == 1, warnings
    assert "readable by other users (mode 0644)" in warnings[0] and f"chmod 600 {db}" in warnings[0]
    assert _mode(db) == 0o644  # warned, not changed behind the user's back
    # whispdiar's data directory is checked too (it would be 0700 had we created it).
    home = tmp_path / "home"
    home.mkdir()
    os.chmod(home, 0o755)
    monkeypatch.setenv("WHISPDIAR_HOME", str(home))
    with VoiceprintStore(home / "speakers.db", warn=warnings.append):
        pass
    assert len(warnings) == 2 and f"the directory of {home / 'speakers.db'}" in warnings[1]
    assert f"chmod 700 {home}" in warnings[1] and "chmod 600" not in warnings[1]
    assert _mode(home) == 0o755


def test_cli_warns_once_on_stderr_about_a_readable_database(tmp_path: Path) -> None:
    db = tmp_path / "speakers.db"
    with VoiceprintStore(db) as store:
        store.add_sample("Jan", np.ones((1, D), np.float32), model_id=MODEL, source="s", speech_seconds=3)
    os.chmod(db, 0o640)
    proc = subprocess.run([sys.executable, "-m", "whispdiar.cli", "speakers", "list", "--speakers-db", str(db)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("Jan\t1\t3.0\t")
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("whispdiar: warning: "), lines
    assert "mode 0640" in lines[0] and f"chmod 600 {db}" in lines[0]


# --------------------------------------------------------------------------- naming
def _prints(rng: np.random.Generator, names: list[str]) -> tuple[dict[str, Voiceprint], dict[str, np.ndarray]]:
    truth = {n: unit(rng)[0] for n in names}
    return {n: Voiceprint.from_embeddings(n, near(v, rng, 4)) for n, v in truth.items()}, truth


def test_name_speakers_one_to_one_above_threshold() -> None:
    rng = np.random.default_rng(10)
    prints, truth = _prints(rng, ["Jan", "Anna", "Olaf"])
    centroids = {
        "SPEAKER_00": near(truth["Anna"], rng, 1)[0],
        "SPEAKER_01": near(truth["Jan"], rng, 1)[0],
        "SPEAKER_02": unit(rng)[0],  # impostor
    }
    got = name_speakers(centroids, prints, threshold=0.5)
    assert {k: m.name for k, m in got.items()} == {"SPEAKER_00": "Anna", "SPEAKER_01": "Jan"}
    name, conf = got["SPEAKER_01"]  # unpacks as (name, confidence)
    assert name == "Jan" and 0.5 <= conf <= 1.0
    assert name_speakers(centroids, prints, threshold=0.999) == {}
    assert name_speakers({}, prints) == {} and name_speakers(centroids, {}) == {}


def _at_similarity(v: np.ndarray, sim: float, rng: np.random.Generator) -> np.ndarray:
    """A unit vector at cosine ``sim`` to the unit vector ``v``."""
    o = unit(rng)[0]
    o = l2_normalize(o - (o @ v) * v)
    return (sim * v + np.sqrt(1 - sim**2) * o).astype(np.float32)


def test_the_threshold_rises_with_the_number_of_voiceprints() -> None:
    # The best of many impostor scores is higher than the best of few: a stranger who
    # resembles one of 128 enrolled people at 0.53 is not named after them; the same
    # score among 4 voiceprints names (docs/voiceprints.md, "Many voiceprints").
    assert threshold_for(0.5, 1) == threshold_for(0.5, 8) == 0.5
    assert threshold_for(0.5, 16) == pytest.approx(0.515)
    assert threshold_for(0.5, 128) == pytest.approx(0.56)
    rng = np.random.default_rng(12)
    prints, truth = _prints(rng, [f"p{i}" for i in range(128)])
    target = prints["p7"].centroid
    centroids = {"S": _at_similarity(target, 0.53, rng)}
    assert name_speakers(centroids, prints) == {}
    few = {k: prints[k] for k in ("p1", "p2", "p7", "p9")}
    assert name_speakers(centroids, few)["S"].name == "p7"
    strong = {"S": _at_similarity(target, 0.7, rng)}  # a true match is far above either
    assert name_speakers(strong, prints)["S"].name == "p7"


def test_two_clusters_never_share_a_name() -> None:
    rng = np.random.default_rng(11)
    prints, truth = _prints(rng, ["Jan", "Anna"])
    a, b = near(truth["Jan"], rng, 2, noise=0.2)
    got = name_speakers({"S0": a, "S1": b}, prints, threshold=0.3)
    assert [m.name for m in got.values()].count("Jan") == 1
    assert all(m.name != "Anna" for m in got.values())  # the other clone stays unknown


def test_assign_prefers_more_valid_pairs() -> None:
    # Greedy would give row 0 column 0 (0.9) and leave row 1 unnamed; Hungarian names both.
    s = np.array([[0.9, 0.8], [0.85, 0.2]])
    assert sorted(assign(s, 0.5)) == [(0, 1), (1, 0)]
    assert assign(np.array([[0.4, 0.3]]), 0.5) == []
    assert assign(np.zeros((0, 3)), 0.5) == []


def test_display_names_speaker_n_by_first_appearance() -> None:
    turns = [Turn(0, 1, "SPEAKER_00"), Turn(1, 2, "SPEAKER_01"), Turn(2, 3, "SPEAKER_02"), Turn(3, 4, "SPEAKER_03")]
    matches = {"SPEAKER_00": Match("Jan", 0.8), "SPEAKER_01": Match("Anna", 0.7)}
    assert display_names(turns, matches) == {
        "SPEAKER_00": "Jan", "SPEAKER_01": "Anna", "SPEAKER_02": "Speaker 3", "SPEAKER_03": "Speaker 4"}
    # An enrolled name never collides with a placeholder.
    assert display_names(turns, {}, reserved=["speaker 1"])["SPEAKER_00"] == "Speaker 2"
    names = display_names(turns, {}, reserved=["Speaker 1"])
    assert len(set(names.values())) == 4
    recs = speaker_records(turns, matches)
    assert [(r.name, r.enrolled, r.confidence) for r in recs][:3] == [
        ("Jan", True, 0.8), ("Anna", True, 0.7), ("Speaker 3", False, None)]
    assert recs[0].speech_seconds == 1.0


def test_merge_rule_joins_clusters_of_one_enrolled_voice() -> None:
    rng = np.random.default_rng(12)
    prints, truth = _prints(rng, ["Jan", "Anna"])
    other = unit(rng)[0]
    # Jan split into clusters 0 and 2; cluster 1 is an unknown speaker.
    train = np.concatenate([near(truth["Jan"], rng, 6, 0.2), near(other, rng, 5, 0.2), near(truth["Jan"], rng, 4, 0.2)])
    labels = np.array([0] * 6 + [1] * 5 + [2] * 4)
    clustering = Clustering(labels, centroids_of(l2_normalize(train), labels, 3))
    assert merge_groups(clustering.centroids, prints, 0.6) == [[0, 2]]
    merged = merge_clustering(clustering, train, prints, 0.6)
    assert merged.num_clusters == 2
    assert merged.labels.tolist() == [0] * 6 + [1] * 5 + [0] * 4
    assert float(merged.centroids[0] @ truth["Jan"]) > 0.8
    # Nothing strong enough: unchanged (same object).
    assert merge_clustering(clustering, train, prints, 0.999) is clustering


def test_steering_splits_a_cluster_of_several_voices() -> None:
    rng = np.random.default_rng(14)
    prints, truth = _prints(rng, ["Jan", "Anna"])
    other = unit(rng)[0]
    # One cluster holding Jan, Anna and an unknown voice; a second, clean unknown cluster.
    parts = [near(truth["Jan"], rng, 6, 0.2), near(truth["Anna"], rng, 5, 0.2), near(other, rng, 5, 0.2),
             near(unit(rng)[0], rng, 6, 0.2)]
    train = np.concatenate(parts)
    labels = np.array([0] * 16 + [1] * 6)
    clustering = Clustering(labels, centroids_of(l2_normalize(train), labels, 2))
    steered = steer_clustering(clustering, train, prints)
    assert steered.num_clusters == 4
    got = steered.labels
    assert len({*got[:6]}) == len({*got[6:11]}) == len({*got[11:16]}) == 1
    assert len({got[0], got[6], got[11], got[16]}) == 4
    # A clean single-voice clustering is left alone (weak windows of Jan stay with Jan).
    jan = np.concatenate([near(truth["Jan"], rng, 8, 0.2), near(truth["Jan"], rng, 4, 0.9)])
    one = Clustering(np.zeros(12, np.int64), centroids_of(l2_normalize(jan), np.zeros(12, np.int64), 1))
    assert steer_clustering(one, jan, prints).num_clusters == 1
    assert steer_clustering(clustering, train, {}) is clustering


def _mix(rng: np.random.Generator, toward: np.ndarray, n: int, pull: float = 0.25) -> np.ndarray:
    """Members of n different voices, each pulled a little toward ``toward``: none sounds
    like it (cosine ~0.24), but their mean drifts to it (the other voices cancel out)."""
    return l2_normalize(pull * toward + l2_normalize(rng.standard_normal((n, D)))).astype(np.float32)


def _enroll_two(db: Path, rng: np.random.Generator, samples: int, seconds: float) -> dict[str, np.ndarray]:
    """Jan and Anna enrolled from ``samples`` embeddings near random voices; returns the voices."""
    truth = {n: unit(rng)[0] for n in ("Jan", "Anna")}
    with VoiceprintStore(db) as store:
        for n, v in truth.items():
            store.add_sample(n, near(v, rng, samples), model_id=MODEL, source="s", speech_seconds=seconds)
    return truth


def test_a_cluster_that_mixes_voices_is_not_named(db: Path) -> None:
    from whispdiar.diarization.diarizer import Diarization

    rng = np.random.default_rng(15)
    truth = _enroll_two(db, rng, samples=4, seconds=12)
    namer = VoiceprintNamer(db, MODEL)
    prints = namer.voiceprints
    members = {"SPEAKER_00": _mix(rng, truth["Jan"], 40), "SPEAKER_01": near(truth["Anna"], rng, 12, 0.2)}
    centroids = {k: l2_normalize(m.mean(axis=0)) for k, m in members.items()}
    jan = prints["Jan"].centroid
    assert float(centroids["SPEAKER_00"] @ jan) > 0.7  # the mixed cluster's centroid looks like Jan
    assert float(np.median(members["SPEAKER_00"] @ jan)) < 0.3  # none of its members does
    assert {k: m.name for k, m in name_speakers(centroids, prints).items()} == {
        "SPEAKER_00": "Jan", "SPEAKER_01": "Anna"}  # centroids alone: the drift gets a name
    got = name_speakers(centroids, prints, members=members)
    assert {k: m.name for k, m in got.items()} == {"SPEAKER_01": "Anna"}
    assert got["SPEAKER_01"].confidence == round(float(centroids["SPEAKER_01"] @ prints["Anna"].centroid), 4)
    # The pipeline's namer judges the members (Diarization.embeddings) too.
    diar = Diarization(turns=[Turn(0, 2, "SPEAKER_00"), Turn(2, 4, "SPEAKER_01")], exclusive=[],
                       centroids=centroids, embeddings=members, duration=4.0)
    assert {k: m.name for k, m in namer(diar).items()} == {"SPEAKER_01": "Anna"}
    # A pure cluster is named, weak windows (a third of them) and all; without members the centroid decides.
    pure = np.concatenate([near(truth["Jan"], rng, 10, 0.2), near(truth["Jan"], rng, 5, 0.9)])
    assert name_speakers({"S": l2_normalize(pure.mean(axis=0))}, prints, members={"S": pure})["S"].name == "Jan"
    assert name_speakers(centroids, prints, members={"SPEAKER_01": members["SPEAKER_01"]})["SPEAKER_00"].name == "Jan"


def test_namer_end_to_end_on_synthetic_store(db: Path) -> None:
    from whispdiar.diarization.diarizer import Diarization

    rng = np.random.default_rng(13)
    truth = _enroll_two(db, rng, samples=3, seconds=9)
    namer = VoiceprintNamer(db, MODEL, threshold=0.5)
    diar = Diarization(
        turns=[Turn(0, 2, "SPEAKER_00"), Turn(2, 4, "SPEAKER_01")], exclusive=[],
        centroids={"SPEAKER_00": near(truth["Anna"], rng, 1)[0], "SPEAKER_01": unit(rng)[0]},
        embeddings={}, duration=4.0,
    )
    got = namer(diar)
    assert list(got) == ["SPEAKER_00"] and got["SPEAKER_00"].name == "Anna"


def test_speech_chunks() -> None:
    assert speech_chunks([(0, 12)]) == [[(0, 5)], [(5, 10)], [(10, 12)]]
    assert speech_chunks([(0, 11)]) == [[(0, 5)], [(5, 10), (10, 11)]]  # 1 s tail joins
    assert speech_chunks([(0, 2), (3, 5), (6, 7)]) == [[(0, 2), (3, 5), (6, 7)]]
    assert speech_chunks([(0, 1.5)]) == [[(0, 1.5)]]
    assert speech_chunks([]) == []


# --------------------------------------------------------------------------- real audio
# LibriSpeech test-other utterances (CC BY 4.0), see tests/data/README.md.
JAN = [DATA / "ls-1998-15444-0001.flac", DATA / "ls-1998-15444-0003.flac"]  # reader 1998 (F)
ANNA = [DATA / "ls-2033-164914-0001.flac", DATA / "ls-2033-164914-0003.flac"]  # reader 2033 (M)
# Utterances that are not enrolled, for the meetings.
JAN_TALK = [DATA / "ls-1998-15444-0004.flac", DATA / "ls-1998-15444-0006.flac"]
ANNA_TALK = [DATA / "ls-2033-164914-0000.flac", DATA / "ls-2033-164914-0009.flac"]
IMPOSTOR = [DATA / "ls-1688-142285-0006.flac", DATA / "ls-1688-142285-0007.flac"]  # reader 1688, never enrolled


def _meeting(path: Path, parts: list[Path], gap: float = 0.6) -> list[tuple[float, float, int]]:
    """Concatenate files with pauses; returns (start, end, part index) per part."""
    out, spans, t = [], [], 0.0
    for i, p in enumerate(parts):
        x, sr = sf.read(p, dtype="float32")
        assert sr == 16000
        out += [x, np.zeros(int(gap * sr), np.float32)]
        spans.append((t, t + len(x) / sr, i))
        t += len(x) / sr + gap
    sf.write(path, np.concatenate(out), 16000)
    return spans


@pytest.fixture(scope="session")
def diarizer(segmentation_model_path: Path, embedding_model_path: Path) -> Diarizer:
    return Diarizer(segmentation_model_path, embedding_model_path, threads=2)


@pytest.fixture(scope="session")
def enrolled_template(tmp_path_factory: pytest.TempPathFactory, diarizer: Diarizer) -> Path:
    db = tmp_path_factory.mktemp("enrolled") / "speakers.db"
    with VoiceprintStore(db) as store:
        for name, files in (("Jan", JAN), ("Anna", ANNA)):
            for f in files:
                (sample,) = enroll(store, name, f, diarizer=diarizer).samples
                assert sample.warnings == [] and sample.voices == 1
                assert sample.speech_seconds >= 3 and len(sample.embeddings) >= 1
    return db  # closed: the WAL is checkpointed into the file


@pytest.fixture
def enrolled(db: Path, enrolled_template: Path) -> Path:
    db.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(enrolled_template, db)
    return db


def _named_speech(diarizer: Diarizer, db: Path, wav: Path) -> tuple[dict[str, float], dict[str, Match]]:
    """Seconds of exclusive speech per shown name, and the matches."""
    namer = VoiceprintNamer(db, embedding_model_id(diarizer))
    diar = diarizer(wav, relabel=namer.relabel)
    matches = namer(diar)
    shown = display_names(diar.turns, matches, namer.names)
    secs: dict[str, float] = {}
    for t in diar.exclusive:
        secs[shown[t.speaker]] = secs.get(shown[t.speaker], 0.0) + t.duration
    return secs, matches


@pytest.mark.slow
def test_recognise_two_enrolled_speakers(enrolled: Path, diarizer: Diarizer, tmp_path: Path) -> None:
    with VoiceprintStore(enrolled) as store:
        info = {s.name: s for s in store.speakers()}
    assert set(info) == {"Jan", "Anna"} and info["Jan"].samples == 2 and info["Jan"].speech_seconds > 9
    wav = tmp_path / "meeting.wav"
    _meeting(wav, [JAN_TALK[0], ANNA_TALK[0], JAN_TALK[1], ANNA_TALK[1]])
    secs, matches = _named_speech(diarizer, enrolled, wav)
    assert sorted(m.name for m in matches.values()) == ["Anna", "Jan"]
    assert all(0.5 < m.confidence <= 1 for m in matches.values())
    total = sum(secs.values())
    assert secs["Jan"] + secs["Anna"] >= 0.95 * total, secs


@pytest.mark.slow
def test_impostor_stays_anonymous(enrolled: Path, diarizer: Diarizer, tmp_path: Path) -> None:
    wav = tmp_path / "meeting.wav"
    _meeting(wav, [JAN_TALK[0], IMPOSTOR[0], JAN_TALK[1], IMPOSTOR[1]])
    secs, matches = _named_speech(diarizer, enrolled, wav)
    assert [m.name for m in matches.values()] == ["Jan"]
    assert secs.get("Speaker 2", 0) > 10 and "Anna" not in secs, secs


@pytest.mark.slow
def test_nobody_enrolled_present_gets_no_name(db: Path, diarizer: Diarizer, tmp_path: Path) -> None:
    # Reader 1688 enrolled; the recording holds 1998 and 2033. Told one speaker, the
    # diarization makes one cluster of both voices: it stays anonymous too, and its
    # members are far from the member rule's floor, whatever its centroid says.
    with VoiceprintStore(db) as store:
        enroll(store, "Olaf", IMPOSTOR, diarizer=diarizer)
    wav = tmp_path / "meeting.wav"
    _meeting(wav, [JAN_TALK[0], ANNA_TALK[0], JAN_TALK[1], ANNA_TALK[1]])
    namer = VoiceprintNamer(db, embedding_model_id(diarizer))
    for hint, clusters in ((None, 2), (1, 1)):
        diar = diarizer(wav, num_speakers=hint, relabel=namer.relabel)
        assert len(diar.speakers) == clusters
        assert namer(diar) == {}
    (mixed,) = diar.embeddings.values()
    assert member_agreement(mixed, namer.voiceprints.values())[0] < DEFAULT_MEMBER_MEDIAN - 0.05


@pytest.mark.slow
def test_rename_and_remove_change_recognition(enrolled: Path, diarizer: Diarizer, tmp_path: Path) -> None:
    wav = tmp_path / "meeting.wav"
    _meeting(wav, [JAN_TALK[0], ANNA_TALK[0]])
    with VoiceprintStore(enrolled) as store:
        store.rename("Jan", "Janek")
        store.remove("Anna")
    secs, matches = _named_speech(diarizer, enrolled, wav)
    assert [m.name for m in matches.values()] == ["Janek"]
    assert "Speaker 2" in secs and "Anna" not in secs


@pytest.mark.slow
def test_enroll_refusals(db: Path, diarizer: Diarizer, tmp_path: Path) -> None:
    with VoiceprintStore(db) as store:
        with pytest.raises(VoiceprintError, match=r"only \d\.\d s of speech"):
            enroll(store, "Jan", JAN[0], diarizer=diarizer, start=1.0, end=3.0)
        silent = tmp_path / "silence.wav"
        sf.write(silent, np.zeros(16000 * 6, np.float32), 16000)
        with pytest.raises(VoiceprintError, match="silent"):
            enroll(store, "Jan", silent, diarizer=diarizer)
        hiss = tmp_path / "hiss.wav"
        sf.write(hiss, np.random.default_rng(0).normal(0, 0.001, 16000 * 6).astype(np.float32), 16000)
        with pytest.raises(VoiceprintError, match="speech"):
            enroll(store, "Jan", hiss, diarizer=diarizer)
        junk = tmp_path / "junk.wav"
        junk.write_bytes(b"RIFF????WAVEnot really" * 50)
        with pytest.raises(AudioError, match="junk.wav"):
            enroll(store, "Jan", junk, diarizer=diarizer)
        with pytest.raises(InputNotFound):
            enroll(store, "Jan", tmp_path / "missing.wav", diarizer=diarizer)
        with pytest.raises(AudioError, match="must be after"):
            enroll(store, "Jan", JAN[0], diarizer=diarizer, start=5, end=2)
        assert store.speakers() == []  # nothing refused was stored
        # Two voices: warned about (with a hint), only the main voice is enrolled.
        both = tmp_path / "both.wav"
        _meeting(both, [JAN[0], ANNA[0], JAN[1]])
        (sample,) = enroll(store, "Jan", both, diarizer=diarizer).samples
        assert sample.voices == 2 and "2 voices" in sample.warnings[0] and "--start/--end" in sample.warnings[0]
        # The part where only Jan speaks enrolls cleanly.
        (sample,) = enroll(store, "Jan", both, diarizer=diarizer, start=0.0, end=5.5).samples
        assert sample.voices == 1 and not sample.warnings
        assert store.speakers()[0].samples == 2


_ENROLL_WORKER = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {root!r})
    from whispdiar.diarization.diarizer import Diarizer
    from whispdiar.speakers.store import VoiceprintStore, enroll
    db, name, seg, emb, *files = sys.argv[1:]
    diarizer = Diarizer(seg, emb, threads=1)
    with VoiceprintStore(db) as store:
        for f in files:
            enroll(store, name, f, diarizer=diarizer)
    """
)


@pytest.mark.slow
def test_concurrent_real_enrolls(db: Path, segmentation_model_path: Path, embedding_model_path: Path) -> None:
    code = _ENROLL_WORKER.format(root=str(ROOT))
    jobs = {"Jan": JAN, "Anna": ANNA, "Eve": IMPOSTOR}
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(db), name, str(segmentation_model_path),
                          str(embedding_model_path), *map(str, files)], stderr=subprocess.PIPE)
        for name, files in jobs.items()
    ]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()
    with VoiceprintStore(db) as store:
        assert store.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert {s.name: s.samples for s in store.speakers()} == {"Jan": 2, "Anna": 2, "Eve": 2}


# --------------------------------------------------------------------------- enroll: all or nothing
def _cut(src: Path, dest: Path, seconds: float) -> Path:
    x, sr = sf.read(src, dtype="float32")
    sf.write(dest, x[: int(seconds * sr)], sr)
    return dest


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Short clips of reader 2033: a.wav ~4.5 s of speech, b.wav ~2.5 s, c.wav ~1.5 s; and silence."""
    d = tmp_path_factory.mktemp("clips")
    silent = d / "silent.wav"
    sf.write(silent, np.zeros(16000 * 3, np.float32), 16000)
    return {"a": _cut(ANNA[0], d / "a.wav", 4.6), "b": _cut(ANNA[1], d / "b.wav", 2.9),
            "c": _cut(ANNA_TALK[1], d / "c.wav", 1.9), "silent": silent}


@pytest.mark.slow
def test_enroll_short_samples_add_up_all_or_nothing(db: Path, diarizer: Diarizer, clips: dict[str, Path]) -> None:
    with VoiceprintStore(db) as store:
        for short in ("b", "c"):  # each alone is under 3 s: refused, nothing stored
            with pytest.raises(NotEnoughSpeech, match=r"only \d\.\d s of speech in all"):
                enroll(store, "Anna", clips[short], diarizer=diarizer)
        assert store.speakers() == []
        # A silent sample fails the whole enroll, the good one before it included.
        with pytest.raises(VoiceprintError, match=r"silent.*none of the 2 samples stored"):
            enroll(store, "Anna", [clips["a"], clips["silent"]], diarizer=diarizer)
        with pytest.raises(InputNotFound, match="none of the 2 samples stored"):
            enroll(store, "Anna", [clips["a"], clips["a"].with_name("missing.wav")], diarizer=diarizer)
        assert store.speakers() == []
        # Together the two short ones are enough; each sample is reported.
        seen: list[Sample | Skipped] = []
        report = enroll(store, "Anna", [clips["b"], clips["c"]], diarizer=diarizer, progress=seen.append)
        assert [s.source for s in seen] == [str(clips["b"]), str(clips["c"])]
        assert all(s.speech_seconds < 3 for s in report.samples) and report.speech_seconds >= 3
        assert report.stored_before == 0 and len(report.sample_ids) == 2
        first = report.speech_seconds
        # --skip-bad: the silent sample is left out and said so, the rest is stored.
        seen.clear()
        report = enroll(store, "Anna", [clips["silent"], clips["a"]], diarizer=diarizer, skip_bad=True,
                        progress=seen.append)
        assert isinstance(seen[0], Skipped) and "silent" in str(seen[0].error)
        assert [s.source for s in report.samples] == [str(clips["a"])] and len(report.skipped) == 1
        assert report.stored_before == pytest.approx(first)
        assert report.total_seconds == pytest.approx(first + report.samples[0].speech_seconds)
        (info,) = store.speakers()
        assert info.samples == 3 and abs(info.speech_seconds - report.total_seconds) < 1e-6
        # Nothing usable at all, even with skip_bad: an error, nothing stored.
        with pytest.raises(VoiceprintError, match="no usable sample"):
            enroll(store, "Anna", [clips["silent"]], diarizer=diarizer, skip_bad=True)
        assert store.speakers()[0].samples == 3


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "whispdiar.cli", *args], capture_output=True, text=True,
                          timeout=300, env={**os.environ, **(env or {})}, preexec_fn=lambda: os.umask(0o022))


def _dump(db: Path) -> list[str]:
    with sqlite3.connect(db) as raw:
        assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return list(raw.iterdump())


@pytest.mark.slow
def test_cli_enroll_all_or_nothing_with_totals(tmp_path: Path, clips: dict[str, Path],
                                               segmentation_model_path: Path, embedding_model_path: Path) -> None:
    db = tmp_path / "home" / "speakers.db"
    a, b, silent = str(clips["a"]), str(clips["b"]), str(clips["silent"])
    # b alone (2.5 s of speech) is refused: exit 7, one line.
    proc = _cli("enroll", "spk533", b, "--speakers-db", str(db))
    assert proc.returncode == 7 and "Traceback" not in proc.stderr
    last = proc.stderr.splitlines()[-1]
    assert last.startswith("whispdiar: error: 'spk533': only 2.") and "nothing enrolled" in last, proc.stderr
    before = _dump(db)
    # A silent sample makes the whole command fail; the database is unchanged.
    proc = _cli("enroll", "spk533", a, silent, "--speakers-db", str(db))
    assert proc.returncode == 7, proc.stderr
    assert proc.stderr.splitlines()[-1].startswith(f"whispdiar: error: {silent}: is silent")
    assert "--skip-bad" in proc.stderr and _dump(db) == before
    # a + b: both stored, each file's speech and the total said on stderr.
    proc = _cli("enroll", "spk533", a, b, "--speakers-db", str(db))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert lines[0].startswith(f"{a}: 4.") and " s of speech (1 voiceprint window)" in lines[0], lines
    assert lines[1].startswith(f"{b}: 2."), lines
    assert lines[2].startswith("enrolled spk533: 7.0 s of speech from 2 samples"), lines
    assert len(lines) == 3
    # With --skip-bad the silent one is reported and left out; the total includes what was stored.
    proc = _cli("enroll", "spk533", silent, b, "--skip-bad", "--speakers-db", str(db))
    assert proc.returncode == 0, proc.stderr
    assert f"whispdiar: warning: {silent}: is silent; nothing to enroll (skipped)" in proc.stderr
    assert "from 1 sample (1 skipped), 9.5 s in all" in proc.stderr.splitlines()[-1], proc.stderr
    listed = _cli("speakers", "list", "--speakers-db", str(db))
    assert listed.stdout.startswith("spk533\t3\t9.5\t") and listed.stderr == ""
    assert stat.S_IMODE(db.stat().st_mode) == 0o600 and stat.S_IMODE(db.parent.stat().st_mode) == 0o700


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_interrupted_enroll_leaves_the_database_unchanged(tmp_path: Path, sig: int, code: int,
                                                         segmentation_model_path: Path,
                                                         embedding_model_path: Path) -> None:
    db = tmp_path / "speakers.db"
    with VoiceprintStore(db) as store:
        store.add_sample("Jan", np.ones((2, D), np.float32), model_id=MODEL, source="s", speech_seconds=9)
    before = _dump(db)
    files = [str(f) for f in ANNA + ANNA_TALK + ANNA + ANNA_TALK]
    proc = subprocess.Popen([sys.executable, "-m", "whispdiar.cli", "enroll", "Anna", *files,
                             "--speakers-db", str(db), "--threads", "1"],
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.stderr is not None
    first = proc.stderr.readline()  # the first sample is analysed: the command is mid-way
    assert " s of speech " in first, first
    proc.send_signal(sig)
    rest = proc.stderr.read()
    assert proc.wait(timeout=30) == code, first + rest
    assert "Traceback" not in rest and "enrolled Anna" not in rest
    assert _dump(db) == before


@pytest.mark.slow
def test_cli_enroll_span_takes_clock_times(tmp_path: Path, clips: dict[str, Path],
                                           segmentation_model_path: Path, embedding_model_path: Path) -> None:
    """--start/--end read mm:ss as `transcribe` does; the span decides what is enrolled."""
    db = tmp_path / "speakers.db"
    # Two clips back to back: 0:00-0:04.6 the 4.5-s clip, then 2.9 s of the other.
    x = np.concatenate([sf.read(clips["a"], dtype="float32")[0], sf.read(clips["b"], dtype="float32")[0]])
    both = tmp_path / "both.wav"
    sf.write(both, x, 16000)
    proc = _cli("enroll", "spk533", str(both), "--start", "0:00", "--end", "0:04.6", "--speakers-db", str(db))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines()[-1].startswith("enrolled spk533: 4."), proc.stderr
    # Only the second clip (2.5 s of speech) is too little: refused, nothing added.
    before = _dump(db)
    proc = _cli("enroll", "Other", str(both), "--start", "0:04.6", "--speakers-db", str(db))
    assert proc.returncode == 7 and "only 2." in proc.stderr.splitlines()[-1], proc.stderr
    assert _dump(db) == before
    for bad, says in ((("--start", "0:10", "--end", "0:05"), "--end"), (("--start", "1:75"), "bad time")):
        proc = _cli("enroll", "spk533", str(both), *bad, "--speakers-db", str(db))
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert says in proc.stderr.splitlines()[-1], proc.stderr
    assert _dump(db) == before


@pytest.mark.slow
def test_library_transcribe_names_speakers_from_a_database(enrolled: Path, tmp_path: Path,
                                                            whisper_tiny_en_path: Path) -> None:
    # whispdiar.transcribe(speakers_db=...) wires the namer as the CLI does; without it the
    # same recording's speakers stay anonymous.
    import whispdiar

    wav = tmp_path / "meeting.wav"
    _meeting(wav, [JAN_TALK[0], ANNA_TALK[0], JAN_TALK[1], ANNA_TALK[1]])
    named = whispdiar.transcribe(wav, model=str(whisper_tiny_en_path), speakers_db=enrolled, threads=2)
    assert sorted(s.name for s in named.speakers) == ["Anna", "Jan"]
    anonymous = whispdiar.transcribe(wav, model=str(whisper_tiny_en_path), threads=2)
    assert all(s.name is None or s.name.startswith("Speaker") for s in anonymous.speakers)
