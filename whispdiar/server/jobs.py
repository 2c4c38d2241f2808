"""Jobs: the record of each submitted recording, kept in SQLite, and the bounded queue in
front of the workers.

``jobs.db`` (in the server's private state directory) holds one row per job: what was
asked, where it stands, when it ends and when its files go. Every change is its own
committed transaction (WAL, ``synchronous=FULL``: a status the API reported survives a
power cut), so after a crash or a restart each job is found as it last was: ``queued`` or
``running`` ones are resumed (or reported ``interrupted``), finished ones are kept until
they expire. The job's files live in ``jobs/<id>/`` beside it (the upload, then
``result/``); the row says ``done`` only after every result file is in place.

The queue counts the jobs waiting for a worker plus the uploads still arriving for one
(a slot is reserved before a body is read), so a full queue is known, and answered with
429, before any upload starts.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

QUEUED, RUNNING, DONE = "queued", "running", "done"
FAILED, CANCELLED, INTERRUPTED = "failed", "cancelled", "interrupted"
FINISHED = frozenset({DONE, FAILED, CANCELLED, INTERRUPTED})
# Share of a transcription's progress per stage (whisper dominates; diarization runs beside it).
STAGE_WEIGHTS = {"transcribe": {"vad": 0.05, "transcribe": 0.75, "diarize": 0.2}, "diarize": {"diarize": 1.0}}

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    task TEXT NOT NULL,
    filename TEXT NOT NULL,
    model TEXT NOT NULL,
    options TEXT NOT NULL,
    status TEXT NOT NULL,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    expires REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    error_status INTEGER,
    duration REAL,
    size INTEGER NOT NULL DEFAULT 0,
    formats TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, created);
"""
COLUMNS = ("id", "task", "filename", "model", "options", "status", "created", "started", "finished", "expires",
           "attempts", "error", "error_status", "duration", "size", "formats")


@dataclass(slots=True)
class Progress:
    """Where a running job is: per stage (done, total), and the whole as a fraction that never goes back."""

    weights: dict[str, float]
    stages: dict[str, tuple[float, float]] = field(default_factory=dict)
    fraction: float = 0.0
    stage: str | None = None

    def update(self, stage: str, done: float, total: float) -> None:
        # Called from the engines' threads: a few assignments, no lock needed for a progress report.
        self.stages[stage] = (done, total)
        self.stage = stage
        now = 0.0
        for name, weight in self.weights.items():
            d, t = self.stages.get(name, (0.0, 0.0))
            if t > 0:
                now += weight * min(1.0, max(0.0, d) / t)
        self.fraction = max(self.fraction, min(0.99, now))  # 1.0 only when done

    def public(self) -> dict[str, Any]:
        return {"fraction": round(self.fraction, 3), "stage": self.stage,
                "stages": {s: {"done": round(d, 2), "total": round(t, 2)} for s, (d, t) in self.stages.items()}}


@dataclass(slots=True, eq=False)
class Job:
    id: str
    task: str  # "transcribe" or "diarize"
    filename: str  # the client's file name, made safe: shown in results, never a path
    model: str  # the whisper model that runs it ("" for diarize)
    options: dict[str, Any]
    status: str = QUEUED
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    expires: float | None = None
    attempts: int = 0
    error: str | None = None
    error_status: int | None = None
    duration: float | None = None  # seconds of audio
    size: int = 0  # bytes uploaded
    formats: tuple[str, ...] = ()  # result formats there when done
    # Not stored: the run's state in this process.
    persisted: bool = True  # False: an OpenAI-endpoint request, answered and forgotten
    cancel: threading.Event = field(default_factory=threading.Event, repr=False)
    stopped: threading.Event = field(default_factory=threading.Event, repr=False)  # it left the worker
    progress: Progress | None = field(default=None, repr=False)
    result: Any = field(default=None, repr=False)  # the Result (OpenAI endpoint)
    delete_when_stopped: bool = False
    cancel_reason: str | None = None  # "cancel" (the client's) or "stop" (the server's)
    waiters: list[Callable[[], None]] = field(default_factory=list, repr=False)  # called when it stops

    def notify(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (from the worker's thread) once the job has stopped; at once if it has."""
        self.waiters.append(callback)
        if self.stopped.is_set():
            callback()

    def __post_init__(self) -> None:
        if self.progress is None:
            self.reset_progress()

    def reset_progress(self) -> None:
        weights = dict(STAGE_WEIGHTS.get(self.task, {}))
        if self.options.get("diarize") is False:
            weights.pop("diarize", None)
        total = sum(weights.values()) or 1.0
        self.progress = Progress({s: w / total for s, w in weights.items()})

    def public(self) -> dict[str, Any]:
        """The job as the API shows it."""
        def when(t: float | None) -> str | None:
            return None if t is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))

        assert self.progress is not None
        progress = self.progress.public()
        if self.status == DONE:
            progress["fraction"] = 1.0
        return {
            "id": self.id, "object": "whispdiar.job", "task": self.task, "status": self.status,
            "file": self.filename, "model": self.model or None, "options": self.options,
            "created_at": when(self.created), "started_at": when(self.started), "finished_at": when(self.finished),
            "expires_at": when(self.expires), "duration": self.duration, "size": self.size,
            "progress": progress if self.status in (RUNNING, DONE) else None,
            "error": None if self.error is None else {"message": self.error, "status": self.error_status},
            "formats": list(self.formats), "attempts": self.attempts,
        }


class JobStore:
    """The jobs table; every method is one transaction. One connection, used under a lock:
    every statement is tiny, and workers, the janitor and requests all use it."""

    def __init__(self, path: Path):
        self.path = path
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.close(fd)  # SQLite gives its -wal/-shm files the database's mode
        self._lock = threading.Lock()
        self.db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=10)
        with self._lock:
            self.db.execute("PRAGMA journal_mode = WAL")
            self.db.execute("PRAGMA synchronous = FULL")
            self.db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self.db.close()

    def add(self, job: Job) -> None:
        row = _row(job)
        with self._lock:
            self.db.execute(f"INSERT INTO jobs ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
                            [row[c] for c in COLUMNS])

    def save(self, job: Job, *names: str) -> None:
        """Write the named fields of ``job`` (all but the id when none are named)."""
        row = _row(job)
        cols = names or COLUMNS[1:]
        with self._lock:
            self.db.execute(f"UPDATE jobs SET {', '.join(f'{c} = ?' for c in cols)} WHERE id = ?",
                            [row[c] for c in cols] + [job.id])

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            row = self.db.execute(f"SELECT {', '.join(COLUMNS)} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else _job(row)

    def recent(self, limit: int = 100, status: str | None = None) -> list[Job]:
        where, args = ("WHERE status = ?", [status]) if status else ("", [])
        with self._lock:
            rows = self.db.execute(f"SELECT {', '.join(COLUMNS)} FROM jobs {where} ORDER BY created DESC LIMIT ?",
                                   [*args, limit]).fetchall()
        return [_job(r) for r in rows]

    def unfinished(self) -> list[Job]:
        with self._lock:
            rows = self.db.execute(f"SELECT {', '.join(COLUMNS)} FROM jobs WHERE status IN (?, ?) ORDER BY created",
                                   (QUEUED, RUNNING)).fetchall()
        return [_job(r) for r in rows]

    def expired(self, now: float) -> list[str]:
        with self._lock:
            return [r[0] for r in self.db.execute("SELECT id FROM jobs WHERE expires IS NOT NULL AND expires <= ?",
                                                  (now,))]

    def ids(self) -> set[str]:
        with self._lock:
            return {r[0] for r in self.db.execute("SELECT id FROM jobs")}

    def delete(self, job_id: str) -> None:
        with self._lock:
            self.db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))


def _row(job: Job) -> dict[str, Any]:
    return {"id": job.id, "task": job.task, "filename": job.filename, "model": job.model,
            "options": json.dumps(job.options, sort_keys=True), "status": job.status, "created": job.created,
            "started": job.started, "finished": job.finished, "expires": job.expires, "attempts": job.attempts,
            "error": job.error, "error_status": job.error_status, "duration": job.duration, "size": job.size,
            "formats": json.dumps(list(job.formats))}


def _job(row: tuple) -> Job:
    d = dict(zip(COLUMNS, row, strict=True))
    d["options"] = json.loads(d["options"])
    d["formats"] = tuple(json.loads(d["formats"]))
    return Job(**d)


class QueueFull(Exception):
    """No room: as many jobs wait (or are being uploaded) as the queue holds."""


class Stopping(Exception):
    """The server is shutting down: nothing new is taken."""


class JobQueue:
    """Jobs waiting for a worker, first in first out, at most ``capacity`` of them
    (reservations for uploads in progress included)."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._cond = threading.Condition()
        self._waiting: deque[Job] = deque()
        self._reserved = 0
        self._closed = False

    def reserve(self) -> None:
        """Hold a place for a job whose upload is about to be read (QueueFull, Stopping)."""
        with self._cond:
            if self._closed:
                raise Stopping()
            if len(self._waiting) + self._reserved >= self.capacity:
                raise QueueFull()
            self._reserved += 1

    def unreserve(self) -> None:
        with self._cond:
            self._reserved -= 1

    def put(self, job: Job, *, reserved: bool = True) -> None:
        """Queue ``job`` in its reserved place (``reserved=False``: resumed jobs at start,
        which may exceed the capacity: they were accepted before)."""
        with self._cond:
            if reserved:
                self._reserved -= 1
            if self._closed:
                raise Stopping()
            self._waiting.append(job)
            self._cond.notify()

    def get(self) -> Job | None:
        """The next job (blocks); None once the queue is closed."""
        with self._cond:
            while not self._waiting and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            return self._waiting.popleft()

    def remove(self, job: Job) -> bool:
        """Take a waiting job out (cancelled before it started); False if no longer waiting."""
        with self._cond:
            try:
                self._waiting.remove(job)
            except ValueError:
                return False
            return True

    def close(self) -> list[Job]:
        """Stop: waiting workers get None; returns the jobs that were still waiting."""
        with self._cond:
            self._closed = True
            left = list(self._waiting)
            self._waiting.clear()
            self._cond.notify_all()
            return left

    @property
    def waiting(self) -> int:
        with self._cond:
            return len(self._waiting)

    def position(self, job: Job) -> int | None:
        """0-based place of a waiting job in the queue."""
        with self._cond:
            for i, j in enumerate(self._waiting):
                if j is job:
                    return i
            return None
