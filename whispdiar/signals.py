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


class _Stderr:
    # A private copy of the stderr descriptor, taken at install: audio opens point fd 2 at
    # /dev/null for a few milliseconds (libmpg123 chatter) from whichever thread reads, and
    # the signal's line must not go there.
    fd = 2


def _raise_for(signum: int) -> None:
    raise Terminated() if signum == signal.SIGTERM else Interrupted()


def _handler(signum: int, frame: object) -> None:
    # Kept pending until the exception reaches the top: a handler can run inside a
    # weakref callback or __del__, where Python prints and drops the exception.
    _Deferral.pending = _Deferral.pending or signum
    if not _Deferral.depth:
        _raise_for(signum)


def _unraisable(hook):  # noqa: ANN001, ANN202 - sys.unraisablehook's types
    def quiet(u) -> None:  # noqa: ANN001
        if not isinstance(u.exc_value, Interrupted | Terminated):
            hook(u)  # ours stays pending and is raised again at the next check

    return quiet


def install() -> None:
    """Our own handlers for both signals (a shell starts background jobs with SIGINT
    ignored, where `kill -INT` must still stop us)."""
    with contextlib.suppress(OSError):  # fd 2 closed (2>&-): nothing to keep
        _Stderr.fd = os.dup(2)
    signal.signal(signal.SIGTERM, _handler)
    signal.signal(signal.SIGINT, _handler)
    sys.unraisablehook = _unraisable(sys.unraisablehook)


def caused_by_signal(e: BaseException) -> bool:
    """True for our exceptions, and for any other that a signal's exception turned into
    on the way up (onnxruntime's import, for one, re-raises anything as ImportError)."""
    return isinstance(e, KeyboardInterrupt | Interrupted | Terminated) or _Deferral.pending is not None


def raise_pending() -> None:
    """Raise a signal that arrived but whose exception was dropped on the way."""
    if _Deferral.pending is not None and not _Deferral.depth:
        _raise_for(_Deferral.pending)


def clear_pending() -> None:
    """Forget a signal that was handled (``whispdiar live`` takes the first Ctrl-C as
    "stop recording, then finish"), so it is not raised again later."""
    _Deferral.pending = None


@contextmanager
def deferred() -> Iterator[None]:
    """A signal that arrives inside the block is raised when the block ends."""
    _Deferral.depth += 1
    try:
        yield
    finally:
        _Deferral.depth -= 1
        if not _Deferral.depth and _Deferral.pending is not None:
            _raise_for(_Deferral.pending)


def exit_for(e: BaseException | None = None) -> None:
    """Print the one line for a signal and leave at once with its exit code.

    Clean-up (temp files, no partial outputs) already ran while the exception unwound.
    Engines' threads may still be finishing a step inside whisper.cpp or onnxruntime;
    nothing of theirs has been freed (they own it until they stop), and a normal
    interpreter shutdown under their feet could abort, so the process ends with _exit.
    """
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, signal.SIG_IGN)  # a second Ctrl-C must not interrupt the exit itself
    term = _Deferral.pending == signal.SIGTERM if _Deferral.pending is not None else isinstance(e, Terminated)
    word, code = ("terminated", EXIT_SIGTERM) if term else ("interrupted", EXIT_SIGINT)
    with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing more to say there
        sys.stdout.flush()
    with contextlib.suppress(OSError, ValueError, RuntimeError):
        sys.stderr.flush()  # what was already said goes out first
    # Straight to the descriptor: sys.stderr may be mid-write in the interrupted frame (a
    # reentrant write raises) or a proxy whose buffer _exit would drop; and fd 2 itself may
    # be pointed at /dev/null by another thread this very moment (see _Stderr).
    with contextlib.suppress(OSError):
        os.write(_Stderr.fd, f"whispdiar: {word}\n".encode())
    os._exit(code)
