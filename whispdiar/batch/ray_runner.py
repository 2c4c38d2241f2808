"""Run a batch's files on Ray actors; the driver keeps writing the outputs and the manifest.

Each actor (``num_cpus`` = ``--threads``) loads the models once (``TranscribeWorker``)
and gets one file at a time: the driver sends the file's bytes (the inputs need not be
on shared storage) and gets the rendered outputs back, which ``cli._run_batch`` writes
exactly as in a local run. The voiceprints are read on the driver and put in Ray's
object store once; every actor gets the same reference.

Failures: a file whose own processing fails (bad audio, ...) comes back as its
``WhispdiarError`` and is reported, never retried. A worker that dies under a file (its
process killed, its node lost) raises ``RayActorError`` here: Ray restarts the actor
(``max_restarts``), and the file goes back to the queue, for another actor when there is
one, up to ``max_attempts`` tries in all.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import UsageError, WhispdiarError
from .job import TranscribeJob, TranscribeWorker

if TYPE_CHECKING:
    from ..outputs.destination import PlannedInput
    from ..progress import ProgressReporter

NAMESPACE = "whispdiar"
WAIT = 0.2  # s between checks for a signal while files are out


class WorkerLost(WhispdiarError):
    """A file's worker died more often than the retries allow."""


@dataclass(frozen=True, slots=True)
class RayOptions:
    address: str | None = None  # None: $RAY_ADDRESS, else a local Ray started for the run
    threads: int = 1  # cores per actor
    actors: int | None = None  # None: the cluster's CPUs // threads (at most one per file)
    max_attempts: int = 3  # tries per file when its worker dies
    max_restarts: int = 2  # per actor
    runtime_env: dict[str, Any] | None = None  # passed to ray.init (a local cluster gets $PYTHONPATH)


class RayWorker:
    """The actor: a TranscribeWorker; errors of the file come back as values."""

    def __init__(self, job: TranscribeJob, threads: int, namer: list[Any]) -> None:
        import ray

        # The voiceprints: one object in the store for all actors, in a list so that Ray
        # passes the reference (and an actor restart fetches it again) rather than the value.
        self.worker = TranscribeWorker(job, threads, ray.get(namer[0]) if namer else None)

    def pid(self) -> int:
        return os.getpid()

    def peak_rss(self) -> int:
        """Peak resident memory of this worker process, bytes."""
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def process(self, data: bytes, suffix: str, display: str, origin: str | None = None) -> tuple[str, Any]:
        try:
            return "ok", self.worker.process_bytes(data, suffix, display, origin)
        except WhispdiarError as e:
            return "error", e


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UsageError("--ray needs Ray: pip install 'whispdiar[cluster]'") from None
    return ray


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[-1] if text else type(e).__name__


REACH_TIMEOUT = 5.0  # s to open a TCP connection to the named head before handing it to Ray


def check_reachable(address: str) -> None:
    """Fail in seconds on a head that does not answer (Ray itself retries for minutes)."""
    import socket

    hostport = address.split("://", 1)[-1]
    host, sep, port = hostport.rpartition(":")
    if address == "auto" or not sep or not port.isdigit():
        return  # auto, or a form Ray resolves itself
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=REACH_TIMEOUT).close()
    except OSError as e:
        raise WhispdiarError(f"cannot reach Ray at {address}: {e.strerror or e} (is `ray start --head` running "
                             "there? see docs/cluster.md)") from None


def ray_remote(job: TranscribeJob, options: RayOptions, namer: Any, rep: ProgressReporter) -> Callable[..., None]:
    """The ``remote`` hook of ``cli._run_batch``: run the usable inputs on Ray."""

    def run(items: list[PlannedInput], begin: Callable, deliver: Callable, fail: Callable) -> None:
        RayBatch(job, options, namer, rep).run(items, begin, deliver, fail)

    return run


class RayBatch:
    def __init__(self, job: TranscribeJob, options: RayOptions, namer: Any, rep: ProgressReporter) -> None:
        self.job, self.options, self.namer, self.rep = job, options, namer, rep
        self.run_id = uuid.uuid4().hex[:8]
        self._namer: list[Any] = []
        self.busy = 0.0  # s the driver spent outside ray.wait while files were out

    def _connect(self, ray: Any) -> bool:
        """ray.init unless the caller already did; True when this run must shut Ray down."""
        if ray.is_initialized():
            return False
        address = self.options.address or os.environ.get("RAY_ADDRESS") or None
        runtime_env = self.options.runtime_env
        if address is None and runtime_env is None and os.environ.get("PYTHONPATH"):
            runtime_env = {"env_vars": {"PYTHONPATH": os.environ["PYTHONPATH"]}}
        if address is not None:
            check_reachable(address)
        # Ray installs its own SIGTERM handler in the driver; ours (clean "terminated") stays.
        saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
                     runtime_env=runtime_env, configure_logging=True)
        except Exception as e:  # ConnectionError, ValueError, RuntimeError: Ray's own words
            raise WhispdiarError(f"cannot start or reach Ray at {address or 'a new local cluster'}: "
                                 f"{_first_line(e)}") from None
        finally:
            for s, h in saved.items():
                if h is not None:
                    signal.signal(s, h)
        return True

    def run(self, items: list[PlannedInput], begin: Callable, deliver: Callable, fail: Callable) -> None:
        ray = _import_ray()
        own = self._connect(ray)
        actors: list[Any] = []
        try:
            self._run(ray, items, begin, deliver, fail, actors)
            with contextlib.suppress(Exception):  # for the record only (docs/benchmarks.md)
                peaks = ray.get([a.peak_rss.remote() for a in actors], timeout=10)
                self.rep.log("ray: worker peak memory " + ", ".join(f"{p / 2**20:.0f} MB" for p in peaks)
                             + f"; driver busy {self.busy / max(1, len(items)) * 1000:.0f} ms per file")
        finally:
            for a in actors:
                with contextlib.suppress(Exception):  # already gone
                    ray.kill(a, no_restart=True)
            if own:
                ray.shutdown()

    def _new_actor(self, ray: Any, slot: int, generation: int) -> Any:
        opts = self.options
        return (ray.remote(RayWorker)
                # max_concurrency 2: pid() answers while a file is in process (the driver sends one at a time)
                .options(num_cpus=opts.threads, max_restarts=0, max_task_retries=0, max_concurrency=2,
                         name=f"worker-{self.run_id}-{slot}-{generation}", namespace=NAMESPACE)
                .remote(self.job, opts.threads, self._namer))

    def _start_actors(self, ray: Any, n: int, actors: list[Any]) -> None:
        opts = self.options
        self._namer = [ray.put(self.namer)] if self.namer is not None else []  # once, shared by every actor
        actors.extend(self._new_actor(ray, i, 0) for i in range(n))
        try:
            pids = ray.get([a.pid.remote() for a in actors])
        except Exception as e:  # noqa: BLE001 - a worker's load error (missing model, ...) in Ray's wrapping
            cause = getattr(e, "cause", None)
            if isinstance(cause, WhispdiarError):
                raise type(cause)(f"on a Ray worker: {cause}") from None
            raise WhispdiarError(f"Ray workers could not load the models: {_first_line(e)}") from None
        self.rep.log(f"ray: {n} worker{'s' * (n != 1)} ({opts.threads} thread{'s' * (opts.threads != 1)} each; "
                     f"pids {', '.join(map(str, pids))})")

    def _run(self, ray: Any, items: list[PlannedInput], begin: Callable, deliver: Callable, fail: Callable,
             actors: list[Any]) -> None:
        from .. import signals

        opts = self.options
        cpus = int(ray.cluster_resources().get("CPU", 1))
        n = max(1, min(len(items), opts.actors or max(1, cpus // opts.threads)))
        self._start_actors(ray, n, actors)
        task = self.rep.task(f"ray batch ({len(items)} files)", total=len(items))
        queue: deque[PlannedInput] = deque(items)
        attempts: dict[int, int] = {}
        died_on: dict[int, set[int]] = {}
        deaths = [0] * n
        free = list(range(n))
        out: dict[Any, tuple[int, PlannedInput]] = {}
        finished = 0

        def alive() -> list[int]:
            return [i for i in range(n) if deaths[i] <= opts.max_restarts]

        t_busy = time.perf_counter()
        while queue or out:
            held: list[PlannedInput] = []
            while queue and free:
                item = queue.popleft()
                avoid = died_on.get(id(item), set())
                # another actor than the one it died on, unless no other is left
                pick = next((i for i in free if i not in avoid), None)
                if pick is None and any(i not in avoid for i in alive()):
                    held.append(item)  # wait for another actor to come free
                    continue
                pick = free[0] if pick is None else pick
                free.remove(pick)
                try:
                    data = item.source.read_bytes()
                except OSError as e:
                    free.append(pick)
                    fail(item, WhispdiarError(f"{item.display}: cannot read: {e.strerror}"), 1)
                    finished += 1
                    continue
                if id(item) not in attempts:
                    begin(item)
                attempts[id(item)] = attempts.get(id(item), 0) + 1
                origin = None if str(item.source) != item.display else str(item.source.resolve())
                ref = actors[pick].process.remote(data, item.source.suffix, item.display, origin)
                out[ref] = (pick, item)
            queue.extendleft(reversed(held))
            if not out:
                for item in queue:
                    fail(item, WorkerLost(f"{item.display}: no Ray worker left to run it"), attempts.get(id(item), 0))
                return
            self.busy += time.perf_counter() - t_busy
            ready, _ = ray.wait(list(out), num_returns=1, timeout=WAIT)
            t_busy = time.perf_counter()
            signals.raise_pending()
            for ref in ready:
                idx, item = out.pop(ref)
                try:
                    status, value = ray.get(ref)
                except ray.exceptions.RayActorError as e:
                    deaths[idx] += 1
                    if deaths[idx] <= opts.max_restarts:  # a new actor in its place (it loads the models)
                        actors[idx] = self._new_actor(ray, idx, deaths[idx])
                        free.append(idx)
                    died_on.setdefault(id(item), set()).add(idx)
                    if attempts[id(item)] >= opts.max_attempts:
                        fail(item, WorkerLost(f"{item.display}: its Ray worker died {attempts[id(item)]} times "
                                              f"({_first_line(e)})"), attempts[id(item)])
                        finished += 1
                    else:
                        self.rep.log(f"ray: worker {idx} died under {item.display}; trying it again")
                        queue.appendleft(item)
                    continue
                except ray.exceptions.RayTaskError as e:  # a bug on the worker, not the file's fault
                    free.append(idx)
                    fail(item, WhispdiarError(f"{item.display}: failed on a Ray worker: {_first_line(e)}"),
                         attempts[id(item)])
                    finished += 1
                    continue
                free.append(idx)
                finished += 1
                if status == "ok":
                    deliver(item, value, attempts[id(item)])
                else:
                    fail(item, value, attempts[id(item)])
                self.rep.update(task, finished, len(items))
        self.rep.done(task)
