"""The engine behind the routes: the models, loaded once, and the jobs that use them.

``Service`` loads one ``TranscribeWorker`` per served whisper model (the CLI's worker:
the same pipeline, namer and writers, so a result is byte for byte the command's), keeps
the jobs (``jobs.JobStore``) and runs them on ``workers`` threads fed by the bounded
queue. Every request's own options become the worker's ``TranscribeJob`` for that run,
and a namer is made per job from the speaker database as it is then (so an enrollment
or a rename through the API counts from the next job on; nothing to reload).

State directory (``--state-dir``, default ``$WHISPDIAR_HOME/server``, created 0700):
``jobs.db``, ``jobs/<id>/`` (``audio``: the upload; ``result/``: every format, written
atomically before the job is marked done), ``tmp/`` (the OpenAI endpoint's uploads,
deleted when answered, and at every start) and ``lock`` (one server per directory).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
import shutil
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .. import errors as wd
from ..paths import data_dir, make_private_dir
from .config import ServerConfig
from .errors import ApiError, from_whispdiar
from .jobs import CANCELLED, DONE, FAILED, FINISHED, INTERRUPTED, QUEUED, RUNNING, Job, JobQueue, JobStore, QueueFull
from .jobs import Stopping as QueueStopping
from .options import RunOptions

log = logging.getLogger("whispdiar.server")

MAX_ATTEMPTS = 2  # a job the server died under this many times is not started again
STOP_WAIT = 5.0  # s close() waits for running jobs to stop
AUDIO = "audio"  # the upload's name in a job's directory
RESULT = "result"
VERBOSE_JSON = "verbose_json"  # OpenAI's verbose_json (segments and words), kept with every transcription


def result_file(fmt: str) -> str:
    """The file a job's result in ``fmt`` is kept in (``result.compact.json``, ...)."""
    from ..outputs.writers import EXTENSIONS

    return f"result.{'verbose.json' if fmt == VERBOSE_JSON else EXTENSIONS.get(fmt, fmt)}"


class Slot:
    """A place in the queue, held while an upload arrives; given back unless a job takes it."""

    def __init__(self, queue: JobQueue):
        queue.reserve()
        self.queue = queue
        self.held = True

    def taken(self) -> None:
        self.held = False

    def release(self) -> None:
        if self.held:
            self.held = False
            self.queue.unreserve()


class Service:
    """Loaded models, the job store and the job workers of one server process."""

    def __init__(self, config: ServerConfig, *, warn: Callable[[str], None] | None = None,
                 say: Callable[[str], None] | None = None):
        from .. import models as registry
        from ..batch.job import TranscribeJob, TranscribeWorker, default_threads

        self.config = config.check()
        self.warn = warn or _stderr_warning  # problems (a loose database, a missing VAD model)
        self.say = say or _stderr_line  # what happened (jobs resumed at start)
        self.requeued = 0  # running jobs stop() cancelled and put back, for the next start
        self.state_dir = config.state_dir or data_dir() / "server"
        self._lock_fd: int | None = None
        self.store: JobStore | None = None
        self.workers: dict[str, Any] = {}
        self._threads: list[threading.Thread] = []
        self._active: dict[str, Job] = {}  # queued or running jobs of this process
        self._active_lock = threading.Lock()
        self._stopping = threading.Event()
        self.queue = JobQueue(config.queue_size)
        try:
            self._open_state()
            vad = True
            try:
                registry.resolve("silero-vad")
            except wd.ModelError as e:
                self.warn(f"{e}; continuing without it")
                vad = False
            names = list(dict.fromkeys(config.models))
            for name in names:  # every name checked before the first (slow) load
                registry.resolve(name, role="asr")
            for name in names:
                self.workers[name] = TranscribeWorker(TranscribeJob(model=name, vad=vad),
                                                      config.threads or default_threads())
            self.default_model = names[0]
            self._recover()
            for i in range(config.workers):
                self._spawn(self._work, f"whispdiar-job-{i + 1}")
            self._spawn(self._janitor, "whispdiar-janitor")
        except BaseException:
            self.close(wait=0.0)
            raise

    # ------------------------------------------------------------------ state
    def _open_state(self) -> None:
        try:
            make_private_dir(self.state_dir)
            fd = os.open(self.state_dir / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise wd.UsageError(f"cannot use the state directory {self.state_dir}: {e.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            pid = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise wd.UsageError(f"another whispdiar serve (pid {pid}) uses {self.state_dir}; stop it, or give "
                                "this one its own --state-dir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd
        self.jobs_dir = self.state_dir / "jobs"
        self.tmp_dir = self.state_dir / "tmp"
        shutil.rmtree(self.tmp_dir, ignore_errors=True)  # the last run's unanswered uploads
        for d in (self.jobs_dir, self.tmp_dir):
            make_private_dir(d)
        self.store = JobStore(self.state_dir / "jobs.db")

    def _recover(self) -> None:
        """Jobs a previous run left: orphan files go, unfinished jobs are queued again (or
        reported interrupted), expired ones are deleted."""
        assert self.store is not None
        known = self.store.ids()
        for d in self.jobs_dir.iterdir():
            if d.name not in known:  # uploaded, but the server stopped before the job was recorded
                shutil.rmtree(d, ignore_errors=True)
        resumed = interrupted = 0
        for job in self.store.unfinished():
            why = None
            if not (self.jobs_dir / job.id / AUDIO).is_file():
                why = "its upload is missing"
            elif job.task == "transcribe" and job.model not in self.workers:
                why = f"this server no longer serves the model {job.model} (start it with -m {job.model})"
            elif not self.config.resume:
                why = "the server stopped before it finished (restarted with --no-resume)"
            elif job.status == RUNNING and job.attempts >= MAX_ATTEMPTS:
                why = f"the server stopped {job.attempts} times while running it"
            if why is not None:
                self._finish(job, INTERRUPTED, f"interrupted: {why}", 500)
                interrupted += 1
                continue
            job.status = QUEUED
            shutil.rmtree(self.jobs_dir / job.id / RESULT, ignore_errors=True)
            self.store.save(job, "status")
            with self._active_lock:
                self._active[job.id] = job
            self.queue.put(job, reserved=False)
            resumed += 1
        if resumed or interrupted:
            self.say(f"serve: {resumed} unfinished job{'s' * (resumed != 1)} resumed, {interrupted} "
                     "reported interrupted")
        self.expire()

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        t = threading.Thread(target=target, name=name, daemon=True)
        t.start()
        self._threads.append(t)

    # ------------------------------------------------------------------ requests
    def pick_model(self, requested: str | None) -> str:
        """The served model for a request's ``model`` field: a served model by its name; any
        name that is not a whispdiar model (``whisper-1``, ``gpt-4o-transcribe``, ...) gets
        the default; a whispdiar model this server does not serve is an error (it never
        loads a model, or opens a path, because a request names it)."""
        from .. import models as registry

        name = (requested or "").strip()
        if not name:
            return self.default_model
        if name in self.workers:
            return name
        try:
            known = name in registry.load_manifest()
        except wd.WhispdiarError:
            known = False
        if known:
            raise ApiError(400, f"model '{name}' is not served here (served: {', '.join(self.workers)}; start "
                           f"the server with -m {name} to serve it)", param="model", code="model_not_served")
        return self.default_model

    def check(self, opts: RunOptions) -> RunOptions:
        """Options checked against the loaded model (language, translation); the language
        normalised to whisper's code."""
        if opts.task != "transcribe":
            if opts.start is not None or opts.end is not None:
                raise ApiError(400, "start/end apply to transcriptions only", param="start")
            return opts
        transcriber = self.workers[opts.model].pipeline.transcriber
        try:
            language = transcriber.check_language(opts.language)
            transcriber.check_task(opts.translate)
        except wd.UsageError as e:
            raise ApiError(400, str(e), param="language") from None
        # "auto" stays None (detect): check_language answers "en" for an English-only model.
        return replace(opts, language=None if opts.language is None else language)

    def reserve(self) -> Slot:
        """A queue place for a request about to upload (429 when full, 503 when stopping)."""
        try:
            return Slot(self.queue)
        except QueueFull:
            raise ApiError(429, f"the queue is full ({self.config.queue_size} jobs waiting, "
                           f"{self.config.workers} running); try again later", code="queue_full",
                           headers={"Retry-After": "10"}) from None
        except QueueStopping:
            raise ApiError(503, "the server is shutting down", code="shutting_down") from None

    def new_dir(self, persisted: bool) -> tuple[str, Path]:
        """A new job id and its private directory (jobs/ or, for answered-and-forgotten requests, tmp/)."""
        job_id = secrets.token_hex(12)
        d = (self.jobs_dir if persisted else self.tmp_dir) / job_id
        d.mkdir(mode=0o700)
        return job_id, d

    def job_dir(self, job: Job) -> Path:
        return (self.jobs_dir if job.persisted else self.tmp_dir) / job.id

    def submit(self, job: Job, upload: Path, slot: Slot) -> None:
        """Check the uploaded audio (400 if unreadable), keep it as the job's ``audio``,
        record the job and queue it in ``slot``. Blocking: call from a thread."""
        from ..audio import read as audio_io

        d = self.job_dir(job)
        path = d / AUDIO
        with open(upload, "rb+") as f:
            os.fsync(f.fileno())  # the upload survives a crash once the job is recorded
        os.replace(upload, path)
        try:
            info = audio_io.check(path, job.options.get("channel"))
        except wd.WhispdiarError as e:
            raise from_whispdiar(e, {str(path): job.filename}) from None
        job.duration = round(info.duration, 3)
        with self._active_lock:
            self._active[job.id] = job
        try:
            if job.persisted:
                assert self.store is not None
                self.store.add(job)
            try:
                self.queue.put(job)
            finally:
                slot.taken()  # put used the place, or gave it back
        except BaseException as e:
            with self._active_lock:
                self._active.pop(job.id, None)
            if job.persisted and self.store is not None:
                self.store.delete(job.id)
            if isinstance(e, QueueStopping):
                raise ApiError(503, "the server is shutting down", code="shutting_down") from None
            raise

    def discard(self, job_id: str, persisted: bool) -> None:
        """Remove the files of a request that did not become a job (or of an answered one)."""
        shutil.rmtree((self.jobs_dir if persisted else self.tmp_dir) / job_id, ignore_errors=True)

    # ------------------------------------------------------------------ jobs
    def get(self, job_id: str) -> Job:
        with self._active_lock:
            job = self._active.get(job_id)
        if job is None and self.store is not None:
            job = self.store.get(job_id)
        if job is None:
            raise ApiError(404, f"no job {job_id!r} (never submitted, deleted, or expired)", code="job_not_found")
        return job

    def recent(self, limit: int, status: str | None) -> list[Job]:
        assert self.store is not None
        with self._active_lock:
            live = dict(self._active)
        return [live.get(j.id, j) for j in self.store.recent(limit, status)]

    def position(self, job: Job) -> int | None:
        return self.queue.position(job) if job.status == QUEUED else None

    def cancel(self, job_id: str) -> Job:
        """Cancel a queued or running job (409 for a finished one). A running job stops within
        a few seconds; the job's status says ``cancelled`` once it has."""
        job = self.get(job_id)
        if job.status in FINISHED:
            raise ApiError(409, f"job {job_id} is already {job.status}", code="job_finished")
        job.cancel_reason = job.cancel_reason or "cancel"
        job.cancel.set()
        if self.queue.remove(job):
            self._stopped(job, CANCELLED, "cancelled before it started", None)
        return job

    def delete(self, job_id: str) -> None:
        """Forget a job and its files now (a running one is cancelled and removed when it stops)."""
        job = self.get(job_id)
        if job.status not in FINISHED:
            job.delete_when_stopped = True
            with contextlib.suppress(ApiError):
                self.cancel(job_id)
            if job.status not in FINISHED:
                return
        self._remove(job.id)

    def _remove(self, job_id: str) -> None:
        shutil.rmtree(self.jobs_dir / job_id, ignore_errors=True)
        if self.store is not None:
            self.store.delete(job_id)

    def result_path(self, job: Job, fmt: str) -> Path:
        if job.status != DONE:
            raise ApiError(409, f"job {job.id} is {job.status}: no result "
                           + ("yet" if job.status in (QUEUED, RUNNING) else "(see its error)"), code="job_not_done")
        if fmt not in job.formats:
            raise ApiError(400, f"format {fmt!r} is not one of this job's: {', '.join(job.formats)}", param="format")
        return self.jobs_dir / job.id / RESULT / result_file(fmt)

    def expire(self) -> None:
        """Delete finished jobs whose keeping time is over (files first, then the row)."""
        if self.store is None:
            return
        with self._active_lock:
            active = set(self._active)
        for job_id in self.store.expired(time.time()):
            if job_id not in active:
                self._remove(job_id)

    # ------------------------------------------------------------------ running
    def _work(self) -> None:
        while (job := self.queue.get()) is not None:
            self._execute(job)

    def _janitor(self) -> None:
        interval = min(60.0, max(0.5, self.config.keep_seconds / 4))
        while not self._stopping.wait(interval):
            try:
                self.expire()
            except Exception:  # a full disk or a locked database: try again next round
                log.exception("expiring old jobs failed")

    def _execute(self, job: Job) -> None:
        from ..cancel import Cancelled as StageCancelled
        from ..pipeline import Cancelled

        d = self.job_dir(job)
        job.status, job.started = RUNNING, time.time()
        job.attempts += 1
        if job.persisted:
            assert self.store is not None
            self.store.save(job, "status", "started", "attempts")
        try:
            if job.cancel.is_set():
                raise Cancelled("cancelled before it started")
            if job.task == "transcribe":
                self._transcribe(job, d)
            else:
                self._diarize(job, d)
        except (Cancelled, StageCancelled):
            if job.cancel_reason == "stop":
                self._stopped(job, QUEUED, "the server is shutting down", 503)
            else:
                self._stopped(job, CANCELLED, "cancelled", None)
            return
        except wd.WhispdiarError as e:
            err = from_whispdiar(e, {str(d / AUDIO): job.filename, str(d): f"job {job.id}"})
            self._stopped(job, FAILED, err.message, err.status)
            return
        except ApiError as e:
            self._stopped(job, FAILED, e.message, e.status)
            return
        except Exception as e:  # a bug: the client gets one line, the server's log the traceback
            log.exception("job %s failed", job.id)
            first = str(e).splitlines()[0] if str(e) else ""
            self._stopped(job, FAILED, f"internal error: {type(e).__name__}: {first}", 500)
            return
        self._stopped(job, DONE, None, None)

    def _namer(self, embedding_model_id: str | None, opts: RunOptions) -> Any:
        from ..batch.job import make_namer

        if embedding_model_id is None or not opts.diarize or not opts.names:
            return None
        return make_namer(embedding_model_id, self.config.speakers_db, self.config.threshold, warn=self.warn,
                          remember=opts.remember)

    def _transcribe(self, job: Job, d: Path) -> None:
        from ..outputs.writers import FORMATS
        from .openai_api import verbose_json

        opts = RunOptions.from_json(job.options)
        worker = self.workers[job.model]
        tj = opts.transcribe_job(FORMATS if job.persisted else (), worker.job.vad, worker.job.beam_size)
        assert job.progress is not None
        result = worker.run(d / AUDIO, job.filename, origin=job.filename, progress=job.progress.update,
                            cancel=job.cancel, job=tj, namer=self._namer(worker.embedding_model_id, opts))
        job.duration = round(result.duration, 3)
        if not job.persisted:
            job.result = result
            return
        rendered = worker.render(result, d / AUDIO, job.filename, job=tj, audio_url=quote(job.filename))
        task = "translate" if opts.translate else "transcribe"
        rendered[VERBOSE_JSON] = json.dumps(verbose_json(result, ("segment", "word"), task), ensure_ascii=False,
                                            indent=2) + "\n"
        self._write_results(job, d, rendered)

    def _diarize(self, job: Job, d: Path) -> None:
        from ..batch.job import diarize_file
        from ..outputs.destination import DIARIZE_FORMATS, render_turns

        opts = RunOptions.from_json(job.options)
        pipeline = self.workers[self.default_model].pipeline
        models = {k: v for k, v in pipeline.models.items() if k in ("segmentation", "embedding")}
        assert job.progress is not None
        progress = job.progress
        result = diarize_file(pipeline.diarizer, d / AUDIO, job.filename, models=models,
                              namer=self._namer(pipeline.embedding_model_id, opts), num_speakers=opts.num_speakers,
                              min_speakers=opts.min_speakers, max_speakers=opts.max_speakers, channel=opts.channel,
                              origin=job.filename, progress=lambda done, total: progress.update("diarize", done, total),
                              cancel=job.cancel)
        job.duration = round(result.duration, 3)
        if not job.persisted:
            job.result = result
            return
        self._write_results(job, d, {f: render_turns(result, f) for f in DIARIZE_FORMATS})

    def _write_results(self, job: Job, d: Path, rendered: dict[str, str]) -> None:
        """Every format in ``result/``, each written atomically; the job is marked done after."""
        from ..outputs.writers import write_atomic

        out = d / RESULT
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(mode=0o700)
        for fmt, text in rendered.items():
            write_atomic(out / result_file(fmt), text)
        job.formats = tuple(rendered)

    def _stopped(self, job: Job, status: str, error: str | None, error_status: int | None) -> None:
        """A job left its worker (or the queue): record how, wake whoever waits for it."""
        if status == QUEUED and job.persisted:  # the server stops: it resumes at the next start
            self.requeued += job.status == RUNNING
            job.status = QUEUED
            job.reset_progress()
            if self.store is not None:
                self.store.save(job, "status")
        elif status == QUEUED:  # an OpenAI-endpoint request: its client gets the 503
            job.status, job.error, job.error_status = FAILED, error, error_status
        else:
            self._finish(job, status, error, error_status)
        with self._active_lock:
            self._active.pop(job.id, None)
        job.stopped.set()
        for notify in list(job.waiters):
            notify()
        if job.delete_when_stopped and job.persisted:
            self._remove(job.id)

    def _finish(self, job: Job, status: str, error: str | None, error_status: int | None) -> None:
        now = time.time()
        job.status, job.error, job.error_status = status, error, error_status
        job.finished, job.expires = now, now + self.config.keep_seconds
        if job.persisted and self.store is not None:
            self.store.save(job)

    # ------------------------------------------------------------------ stopping
    def stop(self) -> None:
        """Take nothing new, put back what waits, cancel what runs (it resumes at the next
        start); returns at once. Safe to call more than once and from any thread."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        for job in self.queue.close():
            job.cancel_reason = "stop"
            self._stopped(job, QUEUED, "the server is shutting down", 503)
        with self._active_lock:
            running = list(self._active.values())
        for job in running:
            job.cancel_reason = "stop"
            job.cancel.set()

    def close(self, wait: float = STOP_WAIT) -> None:
        """``stop``, wait up to ``wait`` seconds for running jobs, free the models, release the state directory."""
        self.stop()
        deadline = time.monotonic() + wait
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        with self._active_lock:
            stuck = list(self._active.values())
        if self.store is not None:
            for job in stuck:  # still inside an engine: recorded as waiting, resumed at the next start
                if job.persisted:
                    job.status = QUEUED
                    self.store.save(job, "status")
        for worker in self.workers.values():
            worker.close()
        if self.store is not None:
            self.store.close()
            self.store = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def status(self) -> dict[str, Any]:
        with self._active_lock:
            running = sum(1 for j in self._active.values() if j.status == RUNNING)
        return {"models": list(self.workers), "default_model": self.default_model, "workers": self.config.workers,
                "running": running, "waiting": self.queue.waiting, "queue_size": self.config.queue_size,
                "max_upload_bytes": self.config.max_upload_bytes, "keep_seconds": self.config.keep_seconds,
                "stopping": self.stopping}


def _stderr_warning(message: str) -> None:
    sys.stderr.write(f"whispdiar: warning: {message}\n")


def _stderr_line(message: str) -> None:
    sys.stderr.write(f"whispdiar: {message}\n")
