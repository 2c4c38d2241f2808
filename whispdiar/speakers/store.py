"""Enrolled speakers: the voiceprint database and enrollment of audio samples.

The store is one SQLite file (default ``$WHISPDIAR_HOME/speakers.db``):

- ``speakers``    one row per enrolled person (name unique, case-insensitive);
- ``samples``     one row per enrolled audio sample: source file, span, seconds of
                  speech, creation time and the id of the embedding model that made it;
- ``embeddings``  the sample's embeddings (one per few seconds of speech), float32 blobs.

Like simonw/llm, the schema is a list of numbered migrations (``m001_...``) applied in
order, each once, recorded in ``_migrations``. Embeddings are stored beside the model id
that made them: vectors of another model live in another space and are never compared
(``voiceprints(model_id)`` leaves them out and says whose they are).

Concurrency: WAL journal, a 10 s busy timeout (a second ``enroll`` waits instead of
failing), and every write is one ``BEGIN IMMEDIATE`` transaction. ``enroll`` analyses
all its samples first (no database access) and then stores them in one transaction, so
a concurrent, failed or interrupted enroll leaves all of its samples or none.

Privacy: voiceprints are biometric data. A database directory created here is 0700 and
the database file 0600 (SQLite gives its -wal/-shm/-journal files the database's mode);
an existing database readable by other users is left alone and warned about once.

Recognition itself (comparing clusters with voiceprints) is in ``naming.py``; this
module only stores and produces voiceprints.
"""

from __future__ import annotations

import os
import shlex
import sqlite3
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from ..audio import read as audio
from ..errors import AudioError, VoiceprintError, WhispdiarError
from ..paths import data_dir, make_private_dir
from .naming import (
    DEFAULT_MEMBER_MEDIAN,
    DEFAULT_MERGE_THRESHOLD,
    DEFAULT_THRESHOLD,
    Match,
    Voiceprint,
    is_anonymous_name,
    is_placeholder,
    name_speakers,
    steer_clustering,
)

if TYPE_CHECKING:
    from ..diarization.clustering import Clustering
    from ..diarization.diarizer import Diarization, Diarizer

BUSY_TIMEOUT_MS = 10_000

# Enrollment parameters (docs/voiceprints.md).
MIN_SPEECH_SECONDS = 3.0  # less speech than this gives an unreliable voiceprint: refused
CHUNK_SECONDS = 5.0  # speech per stored embedding (diarization embeds <= 5 s per window too)
MIN_CHUNK_SECONDS = 2.0  # a shorter tail joins the previous chunk
# A second voice is reported when it has this much speech (s and share of all speech).
SECOND_VOICE_SECONDS = 2.0
SECOND_VOICE_SHARE = 0.15
MAX_NAME_LENGTH = 100
# The CAM++ export whispdiar ships (whispdiar/manifest.json "campplus"), for migration m003.
CAMPPLUS_STEM = "campplus_cn_en_common"
CAMPPLUS_SHA256 = "8e8dce3af38d6df43634a4a0d6ee833a0454c90cefc5dd29b94b11845fc2849d"

Warn = Callable[[str], None]
# Files SQLite keeps beside the database; they hold the same data.
COMPANION_SUFFIXES = ("-wal", "-shm", "-journal")
_warned_exposed: set[Path] = set()  # databases already warned about in this process


def _stderr_warning(message: str) -> None:
    print(f"whispdiar: warning: {message}", file=sys.stderr)


class NotEnoughSpeech(VoiceprintError):
    """A speaker would have less than MIN_SPEECH_SECONDS of speech in all (exit 7)."""


# --------------------------------------------------------------------------- schema
def _m001_create_tables(db: sqlite3.Connection) -> None:
    db.execute(
        """CREATE TABLE speakers (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE COLLATE NOCASE,
            created TEXT NOT NULL
        )"""
    )
    db.execute(
        """CREATE TABLE samples (
            id INTEGER PRIMARY KEY,
            speaker_id INTEGER NOT NULL REFERENCES speakers(id) ON DELETE CASCADE,
            model_id TEXT NOT NULL,
            source TEXT NOT NULL,
            start REAL,
            end REAL,
            speech_seconds REAL NOT NULL,
            created TEXT NOT NULL
        )"""
    )
    db.execute(
        """CREATE TABLE embeddings (
            id INTEGER PRIMARY KEY,
            sample_id INTEGER NOT NULL REFERENCES samples(id) ON DELETE CASCADE,
            dim INTEGER NOT NULL,
            vector BLOB NOT NULL
        )"""
    )


def _m002_indexes(db: sqlite3.Connection) -> None:
    db.execute("CREATE INDEX samples_speaker ON samples(speaker_id)")
    db.execute("CREATE INDEX samples_model ON samples(model_id)")
    db.execute("CREATE INDEX embeddings_sample ON embeddings(sample_id)")


def _m003_model_id_by_content(db: sqlite3.Connection) -> None:
    # Model ids were the ONNX file stem; now ``stem@sha256[:12]``. Every CAM++ file we
    # ever shipped is the one deterministic export, so old rows name exactly that file.
    db.execute(
        "UPDATE samples SET model_id = ? WHERE model_id = ?",
        (f"{CAMPPLUS_STEM}@{CAMPPLUS_SHA256[:12]}", CAMPPLUS_STEM),
    )


def _m004_speaker_memory(db: sqlite3.Connection) -> None:
    # Speaker memory (whispdiar.speakers.memory): anonymous entries ("Unknown 3"), where
    # and when each was heard, and database-wide settings (``remember``).
    db.execute("ALTER TABLE speakers ADD COLUMN anonymous INTEGER NOT NULL DEFAULT 0")
    db.execute(
        """CREATE TABLE appearances (
            id INTEGER PRIMARY KEY,
            speaker_id INTEGER NOT NULL REFERENCES speakers(id) ON DELETE CASCADE,
            source TEXT NOT NULL,
            heard TEXT NOT NULL,
            speech_seconds REAL NOT NULL
        )"""
    )
    db.execute("CREATE INDEX appearances_speaker ON appearances(speaker_id)")
    db.execute("CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL)")


# Append only: a migration, once released, is never edited or reordered.
MIGRATIONS: list[tuple[str, Callable[[sqlite3.Connection], None]]] = [
    ("m001_create_tables", _m001_create_tables),
    ("m002_indexes", _m002_indexes),
    ("m003_model_id_by_content", _m003_model_id_by_content),
    ("m004_speaker_memory", _m004_speaker_memory),
]


# --------------------------------------------------------------------------- records
@dataclass(frozen=True, slots=True)
class SpeakerInfo:
    """One enrolled speaker as ``speakers list`` shows it."""

    name: str
    samples: int
    embeddings: int
    speech_seconds: float
    created: datetime
    model_ids: tuple[str, ...]  # embedding models of its samples (normally one)
    anonymous: bool = False  # a remembered unknown voice ("Unknown 3"), not named yet
    # Where it was heard (speaker memory, whispdiar.speakers.memory): first/last time,
    # recordings, seconds of speech heard in all, the last recording.
    first_heard: datetime | None = None
    last_heard: datetime | None = None
    recordings: int = 0
    heard_seconds: float = 0.0
    last_source: str | None = None


@dataclass(slots=True)
class VoiceprintSet:
    """The voiceprints usable with one embedding model, plus who was left out and why."""

    model_id: str
    voiceprints: dict[str, Voiceprint]
    incompatible: dict[str, tuple[str, ...]] = field(default_factory=dict)  # name -> other model ids

    def messages(self) -> list[str]:
        return [
            f"speaker '{name}' was enrolled with embedding model {', '.join(ids)}, not {self.model_id}: "
            f"not compared (re-enroll them with this model)"
            for name, ids in sorted(self.incompatible.items())
        ]


@dataclass(slots=True)
class Sample:
    """One analysed audio sample of a speaker: its main voice's embeddings, not stored yet."""

    source: str  # the path as given (for messages)
    path: str  # as the database records it (absolute)
    speech_seconds: float  # of the main voice
    embeddings: np.ndarray  # [n, D] float32, one per ~CHUNK_SECONDS of speech
    voices: int  # distinct voices the diarization found
    start: float | None = None
    end: float | None = None
    warnings: list[str] = field(default_factory=list)


class Added(NamedTuple):
    """What ``VoiceprintStore.add_samples`` stored."""

    sample_ids: list[int]
    stored_before: float  # seconds of speech the speaker had before


@dataclass(frozen=True, slots=True)
class Skipped:
    """A sample ``enroll(..., skip_bad=True)`` left out, and why."""

    source: str
    error: WhispdiarError


@dataclass(slots=True)
class EnrollReport:
    """What one ``enroll`` stored: every sample in one transaction."""

    name: str
    samples: list[Sample]
    sample_ids: list[int]
    skipped: list[Skipped]
    stored_before: float  # seconds of speech of ``name`` already in the database

    @property
    def speech_seconds(self) -> float:
        """Speech added by this enroll."""
        return sum(s.speech_seconds for s in self.samples)

    @property
    def total_seconds(self) -> float:
        """The speaker's speech now stored."""
        return self.stored_before + self.speech_seconds


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def check_name(name: str) -> str:
    """A speaker name as stored: stripped, non-empty, printable, not a placeholder label."""
    clean = name.strip()
    if not clean:
        raise VoiceprintError("speaker name is empty")
    if len(clean) > MAX_NAME_LENGTH:
        raise VoiceprintError(f"speaker name is longer than {MAX_NAME_LENGTH} characters")
    if any(not ch.isprintable() for ch in clean):
        raise VoiceprintError(f"speaker name {clean!r} contains control characters")
    # Unknown clusters are shown as "Speaker N" / SPEAKER_NN: an enrolled name like that
    # would be indistinguishable from an unrecognised speaker.
    if is_placeholder(clean):
        raise VoiceprintError(f"'{clean}' is reserved for unrecognised speakers; pick another name")
    if is_anonymous_name(clean):
        raise VoiceprintError(f"'{clean}' is reserved for remembered unknown voices; pick another name")
    return clean


# --------------------------------------------------------------------------- privacy
def _create_private_file(path: Path) -> bool:
    """Create an empty file with mode 0600 whatever the umask; False if it exists already.

    An empty file is an empty SQLite database; SQLite then creates the -wal, -shm and
    -journal files with the database's mode, so they are 0600 too.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    return True


def exposure(path: str | os.PathLike[str]) -> str | None:
    """Why the database at ``path`` is readable by other users, and the chmod that fixes it.

    None when it is private. Checks the file and its -wal/-shm/-journal files, and its
    directory when that is whispdiar's data directory (a directory the user picked with
    ``--speakers-db``, like /tmp, is theirs: only the files are checked there).
    """
    db = Path(path).expanduser()
    loose: list[tuple[Path, int]] = []
    for f in [db, *(db.with_name(db.name + suffix) for suffix in COMPANION_SUFFIXES)]:
        try:
            mode = f.stat().st_mode & 0o777
        except OSError:
            continue
        if mode & 0o044:
            loose.append((f, mode))
    directory = db.parent
    dir_mode: int | None = None
    try:
        if directory.resolve() == data_dir().resolve():
            dir_mode = directory.stat().st_mode & 0o777
    except OSError:
        pass
    loose_dir = dir_mode is not None and bool(dir_mode & 0o044)
    if not loose and not loose_dir:
        return None
    what, fixes = [], []
    if loose:
        what.append(f"{db} is readable by other users (mode {loose[0][1]:04o})")
    if loose_dir:
        what.append(f"{'its directory' if loose else f'the directory of {db}'} is readable by other users "
                    f"(mode {dir_mode:04o})")
        fixes.append(f"chmod 700 {shlex.quote(str(directory))}")
    if loose:
        fixes.append("chmod 600 " + " ".join(shlex.quote(str(f)) for f, _ in loose))
    return f"{' and '.join(what)}; voiceprints are biometric data: run {' && '.join(fixes)}"


# --------------------------------------------------------------------------- store
class VoiceprintStore:
    """The speaker database. Use as a context manager; every method is one transaction.

    ``create=False`` opens an existing database only (a missing file raises
    VoiceprintError): what read-only commands want, so they never leave an empty file.
    A new database is created private (directory 0700 if created here, file 0600); an
    existing one readable by other users is reported once per process through ``warn``
    (default: a ``whispdiar: warning:`` line on stderr).
    """

    def __init__(self, path: str | os.PathLike[str], *, create: bool = True, warn: Warn | None = None):
        self.path = Path(path).expanduser()
        if not self.path.exists() and not create:
            raise VoiceprintError(f"{self.path}: no speaker database (enroll a speaker first)")
        if self.path.is_dir():
            raise VoiceprintError(f"{self.path}: is a directory, not a speaker database")
        if create:
            try:
                make_private_dir(self.path.parent)
            except OSError as e:
                raise VoiceprintError(f"{self.path.parent}: cannot create directory ({e.strerror})") from None
            try:
                _create_private_file(self.path)
            except OSError as e:
                raise VoiceprintError(f"{self.path}: cannot create speaker database ({e.strerror})") from None
        problem = exposure(self.path)
        key = self.path.resolve()
        if problem is not None and key not in _warned_exposed:
            _warned_exposed.add(key)
            (warn or _stderr_warning)(problem)
        try:
            # isolation_level=None: we issue BEGIN/COMMIT ourselves (BEGIN IMMEDIATE for writes).
            self.db = sqlite3.connect(str(self.path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        except sqlite3.Error as e:
            raise VoiceprintError(f"{self.path}: cannot open speaker database ({e})") from None
        try:
            self._setup()
        except sqlite3.DatabaseError as e:
            self.db.close()
            raise self._corrupt(e) from None
        except BaseException:
            self.db.close()
            raise

    def _corrupt(self, e: Exception) -> VoiceprintError:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        if isinstance(e, sqlite3.OperationalError) and "locked" in msg:
            return VoiceprintError(f"{self.path}: speaker database is busy (locked by another process): {msg}")
        return VoiceprintError(f"{self.path} is not a whispdiar speaker database or is corrupt: {msg}")

    def _setup(self) -> None:
        db = self.db
        db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        db.execute("PRAGMA foreign_keys = ON")
        # Reading the header fails here for a file that is not SQLite at all.
        row = db.execute("PRAGMA quick_check").fetchone()
        if row is None or row[0] != "ok":
            raise sqlite3.DatabaseError(f"integrity check failed ({row[0] if row else 'no answer'})")
        mode = db.execute("PRAGMA journal_mode").fetchone()[0]
        if mode != "wal":
            db.execute("PRAGMA journal_mode = WAL")  # persistent: set once per file
        db.execute("PRAGMA synchronous = NORMAL")  # safe with WAL: a crash loses at most the last commit
        self._migrate()

    def _migrate(self) -> None:
        known = [name for name, _ in MIGRATIONS]
        if self._applied() == known:
            return  # the common case: no write lock taken
        with self._write():
            tables = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if tables and "_migrations" not in tables:
                raise sqlite3.DatabaseError(f"unexpected tables {', '.join(sorted(tables))}")
            self.db.execute(
                "CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied TEXT NOT NULL)"
            )
            applied = self._applied()  # again, under the lock: another process may have migrated
            unknown = [m for m in applied if m not in known]
            if unknown:
                raise VoiceprintError(
                    f"{self.path} was written by a newer whispdiar (schema {unknown[-1]}); upgrade whispdiar"
                )
            for name, fn in MIGRATIONS:
                if name not in applied:
                    fn(self.db)
                    self.db.execute("INSERT INTO _migrations (name, applied) VALUES (?, ?)", (name, _now()))

    def _applied(self) -> list[str]:
        try:
            return [r[0] for r in self.db.execute("SELECT name FROM _migrations ORDER BY rowid")]
        except sqlite3.OperationalError as e:
            if "no such table" in str(e):
                return []
            raise

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken up front so concurrent writers queue on busy_timeout."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.DatabaseError as e:
            raise self._corrupt(e) from None

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> VoiceprintStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def schema(self) -> list[str]:
        """Names of the applied migrations."""
        return self._applied()

    # ------------------------------------------------------------------- writes
    def add_sample(
        self,
        name: str,
        embeddings: np.ndarray,
        *,
        model_id: str,
        source: str,
        speech_seconds: float,
        start: float | None = None,
        end: float | None = None,
    ) -> int:
        """Store one sample's embeddings [n, D] for ``name`` (created if new); returns the sample id.

        No minimum of speech (``add_samples`` has one). Refuses a sample of another
        embedding model than the speaker's earlier samples.
        """
        sample = Sample(source=source, path=source, speech_seconds=speech_seconds,
                        embeddings=np.asarray(embeddings), voices=1, start=start, end=end)
        return self.add_samples(name, [sample], model_id=model_id).sample_ids[0]

    def add_samples(
        self, name: str, samples: Sequence[Sample], *, model_id: str, min_speech_seconds: float = 0.0
    ) -> Added:
        """Store every sample of ``name`` (created if new) in one transaction, or none.

        Refused (NotEnoughSpeech, nothing written) when the speaker's speech, already
        stored plus these samples, stays under ``min_speech_seconds``; refused too when
        the speaker's earlier samples are of another embedding model.
        """
        name = check_name(name)
        if not samples:
            raise VoiceprintError(f"no sample of '{name}' to store")
        arrays = []
        for s in samples:
            emb = np.asarray(s.embeddings, dtype=np.float32)
            if emb.ndim != 2 or len(emb) == 0 or not np.all(np.isfinite(emb)):
                raise VoiceprintError(f"{s.source}: no usable embeddings to store")
            arrays.append(emb)
        new_seconds = sum(float(s.speech_seconds) for s in samples)
        with self._errors(), self._write() as db:
            row = db.execute("SELECT id, name FROM speakers WHERE name = ?", (name,)).fetchone()
            stored = 0.0
            if row is not None:
                other = [
                    r[0] for r in db.execute(
                        "SELECT DISTINCT model_id FROM samples WHERE speaker_id = ? AND model_id != ?",
                        (row[0], model_id),
                    )
                ]
                if other:
                    raise VoiceprintError(
                        f"speaker '{row[1]}' was enrolled with embedding model {', '.join(other)}, "
                        f"this sample with {model_id}: remove '{row[1]}' first and enroll again"
                    )
                stored = float(db.execute(
                    "SELECT COALESCE(SUM(speech_seconds), 0) FROM samples WHERE speaker_id = ?", (row[0],)
                ).fetchone()[0])
            if stored + new_seconds < min_speech_seconds:
                parts = ", ".join(f"{s.source} {s.speech_seconds:.1f} s" for s in samples)
                before = f", {stored:.1f} s stored before" if stored else ""
                raise NotEnoughSpeech(
                    f"'{name}': only {stored + new_seconds:.1f} s of speech in all ({parts}{before}); "
                    f"a voiceprint needs at least {min_speech_seconds:g} s: nothing enrolled"
                )
            if row is None:
                speaker_id = db.execute(
                    "INSERT INTO speakers (name, created) VALUES (?, ?)", (name, _now())
                ).lastrowid
            else:
                speaker_id = row[0]
            ids: list[int] = []
            for s, emb in zip(samples, arrays, strict=True):
                sample_id = db.execute(
                    "INSERT INTO samples (speaker_id, model_id, source, start, end, speech_seconds, created) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (speaker_id, model_id, s.path, s.start, s.end, float(s.speech_seconds), _now()),
                ).lastrowid
                assert sample_id is not None
                db.executemany(
                    "INSERT INTO embeddings (sample_id, dim, vector) VALUES (?, ?, ?)",
                    [(sample_id, emb.shape[1], v.tobytes()) for v in emb],
                )
                ids.append(sample_id)
        return Added(ids, stored)

    def remove(self, name: str) -> None:
        with self._errors(), self._write() as db:
            if db.execute("DELETE FROM speakers WHERE name = ?", (name.strip(),)).rowcount == 0:
                raise VoiceprintError(f"no enrolled speaker named '{name.strip()}'")

    def rename(self, old: str, new: str) -> None:
        new = check_name(new)
        with self._errors(), self._write() as db:
            row = db.execute("SELECT id FROM speakers WHERE name = ?", (old.strip(),)).fetchone()
            if row is None:
                raise VoiceprintError(f"no enrolled speaker named '{old.strip()}'")
            clash = db.execute("SELECT id, name FROM speakers WHERE name = ?", (new,)).fetchone()
            if clash is not None and clash[0] != row[0]:
                raise VoiceprintError(
                    f"a speaker named '{clash[1]}' is already enrolled; to join the two: "
                    f"whispdiar speakers merge {shlex.quote(old.strip())} {shlex.quote(clash[1])}"
                )
            # A remembered voice given a name is an enrolled speaker from then on.
            db.execute("UPDATE speakers SET name = ?, anonymous = 0 WHERE id = ?", (new, row[0]))

    # ------------------------------------------------------------------- reads
    def speakers(self) -> list[SpeakerInfo]:
        """Every enrolled speaker, by name."""
        with self._errors():
            rows = self.db.execute(
                """SELECT sp.name, sp.created, COUNT(DISTINCT sa.id),
                          (SELECT COALESCE(SUM(s3.speech_seconds), 0) FROM samples s3 WHERE s3.speaker_id = sp.id),
                          (SELECT COUNT(*) FROM embeddings e JOIN samples s2 ON e.sample_id = s2.id
                            WHERE s2.speaker_id = sp.id),
                          GROUP_CONCAT(DISTINCT sa.model_id), sp.anonymous
                   FROM speakers sp LEFT JOIN samples sa ON sa.speaker_id = sp.id
                   GROUP BY sp.id ORDER BY sp.anonymous, sp.name COLLATE NOCASE"""
            ).fetchall()
            heard = {
                name: (first, last, int(k), float(secs), src)
                for name, first, last, k, secs, src in self.db.execute(
                    """SELECT sp.name, MIN(a.heard), MAX(a.heard), COUNT(*), SUM(a.speech_seconds),
                              (SELECT a2.source FROM appearances a2 WHERE a2.speaker_id = sp.id
                                ORDER BY a2.heard DESC, a2.id DESC LIMIT 1)
                       FROM speakers sp JOIN appearances a ON a.speaker_id = sp.id GROUP BY sp.id"""
                )
            }
        out = []
        for name, created, n, secs, ne, ids, anonymous in rows:
            first, last, k, heard_secs, src = heard.get(name, (None, None, 0, 0.0, None))
            out.append(SpeakerInfo(
                name=name, samples=int(n), embeddings=int(ne), speech_seconds=float(secs),
                created=datetime.fromisoformat(created),
                model_ids=tuple(sorted(ids.split(","))) if ids else (),
                anonymous=bool(anonymous),
                first_heard=datetime.fromisoformat(first) if first else None,
                last_heard=datetime.fromisoformat(last) if last else None,
                recordings=k, heard_seconds=heard_secs, last_source=src,
            ))
        return out

    def voiceprints(self, model_id: str) -> VoiceprintSet:
        """Voiceprints of every speaker enrolled with ``model_id``; others are listed as incompatible."""
        with self._errors():
            rows = self.db.execute(
                """SELECT sp.name, sa.model_id, sa.speech_seconds, sa.id, e.dim, e.vector
                   FROM speakers sp JOIN samples sa ON sa.speaker_id = sp.id
                   JOIN embeddings e ON e.sample_id = sa.id ORDER BY sp.id, sa.id, e.id"""
            ).fetchall()
        vectors: dict[str, list[np.ndarray]] = {}
        seconds: dict[str, dict[int, float]] = {}
        incompatible: dict[str, set[str]] = {}
        for name, mid, secs, sample_id, dim, blob in rows:
            if mid != model_id:
                incompatible.setdefault(name, set()).add(mid)
                continue
            v = np.frombuffer(blob, dtype=np.float32)
            if len(v) != dim:
                raise VoiceprintError(f"{self.path} is corrupt: embedding of '{name}' has {len(v)} values, not {dim}")
            vectors.setdefault(name, []).append(v)
            seconds.setdefault(name, {})[sample_id] = secs
        prints = {
            name: Voiceprint.from_embeddings(name, np.stack(vs), sum(seconds[name].values()))
            for name, vs in vectors.items()
        }
        return VoiceprintSet(model_id, prints, {n: tuple(sorted(ids)) for n, ids in incompatible.items()})


# --------------------------------------------------------------------------- enrollment
def speech_chunks(
    spans: list[tuple[float, float]], chunk: float = CHUNK_SECONDS, min_chunk: float = MIN_CHUNK_SECONDS
) -> list[list[tuple[float, float]]]:
    """Cut speech spans (s) into consecutive pieces of about ``chunk`` s of speech each.

    A piece may gather several short spans; a tail shorter than ``min_chunk`` joins the
    previous piece (or stands alone if it is the only one).
    """
    pieces: list[list[tuple[float, float]]] = []
    cur: list[tuple[float, float]] = []
    got = 0.0
    for a, b in sorted(spans):
        while b - a > 1e-9:
            take = min(b - a, chunk - got)
            cur.append((a, a + take))
            got += take
            a += take
            if got >= chunk - 1e-9:
                pieces.append(cur)
                cur, got = [], 0.0
    if cur:
        if got < min_chunk and pieces:
            pieces[-1].extend(cur)
        else:
            pieces.append(cur)
    return pieces


def _check_span(src: Path, start: float | None, end: float | None) -> None:
    if start is not None and end is not None and end <= start:
        raise AudioError(f"{src}: --end ({end:g}) must be after --start ({start:g})")


def analyse_sample(
    path: str | os.PathLike[str],
    *,
    diarizer: Diarizer,
    name: str = "the speaker",
    start: float | None = None,
    end: float | None = None,
    channel: int | None = None,
) -> Sample:
    """Embed one audio sample's main voice; touches no database.

    The sample is diarized with the same models as transcription; the speech of its main
    voice is cut into ~5 s pieces and each piece embedded (fbank + CAM++ exactly as the
    diarization does). Raises (VoiceprintError / AudioError, one line) for unreadable
    audio, silence and a sample without usable speech; warns when a second voice
    speaks. There is no minimum per sample: ``enroll`` applies MIN_SPEECH_SECONDS to the
    speaker's total.
    """
    src = Path(path)
    _check_span(src, start, end)
    x = audio.load(src, channel=channel, start=start or 0.0, end=end)
    span = f" ({start or 0:g}-{end:g} s)" if end is not None else (f" (from {start:g} s)" if start else "")
    where = f"{src}{span}"
    if float(np.max(np.abs(x))) < 1e-4:
        raise VoiceprintError(f"{where}: is silent; nothing to enroll")

    diar = diarize_array(diarizer, x)
    per_voice: dict[str, list[tuple[float, float]]] = {}
    for t in diar.exclusive:
        per_voice.setdefault(t.speaker, []).append((t.start, t.end))
    secs = {label: sum(b - a for a, b in spans) for label, spans in per_voice.items()}
    total = sum(secs.values())
    if total < 0.2:
        raise VoiceprintError(f"{where}: no speech found; nothing to enroll")
    main = max(secs, key=secs.__getitem__)
    warnings: list[str] = []
    others = {k: v for k, v in secs.items() if k != main
              and v >= SECOND_VOICE_SECONDS and v >= SECOND_VOICE_SHARE * total}
    if others:
        n = len(others) + 1
        spans_txt = "; ".join(
            f"voice {i + 1}: {secs[k]:.1f} s, first at {per_voice[k][0][0] + (start or 0):.1f} s"
            for i, k in enumerate([main, *sorted(others, key=lambda k: per_voice[k][0][0])])
        )
        warnings.append(
            f"{where}: seems to hold {n} voices ({spans_txt}); enrolled only the main one "
            f"as '{name}' - use --start/--end to pick the part where only {name} speaks"
        )
    speech = secs[main]
    try:
        emb = embed_speech(diarizer, x, per_voice[main])
    except VoiceprintError:
        raise VoiceprintError(f"{where}: only {speech:.1f} s of speech, in pieces too short to embed; "
                              "nothing to enroll") from None
    return Sample(str(src), str(src.resolve()), speech, emb, 1 + len(others), start, end, warnings)


def enroll(
    store: VoiceprintStore,
    name: str,
    paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    *,
    diarizer: Diarizer,
    start: float | None = None,
    end: float | None = None,
    channel: int | None = None,
    skip_bad: bool = False,
    progress: Callable[[Sample | Skipped], None] | None = None,
) -> EnrollReport:
    """Add audio samples of ``name`` (one path or several) to the store: all of them or none.

    Every sample is analysed first (``analyse_sample``, no database access; ``progress``
    hears about each), then all are stored in one transaction. The minimum of
    MIN_SPEECH_SECONDS applies to the speaker's speech in all (these samples plus what is
    already stored), so short clips add up (NotEnoughSpeech otherwise). A sample that
    cannot be used fails the whole enroll, unless ``skip_bad``: then it is reported as
    Skipped and left out (at least one sample must remain).
    """
    name = check_name(name)
    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if not items:
        raise VoiceprintError(f"no sample of '{name}' given")
    _check_span(Path(items[0]), start, end)  # the same for every file: refused before any work
    samples: list[Sample] = []
    skipped: list[Skipped] = []
    for p in items:
        try:
            sample = analyse_sample(p, diarizer=diarizer, name=name, start=start, end=end, channel=channel)
        except WhispdiarError as e:
            if not skip_bad:
                if len(items) > 1:  # the same kind of error, saying that the others are not stored either
                    raise type(e)(f"{e} (none of the {len(items)} samples stored; "
                                  "leave it out or use --skip-bad)") from None
                raise
            skipped.append(Skipped(str(p), e))
            if progress is not None:
                progress(skipped[-1])
            continue
        samples.append(sample)
        if progress is not None:
            progress(sample)
    if not samples:
        raise VoiceprintError(f"no usable sample of '{name}' ({len(skipped)} skipped): nothing enrolled")
    added = store.add_samples(name, samples, model_id=embedding_model_id(diarizer),
                              min_speech_seconds=MIN_SPEECH_SECONDS)
    return EnrollReport(name, samples, added.sample_ids, skipped, added.stored_before)


def embedding_model_id(diarizer: Diarizer) -> str:
    """Identity of the diarizer's embedding model, as stored beside every voiceprint."""
    return str(diarizer.embedder.model.model_id)


def diarize_array(diarizer: Diarizer, x: np.ndarray) -> Diarization:
    """Diarize an in-memory 16 kHz signal with the diarizer's own stages."""
    analysis = diarizer.analyse_array(x)
    clustering, _ = diarizer.cluster(analysis)
    return diarizer.reconstruct(analysis, clustering)


def embed_speech(diarizer: Diarizer, x: np.ndarray, spans: list[tuple[float, float]]) -> np.ndarray:
    """[n, D] embeddings, one per ~CHUNK_SECONDS of the speech in ``spans``.

    The fbank of the whole signal is computed once and the speech frames of each chunk
    are embedded together: the same features and model as the diarization windows.
    """
    from ..diarization.embedding import fbank

    feats = fbank(x)
    # fbank frame i covers samples [160 i, 160 i + 400): its centre is at 0.01 i + 0.0125 s.
    centres = np.arange(len(feats)) * 0.01 + 0.0125
    out = []
    for piece in speech_chunks(spans):
        mask = np.zeros(len(feats), bool)
        for a, b in piece:
            mask |= (centres >= a) & (centres < b)
        if mask.sum() >= 50:  # 0.5 s: CAM++ needs some context
            out.append(diarizer.embedder.model.embed_features(feats[mask]))
    if not out:
        raise VoiceprintError("speech too fragmented to embed")
    return np.stack(out).astype(np.float32)


# --------------------------------------------------------------------------- recognition
class VoiceprintNamer:
    """Names diarized speakers from a speaker database; loads the voiceprints once.

    - ``namer(diarization) -> {label: Match(name, confidence)}`` (what the pipeline calls);
    - ``namer.relabel`` is the Diarizer's ``relabel`` hook (enrollment steers clustering,
      ``naming.steer_clustering``): it splits clusters that hold several voices and merges
      clusters that both match one enrolled voice strongly, before the turns are built.

    A missing database means nobody is enrolled (no names, no error, no file created).
    Voiceprints of another embedding model are reported through ``warn`` and ignored.

    Speaker memory (``whispdiar.speakers.memory``): remembered unknown voices ("Unknown 3")
    are voiceprints like any other and are always recognised. With ``remember`` (None:
    the database's ``remember`` setting) ``namer.remember`` also stores new unknown
    voices and the hearings of remembered ones (the pipeline calls it after naming),
    then reloads the voiceprints so the next file of a batch knows them.
    """

    def __init__(
        self,
        db_path: str | os.PathLike[str],
        model_id: str,
        threshold: float = DEFAULT_THRESHOLD,
        merge_threshold: float = DEFAULT_MERGE_THRESHOLD,
        steer: bool = True,
        warn: Warn | None = None,
        remember: bool | None = None,
        member_median: float = DEFAULT_MEMBER_MEDIAN,
    ):
        self.threshold = threshold
        self.member_median = member_median
        self.merge_threshold = merge_threshold
        self.steer = steer
        self.path = Path(db_path).expanduser()
        self.model_id = model_id
        self.say = warn or _stderr_warning
        if remember is None:
            from .memory import remember_by_default

            remember = remember_by_default(self.path)
        self.remembering = remember
        self.voiceprints: dict[str, Voiceprint] = {}
        self._load(report=True)

    def __getstate__(self) -> dict:
        # Shipped to other processes (Ray actors): the caller's warning callback (e.g. a
        # progress reporter holding locks) stays behind; there warnings go to stderr.
        state = dict(self.__dict__)
        state["say"] = _stderr_warning
        return state

    def _load(self, report: bool = False) -> None:
        if self.path.exists():
            with VoiceprintStore(self.path, create=False, warn=self.say) as store:
                found = store.voiceprints(self.model_id)
        else:
            found = VoiceprintSet(self.model_id, {})
        self.voiceprints = found.voiceprints
        if report:
            for m in found.messages():
                self.say(m)

    def remember(self, diarization: Diarization, matches: dict[str, Match],
                 confidence: dict[str, float | None], source: str) -> dict[str, Match]:
        """Speaker memory for one recording (a no-op unless remembering): the new "Unknown N" matches."""
        if not self.remembering:
            return {}
        from .memory import remember

        src = Path(source)
        where = str(src.resolve()) if src.is_file() else source
        with VoiceprintStore(self.path, warn=self.say) as store:
            done = remember(store, diarization, matches, confidence, where, self.model_id)
        for h in done.heard:
            if h.new:
                self.say(f"remembered a new voice as '{h.name}' ({h.speech_seconds:.1f} s of speech)")
        for name in done.evicted:
            self.say(f"forgot '{name}' (least recently heard; the memory keeps the newest voices)")
        self._load()
        return done.matches()

    @property
    def names(self) -> list[str]:
        return sorted(self.voiceprints)

    def __call__(self, diarization: Diarization) -> dict[str, Match]:
        # Members too, so a cluster that mixes voices is not named (naming.DEFAULT_MEMBER_MEDIAN).
        return name_speakers(diarization.centroids, self.voiceprints, self.threshold,
                             members=diarization.embeddings, member_median=self.member_median)

    def relabel(self, clustering: Clustering, train: np.ndarray) -> Clustering:
        if not self.steer or not self.voiceprints:
            return clustering
        return steer_clustering(clustering, train, self.voiceprints, self.threshold, self.merge_threshold)
