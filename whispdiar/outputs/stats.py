"""Talk-time statistics per speaker, computed once from a ``Result``.

Definitions (docs/output-formats.md, "Talk-time statistics"):

- A speaker's *intervals* are its diarization turns (``result.turns``, the RTTM view,
  with overlapping speech); a result without turns uses its segments instead.
- ``speech_seconds``: length of the union of the speaker's intervals.
- ``share``: ``speech_seconds`` over the sum of every speaker's ``speech_seconds``
  (the shares add up to 1; overlapped speech counts for each speaker in it).
- ``turns``: all intervals in order of start; a turn is a run of consecutive intervals
  of one speaker, ended when an interval of another speaker starts (a backchannel
  inside a long turn splits it). ``longest_turn_seconds``: the longest turn from its
  first start to its last end (pauses inside it included).
- ``words``: the words attributed to the speaker (each word's own speaker, else its
  segment's; a segment without word records counts the words of its text).
- ``words_per_minute``: ``words / speech_seconds * 60`` (None without speech).
  Both are None for a result without a transcript (``whispdiar diarize``).
- ``overlap_seconds``: time this speaker speaks while at least one other speaker does.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..intervals import Interval, intersect, length, union
from ..records import Result, Turn


@dataclass(frozen=True, slots=True)
class SpeakerStats:
    label: str
    name: str
    speech_seconds: float
    share: float | None
    turns: int
    longest_turn_seconds: float
    words: int | None  # None: no transcript (a diarization alone)
    words_per_minute: float | None
    overlap_seconds: float


@dataclass(frozen=True, slots=True)
class TalkTime:
    speakers: list[SpeakerStats]  # in the order of result.speakers
    duration: float  # of the recording
    speech_seconds: float  # union over all speakers
    overlap_seconds: float  # time with two or more speakers at once


def _intervals(result: Result) -> list[Turn]:
    if result.turns:
        return [t for t in result.turns if t.end > t.start]
    return [Turn(s.start, s.end, s.speaker) for s in result.segments if s.speaker is not None and s.end > s.start]


def _word_counts(result: Result) -> dict[str, int]:
    counts: dict[str, int] = {}
    for seg in result.segments:
        if seg.words:
            for w in seg.words:
                who = w.speaker if w.speaker is not None else seg.speaker
                if who is not None and w.text.strip():
                    counts[who] = counts.get(who, 0) + 1
        elif seg.speaker is not None:
            counts[seg.speaker] = counts.get(seg.speaker, 0) + len(seg.text.split())
    return counts


def _turns(intervals: list[Turn]) -> dict[str, list[Interval]]:
    """Per speaker, its turns as (first start, last end)."""
    out: dict[str, list[Interval]] = {}
    prev: str | None = None
    for t in sorted(intervals, key=lambda t: (t.start, t.end)):
        runs = out.setdefault(t.speaker, [])
        if t.speaker == prev:
            runs[-1] = (runs[-1][0], max(runs[-1][1], t.end))
        else:
            runs.append((t.start, t.end))
        prev = t.speaker
    return out


def talk_time(result: Result) -> TalkTime:
    """Statistics for every speaker of ``result`` (docstring of this module for the definitions)."""
    intervals = _intervals(result)
    labels = list(dict.fromkeys([*(sp.label for sp in result.speakers), *(t.speaker for t in intervals)]))
    speech = {lb: union((t.start, t.end) for t in intervals if t.speaker == lb) for lb in labels}
    turns = _turns(intervals)
    words = _word_counts(result)
    transcribed = bool(result.segments) or result.language is not None  # diarize: neither
    total = sum(length(v) for v in speech.values())
    rows = []
    overlap_all: list[Interval] = []
    for lb in labels:
        others = union((t.start, t.end) for t in intervals if t.speaker != lb)
        both = intersect(speech[lb], others)
        overlap_all.extend(both)
        sec = length(speech[lb])
        n_words = words.get(lb, 0)
        rows.append(SpeakerStats(
            label=lb,
            name=result.speaker_name(lb) or lb,
            speech_seconds=sec,
            share=sec / total if total > 0 else None,
            turns=len(turns.get(lb, [])),
            longest_turn_seconds=max((e - s for s, e in turns.get(lb, [])), default=0.0),
            words=n_words if transcribed else None,
            words_per_minute=n_words / sec * 60.0 if sec > 0 and transcribed else None,
            overlap_seconds=length(both),
        ))
    everyone = union((t.start, t.end) for t in intervals)
    return TalkTime(rows, float(result.duration), length(everyone), length(union(overlap_all)))


# ----------------------------------------------------------------------------- text forms


def minutes(seconds: float) -> str:
    """``m:ss`` (``h:mm:ss`` past an hour), rounded to the second."""
    s = int(round(max(0.0, seconds)))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def span(seconds: float) -> str:
    """A duration: ``18.5 s`` under a minute, else ``m:ss`` (``h:mm:ss`` past an hour)."""
    return f"{max(0.0, seconds):.1f} s" if round(seconds, 1) < 60 else minutes(seconds)


def percent(share: float | None) -> str:
    return "-" if share is None else f"{share * 100:.0f} %"


def summary_line(tt: TalkTime) -> str:
    """``Anna 1:02 (52 %), Speaker 2 57.0 s (48 %); overlap 4.1 s`` (the txt header)."""
    parts = [f"{' '.join(s.name.split())} {span(s.speech_seconds)} ({percent(s.share)})" for s in tt.speakers]
    return ", ".join(parts) + f"; overlap {span(tt.overlap_seconds)}"


TABLE_HEADER = ("speaker", "speech", "share", "turns", "longest turn", "words", "wpm", "overlap")
TSV_HEADER = ("speaker", "speech_seconds", "share", "turns", "longest_turn_seconds", "words",
              "words_per_minute", "overlap_seconds")


def table(tt: TalkTime, tsv: bool = False) -> str:
    """One row per speaker: an aligned plain-text table, or TSV (seconds to 3 decimals,
    share as a fraction to 3 decimals, empty where undefined) with ``tsv=True``."""
    if tsv:
        rows = ["\t".join(TSV_HEADER)]
        for s in tt.speakers:
            rows.append("\t".join((
                " ".join(s.name.split()), f"{s.speech_seconds:.3f}", "" if s.share is None else f"{s.share:.3f}",
                str(s.turns), f"{s.longest_turn_seconds:.3f}", "" if s.words is None else str(s.words),
                "" if s.words_per_minute is None else f"{s.words_per_minute:.1f}", f"{s.overlap_seconds:.3f}")))
        return "\n".join(rows) + "\n"
    cells = [list(TABLE_HEADER)]
    for s in tt.speakers:
        cells.append([" ".join(s.name.split()), span(s.speech_seconds), percent(s.share), str(s.turns),
                      span(s.longest_turn_seconds), "-" if s.words is None else str(s.words),
                      "-" if s.words_per_minute is None else f"{s.words_per_minute:.0f}", span(s.overlap_seconds)])
    widths = [max(len(row[i]) for row in cells) for i in range(len(TABLE_HEADER))]
    lines = []
    for row in cells:  # the name left-aligned, numbers right-aligned
        cols = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        lines.append("  ".join(cols).rstrip())
    return "\n".join(lines) + "\n"


def json_fields(s: SpeakerStats) -> dict:
    """The statistics as they appear in a JSON ``speakers`` record."""
    return {
        "speech_share": None if s.share is None else round(s.share, 3),
        "turns": s.turns,
        "longest_turn_seconds": round(s.longest_turn_seconds, 3),
        "words": s.words,
        "words_per_minute": None if s.words_per_minute is None else round(s.words_per_minute, 1),
        "overlap_seconds": round(s.overlap_seconds, 3),
    }
