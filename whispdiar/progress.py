"""Progress display on stderr: rich bars on a terminal, plain log lines otherwise, nothing with --quiet."""

from __future__ import annotations

import sys
import threading
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class ProgressReporter:
    """Thread-safe: the ASR and diarization threads report into one display."""

    def __init__(self, enabled: bool = True, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True, highlight=False, soft_wrap=True)
        self.quiet = not enabled
        self.bars = enabled and sys.stderr.isatty()
        self._lock = threading.Lock()
        self._progress: Progress | None = None
        if self.bars:
            self._progress = Progress(
                TextColumn("{task.description:<22}"), BarColumn(), TextColumn("{task.percentage:>5.1f}%"),
                TimeElapsedColumn(), TimeRemainingColumn(), console=self.console, transient=True,
            )

    def __enter__(self) -> ProgressReporter:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        if self._progress is not None:
            self._progress.stop()

    def task(self, description: str, total: float | None = None) -> TaskID | None:
        if self._progress is None:
            return None
        with self._lock:
            return self._progress.add_task(description, total=total)

    def update(self, task: TaskID | None, done: float, total: float | None = None) -> None:
        if self._progress is None or task is None:
            return
        with self._lock:
            self._progress.update(task, completed=done, total=total)

    def done(self, task: TaskID | None) -> None:
        if self._progress is None or task is None:
            return
        with self._lock:
            t = self._progress.tasks[task] if task < len(self._progress.tasks) else None
            if t is not None and t.total is not None:
                self._progress.update(task, completed=t.total)

    def log(self, message: str) -> None:
        if self.quiet:
            return
        with self._lock:
            self.console.print(message, markup=False)
