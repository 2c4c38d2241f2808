"""SIGINT/SIGTERM for the command line: a clean "interrupted" and exit 130/143.

The handlers raise in the main thread (``Interrupted`` / ``Terminated``, not
KeyboardInterrupt, which typer would swallow into a silent exit), so ``finally`` blocks
and context managers clean up as the exception unwinds; ``deferred()`` holds a signal
back while a few writes that belong together finish (one input's output files).
Signal dispositions are process-wide, so this module keeps the one piece of process
state the CLI needs; the library never installs handlers.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from .errors import EXIT_SIGINT, EXIT_SIGTERM


class Interrupted(BaseException):
    """SIGINT (Ctrl-C), raised in the main thread."""


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so the same clean-up runs as for Ctrl-C."""


class _Deferral:
    depth = 0
    pending: int | None = None


def _raise_for(signum: int) -> None:
    raise Terminated() if signum == signal.SIGTERM else Interrupted()


def _handler(signum: int, frame: object) -> None:
    if _Deferral.depth:
        _Deferral.pending = _Deferral.pending or signum
        return
    _raise_for(signum)


def install() -> None:
    """Our own handlers for both signals (a shell starts background jobs with SIGINT
    ignored, where `kill -INT` must still stop us)."""
    signal.signal(signal.SIGTERM, _handler)
    signal.signal(signal.SIGINT, _handler)


@contextmanager
def deferred() -> Iterator[None]:
    """A signal that arrives inside the block is raised when the block ends."""
    _Deferral.depth += 1
    try:
        yield
    finally:
        _Deferral.depth -= 1
        if not _Deferral.depth and _Deferral.pending is not None:
            signum, _Deferral.pending = _Deferral.pending, None
            _raise_for(signum)


def exit_for(e: BaseException) -> None:
    """Print the one line for a signal and leave at once with its exit code.

    Clean-up (temp files, no partial outputs) already ran while the exception unwound.
    Engines' threads may still be finishing a step inside whisper.cpp or onnxruntime;
    nothing of theirs has been freed (they own it until they stop), and a normal
    interpreter shutdown under their feet could abort, so the process ends with _exit.
    """
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, signal.SIG_IGN)  # a second Ctrl-C must not interrupt the exit itself
    word, code = ("terminated", EXIT_SIGTERM) if isinstance(e, Terminated) else ("interrupted", EXIT_SIGINT)
    with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing more to say there
        sys.stdout.flush()
    sys.stderr.write(f"whispdiar: {word}\n")
    sys.stderr.flush()
    os._exit(code)
