"""Speaker memory: unknown voices remembered across recordings as "Unknown N".

With ``transcribe --remember`` (or ``whispdiar speakers config remember on``), after a
recording is diarized and named:

- an unrecognised speaker with at least ``MIN_SECONDS`` of single-speaker speech and a
  confidence (``whispdiar.diarization.confidence``: probability that the cluster is a distinct real
  voice) of at least ``MIN_CONFIDENCE`` becomes an anonymous entry "Unknown N" (N never
  reused), its voiceprint made of the cluster's own CAM++ window embeddings, condensed
  to at most ``EMBEDDINGS_PER_HEARING`` vectors;
- a speaker recognised as an anonymous entry gets an appearance row (file, time, speech);
  when it again meets both bounds and matched with similarity >= ``UPDATE_SIMILARITY``,
  this hearing is added to the entry's voiceprint, which keeps its ``SAMPLES_PER_ENTRY``
  newest hearings (so a re-heard voice follows slow change, bounded);
- at most ``MAX_ANONYMOUS`` anonymous entries are kept: beyond that, the least recently
  heard ones are dropped (LRU).

Recognition is the enrolled speakers' path (``naming.name_speakers`` and the steering of
the clustering), with the same threshold: docs/voiceprints.md gives the measurements.
Every change of one recording is one transaction.
"""

from __future__ import annotations

import re
import shlex
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..diarization.clustering import l2_normalize
from ..errors import UsageError, VoiceprintError
from .naming import ANONYMOUS_PREFIX, Match, is_anonymous_name
from .spans import seconds, solo_spans

if TYPE_CHECKING:
    from ..diarization.diarizer import Diarization
    from .store import VoiceprintStore

MIN_SECONDS = 10.0  # single-speaker speech an unknown voice needs to be remembered
MIN_CONFIDENCE = 0.9  # whispdiar.diarization.confidence probability that it is a distinct real voice
UPDATE_SIMILARITY = 0.6  # a re-heard voice adds to its voiceprint only when matched this well
EMBEDDINGS_PER_HEARING = 6  # vectors stored per hearing (means of consecutive windows)
SAMPLES_PER_ENTRY = 4  # hearings kept in an anonymous voiceprint (newest)
MAX_ANONYMOUS = 50  # anonymous entries kept (least recently heard dropped)

SETTINGS = {"remember": ("off", ("on", "off"))}  # key -> (default, allowed values)
NEXT_KEY = "next_unknown"  # internal: the number of the next "Unknown N"


@dataclass(frozen=True, slots=True)
class Heard:
    """What memory did with one speaker of one recording."""

    label: str
    name: str  # "Unknown 3"
    speech_seconds: float  # single-speaker speech in this recording
    similarity: float  # to the entry's voiceprint (1.0-ish for a new entry)
    new: bool  # created now
    updated: bool  # this hearing was added to the voiceprint


@dataclass(slots=True)
class Remembered:
    heard: list[Heard] = field(default_factory=list)
    evicted: list[str] = field(default_factory=list)

    def matches(self) -> dict[str, Match]:
        return {h.label: Match(h.name, round(h.similarity, 4)) for h in self.heard if h.new}


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def condense(embeddings: np.ndarray, k: int = EMBEDDINGS_PER_HEARING) -> np.ndarray:
    """At most ``k`` L2-normalised means of consecutive groups of ``embeddings`` [n, D]."""
    e = l2_normalize(np.atleast_2d(np.asarray(embeddings, np.float32)))
    groups = np.array_split(np.arange(len(e)), min(k, len(e)))
    return np.stack([l2_normalize(e[g].mean(axis=0)) for g in groups if len(g)]).astype(np.float32)


# --------------------------------------------------------------------------- settings
def get_setting(store: VoiceprintStore, key: str) -> str:
    default, _ = _setting(key)
    with store._errors():
        row = store.db.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
    return default if row is None else str(row[0])


def set_setting(store: VoiceprintStore, key: str, value: str) -> None:
    _, allowed = _setting(key)
    value = value.strip().lower()
    if value not in allowed:
        raise UsageError(f"setting '{key}' is {' or '.join(allowed)}, not '{value}'")
    with store._errors(), store._write() as db:
        db.execute("INSERT INTO settings (key, value) VALUES (?, ?) "
                   "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value))


def settings(store: VoiceprintStore) -> dict[str, str]:
    return {k: get_setting(store, k) for k in SETTINGS}


def _setting(key: str) -> tuple[str, tuple[str, ...]]:
    if key not in SETTINGS:
        raise UsageError(f"no setting '{key}' (settings: {', '.join(SETTINGS)})")
    return SETTINGS[key]


def remember_by_default(path: str | Path) -> bool:
    """The database's ``remember`` setting (off when there is no database)."""
    from .store import VoiceprintStore

    p = Path(path).expanduser()
    if not p.exists():
        return False
    with VoiceprintStore(p, create=False) as store:
        return get_setting(store, "remember") == "on"


# --------------------------------------------------------------------------- remembering
def _insert_hearing(db: sqlite3.Connection, speaker_id: int, model_id: str, source: str, when: str,
                    speech: float, embeddings: np.ndarray | None) -> None:
    db.execute("INSERT INTO appearances (speaker_id, source, heard, speech_seconds) VALUES (?, ?, ?, ?)",
               (speaker_id, source, when, float(speech)))
    if embeddings is None:
        return
    sample_id = db.execute(
        "INSERT INTO samples (speaker_id, model_id, source, start, end, speech_seconds, created) "
        "VALUES (?, ?, ?, NULL, NULL, ?, ?)", (speaker_id, model_id, source, float(speech), when)
    ).lastrowid
    db.executemany("INSERT INTO embeddings (sample_id, dim, vector) VALUES (?, ?, ?)",
                   [(sample_id, embeddings.shape[1], v.tobytes()) for v in embeddings])
    _trim(db, speaker_id)


def _trim(db: sqlite3.Connection, speaker_id: int, keep: int = SAMPLES_PER_ENTRY) -> None:
    """Keep an anonymous entry's ``keep`` newest samples (ON DELETE CASCADE drops their embeddings)."""
    db.execute("DELETE FROM samples WHERE speaker_id = ? AND id NOT IN "
               "(SELECT id FROM samples WHERE speaker_id = ? ORDER BY created DESC, id DESC LIMIT ?)",
               (speaker_id, speaker_id, keep))


def _next_number(db: sqlite3.Connection) -> int:
    row = db.execute("SELECT value FROM settings WHERE key = ?", (NEXT_KEY,)).fetchone()
    n = int(row[0]) if row is not None else 1
    for (name,) in db.execute("SELECT name FROM speakers"):
        m = re.fullmatch(rf"(?i){ANONYMOUS_PREFIX}[ _]?(\d+)", name)
        if m:
            n = max(n, int(m.group(1)) + 1)
    db.execute("INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
               (NEXT_KEY, str(n + 1)))
    return n


def remember(
    store: VoiceprintStore,
    diarization: Diarization,
    matches: Mapping[str, tuple[str, float]],
    confidence: Mapping[str, float | None],
    source: str,
    model_id: str,
    *,
    now: datetime | None = None,
    min_seconds: float = MIN_SECONDS,
    min_confidence: float = MIN_CONFIDENCE,
    max_anonymous: int = MAX_ANONYMOUS,
) -> Remembered:
    """Store new unknown voices and the hearings of remembered ones: one transaction."""
    when = (now or _now()).isoformat(timespec="seconds")
    out = Remembered()
    touched: set[int] = set()
    with store._errors(), store._write() as db:
        for label in diarization.speakers:
            speech = seconds(solo_spans(diarization.turns, label)[0])
            conf = confidence.get(label)
            good = speech >= min_seconds and conf is not None and conf >= min_confidence
            emb = diarization.embeddings.get(label)
            usable = good and emb is not None and len(emb) > 0
            if label in matches:
                name, sim = matches[label]
                if not is_anonymous_name(name):
                    continue  # an enrolled speaker: memory leaves it alone
                row = db.execute("SELECT id FROM speakers WHERE name = ? AND anonymous = 1", (name,)).fetchone()
                if row is None:
                    continue  # renamed or forgotten meanwhile
                other_model = db.execute("SELECT 1 FROM samples WHERE speaker_id = ? AND model_id != ? LIMIT 1",
                                         (row[0], model_id)).fetchone()
                update = usable and sim >= UPDATE_SIMILARITY and other_model is None
                _insert_hearing(db, row[0], model_id, source, when, speech, condense(emb) if update else None)
                touched.add(row[0])
                out.heard.append(Heard(label, name, speech, float(sim), False, update))
            elif usable:
                name = f"{ANONYMOUS_PREFIX} {_next_number(db)}"
                speaker_id = db.execute("INSERT INTO speakers (name, created, anonymous) VALUES (?, ?, 1)",
                                        (name, when)).lastrowid
                assert speaker_id is not None
                vectors = condense(emb)
                _insert_hearing(db, speaker_id, model_id, source, when, speech, vectors)
                centroid = l2_normalize(vectors.mean(axis=0))
                sim = float(np.dot(l2_normalize(np.asarray(diarization.centroids[label], np.float64)), centroid))
                touched.add(speaker_id)
                out.heard.append(Heard(label, name, speech, sim, True, True))
        out.evicted = _evict(db, max_anonymous, touched)
    return out


def _evict(db: sqlite3.Connection, limit: int, keep: set[int]) -> list[str]:
    rows = db.execute(
        """SELECT sp.id, sp.name FROM speakers sp LEFT JOIN appearances a ON a.speaker_id = sp.id
           WHERE sp.anonymous = 1 GROUP BY sp.id ORDER BY COALESCE(MAX(a.heard), sp.created), sp.id"""
    ).fetchall()
    excess = len(rows) - limit
    gone = []
    for speaker_id, name in rows:
        if excess <= 0:
            break
        if speaker_id in keep:
            continue
        db.execute("DELETE FROM speakers WHERE id = ?", (speaker_id,))
        gone.append(name)
        excess -= 1
    return gone


# --------------------------------------------------------------------------- management
def _find(db: sqlite3.Connection, name: str) -> tuple[int, str, bool]:
    row = db.execute("SELECT id, name, anonymous FROM speakers WHERE name = ?", (name.strip(),)).fetchone()
    if row is None:
        raise VoiceprintError(f"no speaker named '{name.strip()}' in the database (see `whispdiar speakers list`)")
    return int(row[0]), str(row[1]), bool(row[2])


def merge(store: VoiceprintStore, source: str, target: str) -> str:
    """Join ``source`` into ``target`` (samples and hearings); ``source`` is gone, ``target``
    keeps its name. A named speaker cannot be merged into an anonymous entry (the other
    way round is the way to name it). Returns the target's name."""
    with store._errors(), store._write() as db:
        a_id, a_name, a_anon = _find(db, source)
        b_id, b_name, b_anon = _find(db, target)
        if a_id == b_id:
            raise VoiceprintError(f"cannot merge '{a_name}' with itself")
        if b_anon and not a_anon:
            raise VoiceprintError(f"'{a_name}' has a name and '{b_name}' is a remembered unknown voice: "
                                  f"merge the other way round (whispdiar speakers merge "
                                  f"{shlex.quote(b_name)} {shlex.quote(a_name)})")
        models = {r[0] for r in db.execute("SELECT DISTINCT model_id FROM samples WHERE speaker_id IN (?, ?)",
                                           (a_id, b_id))}
        if len(models) > 1:
            raise VoiceprintError(f"'{a_name}' and '{b_name}' were enrolled with different embedding models "
                                  f"({', '.join(sorted(models))}): not merged")
        db.execute("UPDATE samples SET speaker_id = ? WHERE speaker_id = ?", (b_id, a_id))
        db.execute("UPDATE appearances SET speaker_id = ? WHERE speaker_id = ?", (b_id, a_id))
        db.execute("DELETE FROM speakers WHERE id = ?", (a_id,))
        if b_anon:
            _trim(db, b_id)
    return b_name


DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_age(text: str) -> timedelta:
    """'30d', '12h', '2w', '90m', '45s' -> timedelta (UsageError otherwise)."""
    m = DURATION.fullmatch(text.strip().lower())
    if m is None:
        raise UsageError(f"--older-than {text!r}: expected a number and a unit s, m, h, d or w (e.g. 30d)")
    return timedelta(seconds=float(m.group(1)) * UNITS[m.group(2)])


def forget_unknown(store: VoiceprintStore, older_than: timedelta | None = None, *,
                   now: datetime | None = None) -> list[str]:
    """Remove anonymous entries not heard for ``older_than`` (all of them when None); their names."""
    cutoff = None if older_than is None else ((now or _now()) - older_than).isoformat(timespec="seconds")
    with store._errors(), store._write() as db:
        rows = db.execute(
            """SELECT sp.id, sp.name, COALESCE(MAX(a.heard), sp.created) FROM speakers sp
               LEFT JOIN appearances a ON a.speaker_id = sp.id WHERE sp.anonymous = 1 GROUP BY sp.id"""
        ).fetchall()
        gone = [(i, n) for i, n, last in rows if cutoff is None or last < cutoff]
        db.executemany("DELETE FROM speakers WHERE id = ?", [(i,) for i, _ in gone])
    return sorted((n for _, n in gone), key=lambda n: int(re.sub(r"\D", "", n) or 0))
