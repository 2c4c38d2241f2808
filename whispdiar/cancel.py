"""Cancellation shared by the engines: one exception type and an event that is set when
any of several events is (the caller's cancel, a failing side of the run, a close)."""

from __future__ import annotations

import threading
from typing import Protocol


class Cancelled(Exception):
    """A stage stopped because its cancel event was set or its engine was closed."""


class EventLike(Protocol):
    def is_set(self) -> bool: ...


class AnyEvent:
    """Set when any of its events is set; ``set()`` sets the first (its own) event."""

    def __init__(self, own: threading.Event, *others: EventLike | None):
        self._own = own
        self._events = [own, *(e for e in others if e is not None)]

    def is_set(self) -> bool:
        return any(e.is_set() for e in self._events)

    def set(self) -> None:
        self._own.set()


def check(cancel: EventLike | None, what: str = "cancelled",
          error: type[Cancelled] = Cancelled) -> None:
    """Raise ``error`` (a Cancelled) when ``cancel`` is set."""
    if cancel is not None and cancel.is_set():
        raise error(what)
