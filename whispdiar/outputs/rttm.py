"""RTTM (NIST Rich Transcription Time Marked) reading and writing, SPEAKER lines only.

One line per turn: ``SPEAKER <uri> 1 <start> <duration> <NA> <NA> <speaker> <conf> <NA>``
(``<conf>`` the speaker's confidence when known, else ``<NA>``).
Fields are whitespace separated, so a uri or speaker with spaces gets underscores.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from ..records import Turn

_SPACE = re.compile(r"\s+")


def _token(s: str) -> str:
    s = _SPACE.sub("_", s.strip())
    return s or "NA"


def format_rttm(turns: Iterable[Turn], uri: str, confidence: Mapping[str, float | None] | None = None) -> str:
    """RTTM text (one SPEAKER line per turn, sorted by start), ending with a newline if non-empty.
    ``confidence`` (speaker -> score) fills the confidence field, else ``<NA>``."""
    u = _token(uri)
    conf = confidence or {}

    def score(speaker: str) -> str:
        c = conf.get(speaker)
        return "<NA>" if c is None else f"{c:.3f}"

    lines = [
        f"SPEAKER {u} 1 {t.start:.3f} {max(0.0, t.end - t.start):.3f} <NA> <NA> {_token(t.speaker)} "
        f"{score(t.speaker)} <NA>"
        for t in sorted(turns, key=lambda t: (t.start, t.end, t.speaker))
    ]
    return "".join(line + "\n" for line in lines)


def parse_rttm(text: str) -> dict[str, list[Turn]]:
    """uri -> turns (in file order). Ignores blank lines, comments and non-SPEAKER records.

    Raises ValueError naming the line for a malformed SPEAKER record.
    """
    out: dict[str, list[Turn]] = {}
    for n, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields or fields[0].startswith(("#", ";")) or fields[0] != "SPEAKER":
            continue
        if len(fields) < 8:
            raise ValueError(f"RTTM line {n}: expected at least 8 fields, got {len(fields)}")
        try:
            start, dur = float(fields[3]), float(fields[4])
        except ValueError:
            raise ValueError(f"RTTM line {n}: bad start/duration {fields[3]!r} {fields[4]!r}") from None
        if dur < 0 or start < 0:
            raise ValueError(f"RTTM line {n}: negative start or duration")
        out.setdefault(fields[1], []).append(Turn(start, start + dur, fields[7]))
    return out
