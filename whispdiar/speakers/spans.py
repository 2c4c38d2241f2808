"""Single-speaker stretches of a speaker's turns (interval arithmetic on Turn lists)."""

from __future__ import annotations

from collections.abc import Iterable

from ..intervals import union
from ..records import Turn


def solo_spans(turns: Iterable[Turn], label: str, min_seconds: float = 0.0) -> tuple[list[tuple[float, float]], float]:
    """(stretches where ``label`` speaks and nobody else does, each >= ``min_seconds``;
    seconds of ``label``'s speech left out: overlapped or in shorter stretches)."""
    turns = list(turns)
    mine = union((t.start, t.end) for t in turns if t.speaker == label)
    others = union((t.start, t.end) for t in turns if t.speaker != label)
    solo: list[tuple[float, float]] = []
    j = 0
    for a, b in mine:
        cur = a
        while j < len(others) and others[j][1] <= cur:
            j += 1
        k = j
        while k < len(others) and others[k][0] < b:
            oa, ob = others[k]
            if oa > cur:
                solo.append((cur, oa))
            cur = max(cur, ob)
            k += 1
        if cur < b:
            solo.append((cur, b))
    kept = [(a, b) for a, b in solo if b - a >= min_seconds - 1e-9]
    total = sum(b - a for a, b in mine)
    return kept, total - sum(b - a for a, b in kept)


def seconds(spans: Iterable[tuple[float, float]]) -> float:
    return sum(b - a for a, b in spans)
