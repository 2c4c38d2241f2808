"""Output formats: one writer per format, all rendering the same ``Result``.

Each writer only knows its syntax (``render(result) -> str``); where the text goes
(stdout or a file) is the caller's choice, and ``write_atomic`` puts it in a file so
that readers never see half of it. The JSON schema is documented in docs/output-formats.md.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import OutputError, UsageError
from ..records import Result, Segment, Turn, Word
from ..speakers.source import to_json as source_json
from . import stats
from .rttm import format_rttm

JSON_SCHEMA_VERSION = 1
_WS = re.compile(r"\s+")


def write_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) via a temp file in the same directory, fsync, then rename."""
    p = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=p.parent if str(p.parent) else ".", prefix=f".{p.name}.", suffix=".part")
    except OSError as e:
        raise OutputError(f"cannot write {p}: {e.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, p)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise OutputError(f"cannot write {p}: {e.strerror}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _one_line(text: str) -> str:
    return _WS.sub(" ", text).strip()


def clock(t: float, digits: int = 2) -> str:
    """[mm:ss.cc] style for txt (hours only when needed); ``digits`` decimals of a second."""
    scale = 10 ** digits
    n = int(round(max(0.0, t) * scale))
    h, rem = divmod(n, 3600 * scale)
    m, rem = divmod(rem, 60 * scale)
    s, c = divmod(rem, scale)
    return f"{h}:{m:02d}:{s:02d}.{c:0{digits}d}" if h else f"{m:02d}:{s:02d}.{c:0{digits}d}"


def _timestamp(t: float, sep: str) -> str:
    """HH:MM:SS<sep>mmm (SRT uses ',', VTT '.')."""
    ms = int(round(max(0.0, t) * 1000))
    h, rem = divmod(ms, 3_600_000)
    m, rem = divmod(rem, 60_000)
    s, ms = divmod(rem, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


class Writer:
    """Base class: subclasses set ``name``/``extension`` and implement ``render``."""

    name = ""
    extension = ""

    def render(self, result: Result) -> str:
        raise NotImplementedError

    def write(self, result: Result, path: str | os.PathLike[str]) -> None:
        write_atomic(path, self.render(result))


# ----------------------------------------------------------------------------- txt / tsv


def _speaker_legend(result: Result) -> str:
    """``Jan 0.82, Anna 0.71, Speaker 3 0.64``: every speaker with its confidence."""
    parts = []
    for sp in result.speakers:
        conf = "" if sp.confidence is None else f" {sp.confidence:.2f}"
        parts.append(f"{_one_line(sp.name)}{conf}")
    return ", ".join(parts)


def _header_lines(result: Result) -> list[str]:
    """The ``# speakers:`` and ``# talk time:`` lines (none without speakers)."""
    if not result.speakers:
        return []
    return [f"# speakers: {_speaker_legend(result)}", f"# talk time: {stats.summary_line(stats.talk_time(result))}"]


def render_turn_lines(result: Result) -> str:
    """A diarization without text (``whispdiar diarize``): the header lines, then
    ``[00:06.76 - 00:07.21] Anna`` per turn (with overlap: turns may intersect)."""
    lines = _header_lines(result)
    lines += [f"[{clock(t.start)} - {clock(t.end)}] {_one_line(result.speaker_name(t.speaker) or t.speaker)}"
              for t in result.turns]
    return "".join(line + "\n" for line in lines)


class TxtWriter(Writer):
    """``[00:05.20] Anna: text`` -- one line per speaker turn (segment), after a
    ``# speakers: Anna 0.82, Speaker 2 0.64`` line giving each speaker's confidence and a
    ``# talk time: Anna 1:02 (52 %), Speaker 2 0:57 (48 %); overlap 0:04`` line."""

    name = extension = "txt"

    def render(self, result: Result) -> str:
        lines = _header_lines(result)
        for s in result.segments:
            text = _one_line(s.text)
            if not text:
                continue
            who = _one_line(result.speaker_name(s.speaker) or "")
            lines.append(f"[{clock(s.start)}] {who}: {text}" if who else f"[{clock(s.start)}] {text}")
        return "".join(line + "\n" for line in lines)


class TsvWriter(Writer):
    """Header ``start end speaker text confidence``; seconds with 3 decimals; empty speaker
    (and confidence) if unknown. The confidence is the speaker's, not the words'."""

    name = extension = "tsv"

    def render(self, result: Result) -> str:
        rows = ["start\tend\tspeaker\ttext\tconfidence"]
        conf = {sp.label: sp.confidence for sp in result.speakers}
        for s in result.segments:
            who = result.speaker_name(s.speaker) or ""
            c = conf.get(s.speaker) if s.speaker is not None else None
            rows.append(f"{s.start:.3f}\t{s.end:.3f}\t{_one_line(who)}\t{_one_line(s.text)}\t"
                        + ("" if c is None else f"{c:.3f}"))
        return "\n".join(rows) + "\n"


# ----------------------------------------------------------------------------- json


def _t(x: float | None) -> float | None:
    return None if x is None else round(float(x), 3)


class JsonWriter(Writer):
    name = extension = "json"

    def __init__(self, words: bool = True):
        self.words = words  # False: no "words" list in the segments (--no-words)

    def render(self, result: Result) -> str:
        return json.dumps(self.document(result, self.words), ensure_ascii=False, indent=2) + "\n"

    @staticmethod
    def document(result: Result, words: bool = True) -> dict:
        name = result.speaker_name
        talk = {s.label: stats.json_fields(s) for s in stats.talk_time(result).speakers}
        return {
            "version": JSON_SCHEMA_VERSION,
            "audio": result.audio,
            "source": source_json(result.source),  # path, size, sha256, channel: for `enroll --from`
            "duration": _t(result.duration),
            "language": result.language,
            "models": dict(result.models),
            "timings": {
                "asr": _t(result.timings.asr),
                "diarization": _t(result.timings.diarization),
                "total": _t(result.timings.total),
            },
            "speakers": [
                {
                    "label": s.label,
                    "name": s.name,
                    "confidence": None if s.confidence is None else round(float(s.confidence), 3),
                    "speech_seconds": _t(s.speech_seconds),
                    "enrolled": s.enrolled,
                    **talk[s.label],  # talk-time statistics (whispdiar/outputs/stats.py)
                }
                for s in result.speakers
            ],
            "segments": [
                {
                    "start": _t(s.start),
                    "end": _t(s.end),
                    "speaker": name(s.speaker),
                    "text": s.text.strip(),
                    **({"words": [
                        {
                            "text": w.text,
                            "start": _t(w.start),
                            "end": _t(w.end),
                            "speaker": name(w.speaker),
                            "probability": None if w.probability is None else round(float(w.probability), 3),
                        }
                        for w in s.words
                    ]} if words else {}),
                }
                for s in result.segments
            ],
            "turns": [
                {"start": _t(t.start), "end": _t(t.end), "speaker": name(t.speaker)} for t in result.turns
            ],
        }


COMPACT_SCHEMA_VERSION = 1


def _c(x: float | None) -> float | None:
    """A time in compact JSON: seconds rounded to 0.01 (whisper's own timestamp step)."""
    return None if x is None else round(float(x), 2)


class CompactJsonWriter(Writer):
    """Compact JSON for feeding transcripts to language models (docs/output-formats.md).

    One line, short keys, times as ``[start, end]`` rounded to 0.01 s, speakers as short
    keys (``S1``, ``S2`` in order of first appearance) with the names and confidences in a
    roster given once. Words, if kept, are ``{"t": [s, e], "text": ...}`` with an ``"s"`` only
    where a word's speaker differs from its segment's (overlapping speech).
    """

    name = "json-compact"
    extension = "compact.json"

    def __init__(self, words: bool = True):
        self.words = words

    def render(self, result: Result) -> str:
        return json.dumps(self.document(result, self.words), ensure_ascii=False, separators=(",", ":")) + "\n"

    @staticmethod
    def document(result: Result, words: bool = True) -> dict:
        key = {sp.label: f"S{i}" for i, sp in enumerate(result.speakers, 1)}
        roster: dict[str, dict] = {}
        for sp in result.speakers:
            entry: dict = {"name": sp.name}
            if sp.confidence is not None:
                entry["confidence"] = round(float(sp.confidence), 2)
            roster[key[sp.label]] = entry

        def who(label: str | None) -> str | None:
            return None if label is None else key.get(label, label)

        segments = []
        for s in result.segments:
            seg: dict = {"t": [_c(s.start), _c(s.end)]}
            if s.speaker is not None:
                seg["s"] = who(s.speaker)
            seg["text"] = s.text.strip()
            if words and s.words:
                ws = []
                for w in s.words:
                    wd: dict = {"t": None if w.start is None or w.end is None else [_c(w.start), _c(w.end)],
                                "text": w.text}
                    if w.speaker is not None and w.speaker != s.speaker:
                        wd["s"] = who(w.speaker)
                    ws.append(wd)
                seg["w"] = ws
            segments.append(seg)
        return {
            "format": "whispdiar-compact",
            "version": COMPACT_SCHEMA_VERSION,
            "audio": result.audio,
            "language": result.language,
            "duration": _c(result.duration),
            "speakers": roster,
            "segments": segments,
        }


# ----------------------------------------------------------------------------- rttm


class RttmWriter(Writer):
    """Speaker turns (diarization turns, with overlap); from segments when there are none."""

    name = extension = "rttm"

    def render(self, result: Result) -> str:
        uri = Path(result.audio).stem or "audio"
        conf = {sp.name: sp.confidence for sp in result.speakers}
        if result.turns:
            turns = [Turn(t.start, t.end, result.speaker_name(t.speaker) or t.speaker) for t in result.turns]
        else:
            turns = [Turn(s.start, s.end, result.speaker_name(s.speaker) or "unknown")
                     for s in result.segments if s.end > s.start]
        return format_rttm(turns, uri, conf)


# ----------------------------------------------------------------------------- subtitles


@dataclass(frozen=True, slots=True)
class CueLimits:
    """Readability limits (common broadcast guidance: ~42 chars/line, 2 lines, <= 7 s;
    docs/output-formats.md). ``max_line``/``max_lines`` are ``--max-line-width`` /
    ``--max-line-count``."""

    max_line: int = 42
    max_lines: int = 2
    max_seconds: float = 6.0
    min_seconds: float = 0.5

    def __post_init__(self) -> None:
        for value, what in ((self.max_line, "line width"), (self.max_lines, "line count")):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UsageError(f"subtitle {what} must be a whole number of at least 1, not {value!r}")


@dataclass(slots=True)
class Cue:
    start: float
    end: float
    speaker: str | None
    text: str


def _wrap(text: str, width: int) -> list[str]:
    """Greedy wrap at spaces; a single over-long word stays whole on its own line."""
    lines: list[str] = []
    cur = ""
    for word in text.split():
        if cur and len(cur) + 1 + len(word) > width:
            lines.append(cur)
            cur = word
        else:
            cur = f"{cur} {word}" if cur else word
    if cur:
        lines.append(cur)
    return lines


def _balanced(text: str, width: int) -> list[str]:
    """Two lines of similar length when the text needs two (nicer to read than greedy)."""
    lines = _wrap(text, width)
    if len(lines) != 2:
        return lines
    words = text.split()
    best = lines
    best_diff = abs(len(lines[0]) - len(lines[1]))
    for k in range(1, len(words)):
        a, b = " ".join(words[:k]), " ".join(words[k:])
        if len(a) <= width and len(b) <= width and abs(len(a) - len(b)) < best_diff:
            best, best_diff = [a, b], abs(len(a) - len(b))
    return best


def _cue_words(seg: Segment) -> list[Word]:
    """The segment's words with times; without any, pseudo-words spread over the segment."""
    timed = [w for w in seg.words if w.start is not None and w.end is not None]
    if timed and len(timed) == len(seg.words):
        return timed
    tokens = seg.text.split()
    if not tokens:
        return []
    total = sum(len(t) + 1 for t in tokens)
    out, t = [], seg.start
    span = max(0.0, seg.end - seg.start)
    for tok in tokens:
        d = span * (len(tok) + 1) / total
        out.append(Word(tok, t, t + d))
        t += d
    return out


def make_cues(result: Result, limits: CueLimits = CueLimits(), prefix_names: bool = False) -> list[Cue]:
    """Split segments into readable cues at word boundaries.

    A cue ends when adding the next word would exceed ``max_lines`` x ``max_line``
    characters (the "Name: " prefix counts when ``prefix_names``) or ``max_seconds``.
    Cues never overlap and last at least ``min_seconds`` where the next cue allows.
    """
    cues: list[Cue] = []
    budget = limits.max_line * limits.max_lines
    for seg in result.segments:
        name = result.speaker_name(seg.speaker)
        prefix = f"{_one_line(name)}: " if (prefix_names and name) else ""  # shown as SrtWriter shows it
        cur: list[Word] = []
        for w in _cue_words(seg):
            if cur:
                text = " ".join(x.text for x in [*cur, w])
                too_long = len(_wrap(prefix + text, limits.max_line)) > limits.max_lines
                too_slow = (w.end or 0) - (cur[0].start or 0) > limits.max_seconds
                if too_long or too_slow or len(prefix + text) > budget:
                    cues.append(Cue(cur[0].start or seg.start, cur[-1].end or seg.end, name,
                                    " ".join(x.text for x in cur)))
                    cur = []
            cur.append(w)
        if cur:
            cues.append(Cue(cur[0].start or seg.start, cur[-1].end or seg.end, name, " ".join(x.text for x in cur)))
    cues = [c for c in cues if _one_line(c.text)]
    cues.sort(key=lambda c: c.start)
    prev_end = 0.0
    for i, c in enumerate(cues):
        c.start = max(c.start, prev_end)  # overlapping speech: the later cue waits its turn
        nxt = cues[i + 1].start if i + 1 < len(cues) else None
        end = max(c.end, c.start + limits.min_seconds)
        if nxt is not None and nxt > c.start:
            end = min(end, nxt)
        c.end = max(end, c.start + 0.001)  # a cue must end after it starts
        prev_end = c.end
    return cues


class SrtWriter(Writer):
    """SubRip: numbered cues, ``HH:MM:SS,mmm``, speaker as a ``Name: `` prefix."""

    name = extension = "srt"

    def __init__(self, limits: CueLimits = CueLimits()):
        self.limits = limits

    def render(self, result: Result) -> str:
        blocks = []
        for i, c in enumerate(make_cues(result, self.limits, prefix_names=True), 1):
            text = _one_line(c.text)
            if c.speaker:
                text = f"{_one_line(c.speaker)}: {text}"
            lines = _balanced(text, self.limits.max_line)
            blocks.append(f"{i}\n{_timestamp(c.start, ',')} --> {_timestamp(c.end, ',')}\n" + "\n".join(lines))
        return "\n\n".join(blocks) + ("\n" if blocks else "")


def _vtt_escape(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class VttWriter(Writer):
    """WebVTT: ``HH:MM:SS.mmm``, speaker as a ``<v Name>`` voice tag."""

    name = extension = "vtt"

    def __init__(self, limits: CueLimits = CueLimits()):
        self.limits = limits

    def render(self, result: Result) -> str:
        blocks = ["WEBVTT"]
        if result.speakers:  # a NOTE is a WebVTT comment: players do not show it
            blocks.append(f"NOTE speakers: {_vtt_escape(_speaker_legend(result))}")
        for c in make_cues(result, self.limits):
            lines = [_vtt_escape(line) for line in _balanced(_one_line(c.text), self.limits.max_line)]
            if c.speaker:
                lines[0] = f"<v {_vtt_escape(_one_line(c.speaker))}>{lines[0]}"
            blocks.append(f"{_timestamp(c.start, '.')} --> {_timestamp(c.end, '.')}\n" + "\n".join(lines))
        return "\n\n".join(blocks) + "\n"


# ----------------------------------------------------------------------------- stats / html


class StatsWriter(Writer):
    """Talk time per speaker (whispdiar/outputs/stats.py): an aligned plain table."""

    name = "stats"
    extension = "stats.txt"
    tsv = False

    def render(self, result: Result) -> str:
        return stats.table(stats.talk_time(result), tsv=self.tsv)


class StatsTsvWriter(StatsWriter):
    """The talk-time table as TSV (``-f stats --tsv``)."""

    name = "stats-tsv"
    extension = "stats.tsv"
    tsv = True


class HtmlWriter(Writer):
    """A self-contained HTML report (whispdiar/outputs/report.py). ``audio_src``: the URL of the
    recording as seen from the HTML file (default: ``result.audio`` relative to the current
    directory; none with ``link_audio=False``); ``embedded``: a ``data:`` URI of the
    recording (``report.embed_audio``), used instead of a link."""

    name = extension = "html"

    def __init__(self, audio_src: str | None = None, embedded: str | None = None, link_audio: bool = True):
        self.audio_src = audio_src
        self.embedded = embedded
        self.link_audio = link_audio

    def render(self, result: Result) -> str:
        from . import report

        src = self.audio_src
        if src is None and self.link_audio and result.audio not in ("", "-", "stdin"):
            src = report.audio_reference(result.audio, None)
        return report.render_html(result, audio_src=src if self.link_audio else None, embedded=self.embedded)


# ----------------------------------------------------------------------------- registry

WRITERS: dict[str, type[Writer]] = {
    w.name: w for w in (TxtWriter, JsonWriter, CompactJsonWriter, SrtWriter, VttWriter, RttmWriter, TsvWriter,
                        StatsWriter, StatsTsvWriter, HtmlWriter)
}
FORMATS = tuple(WRITERS)
EXTENSIONS = {name: w.extension for name, w in WRITERS.items()}  # json-compact -> compact.json
WORD_FORMATS = ("json", "json-compact")  # the formats --no-words changes


def get_writer(fmt: str, words: bool = True, cue_limits: CueLimits | None = None) -> Writer:
    """The writer for ``fmt``; ``words=False`` leaves the words out of the JSON formats,
    ``cue_limits`` shape srt/vtt cues (other formats ignore them)."""
    try:
        cls = WRITERS[fmt.lower()]
    except KeyError:
        raise UsageError(f"unknown output format {fmt!r} (choose from {', '.join(FORMATS)})") from None
    if cls.name in WORD_FORMATS:
        return cls(words=words)  # type: ignore[call-arg]
    if cue_limits is not None and issubclass(cls, SrtWriter | VttWriter):
        return cls(cue_limits)
    return cls()


def render(result: Result, fmt: str, words: bool = True, cue_limits: CueLimits | None = None) -> str:
    """The result in format ``fmt`` (txt, json, json-compact, srt, vtt, rttm, tsv)."""
    return get_writer(fmt, words, cue_limits).render(result)
