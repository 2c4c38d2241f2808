"""Who said each word: combine transcript words with diarization turns.

The rules (explained with examples in docs/alignment.md):

1. Word level. A timed word gets the speaker whose (exclusive) turns overlap it most.
   A word in a gap between turns gets the nearest turn's speaker if that turn is at most
   ``max_gap`` away, else no speaker (None) -- never an invented one.
2. Words without times take the speaker of their timed neighbours in the same segment
   when both sides agree (or only one side exists), else the segment-level speaker.
3. Smoothing. Within one sentence, a short run of words (at most ``flip_max_words`` words
   and ``flip_max_seconds``) whose speaker differs from the sentence's clear majority is
   relabelled to the majority -- only if every word of the run is *uncertain*: assigned by
   the gap rule, less than half covered by its speaker's turns, overlapping speech of
   another speaker, or within ``boundary_margin`` of a speaker change.
4. Segments are cut where the speaker changes; then adjacent segments of one speaker
   separated by at most ``merge_gap`` are merged.
5. Without word times (or words), a segment gets the speaker with the largest overlap
   with it (IoU breaks ties), with the same gap rule as words.

Everything here is pure (records in, records out) and fast; no model is touched.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from .records import Segment, Turn, Word

# Languages written without spaces between words: join re-cut words without one.
NO_SPACE_LANGUAGES = {"zh", "ja", "th", "lo", "km", "my", "yue", "bo"}
_SENTENCE_END = (".", "?", "!", "。", "？", "！", "…")


@dataclass(frozen=True, slots=True)
class AlignConfig:
    max_gap: float = 0.5  # seconds: a word this close to a turn still gets its speaker
    flip_max_words: int = 2
    flip_max_seconds: float = 1.0
    boundary_margin: float = 0.25  # a word this close to a speaker change is uncertain
    min_majority: float = 0.6  # the majority must hold this share of the sentence's words
    min_sentence_words: int = 4  # shorter sentences are never smoothed
    merge_gap: float = 1.0  # same-speaker segments closer than this become one


def _overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))


def _distance(a0: float, a1: float, b0: float, b1: float) -> float:
    """Gap between two intervals (0 if they touch or overlap)."""
    return max(0.0, b0 - a1, a0 - b1)


class _TurnIndex:
    """Turns sorted by start with a running max of ends, for quick interval queries."""

    def __init__(self, turns: Sequence[Turn]):
        self.turns = sorted((t for t in turns if t.end > t.start), key=lambda t: (t.start, t.end))
        self.starts = [t.start for t in self.turns]
        ends, m = [], float("-inf")
        for t in self.turns:
            m = max(m, t.end)
            ends.append(m)
        self.max_end = ends

    def near(self, start: float, end: float, pad: float) -> list[Turn]:
        """Turns within ``pad`` of [start, end]."""
        hi = bisect_right(self.starts, end + pad)
        lo = bisect_left(self.max_end, start - pad)  # first turn whose running max end reaches us
        return [t for t in self.turns[lo:hi] if t.end >= start - pad]


@dataclass(slots=True)
class _Assignment:
    speaker: str | None
    uncertain: bool


def speaker_changes(turns: Sequence[Turn]) -> list[float]:
    """Times where the active speaker changes (ends/starts of turns between different speakers)."""
    ts = sorted(turns, key=lambda t: t.start)
    out = []
    for a, b in zip(ts, ts[1:], strict=False):
        if a.speaker != b.speaker:
            out.extend((a.end, b.start))
    return out


def assign_interval(
    start: float, end: float, index: _TurnIndex, max_gap: float
) -> tuple[str | None, float, bool]:
    """(speaker, covered fraction, by_gap) for an interval by the max-overlap/nearest rule."""
    cands = index.near(start, end, max_gap)
    if not cands:
        return None, 0.0, False
    by_spk: dict[str, float] = defaultdict(float)
    iou: dict[str, float] = defaultdict(float)
    for t in cands:
        ov = _overlap(start, end, t.start, t.end)
        if ov > 0:
            by_spk[t.speaker] += ov
            union = max(end, t.end) - min(start, t.start)
            iou[t.speaker] = max(iou[t.speaker], ov / union if union > 0 else 0.0)
    if by_spk:
        best = max(by_spk, key=lambda s: (round(by_spk[s], 6), iou[s]))
        length = end - start
        return best, (by_spk[best] / length if length > 0 else 1.0), False
    # zero-length word inside a turn counts as overlap
    inside = [t for t in cands if t.start <= start <= t.end]
    if inside:
        return inside[0].speaker, 1.0, False
    nearest = min(cands, key=lambda t: _distance(start, end, t.start, t.end))
    if _distance(start, end, nearest.start, nearest.end) <= max_gap:
        return nearest.speaker, 0.0, True
    return None, 0.0, False


def assign_words(
    words: Sequence[Word],
    turns: Sequence[Turn],
    config: AlignConfig = AlignConfig(),
    overlapped: Sequence[Turn] | None = None,
) -> list[_Assignment]:
    """Speaker and uncertainty for each word (None for untimed words: filled later).

    ``turns`` are exclusive turns (one speaker at a time); ``overlapped`` the full turns
    with overlap, used only to mark words in overlapped speech as uncertain.
    """
    index = _TurnIndex(turns)
    full = _TurnIndex(overlapped) if overlapped else None
    changes = sorted(speaker_changes(index.turns))
    out = []
    for w in words:
        if w.start is None or w.end is None:
            out.append(_Assignment(None, True))
            continue
        spk, cover, by_gap = assign_interval(w.start, w.end, index, config.max_gap)
        uncertain = by_gap or cover < 0.5
        if spk is not None and not uncertain and changes:
            mid = (w.start + w.end) / 2
            i = bisect_left(changes, mid)
            near = [changes[j] for j in (i - 1, i) if 0 <= j < len(changes)]
            uncertain = any(abs(c - mid) < config.boundary_margin for c in near)
        if spk is not None and not uncertain and full is not None:
            others = {t.speaker for t in full.near(w.start, w.end, 0.0)
                      if t.speaker != spk and _overlap(w.start, w.end, t.start, t.end) > 0}
            uncertain = bool(others)
        out.append(_Assignment(spk, uncertain))
    return out


def segment_speaker(seg: Segment, turns: Sequence[Turn], max_gap: float | None = None) -> str | None:
    """Segment-level fallback: the speaker overlapping the segment most (IoU breaks ties)."""
    gap = AlignConfig().max_gap if max_gap is None else max_gap
    spk, _, _ = assign_interval(seg.start, seg.end, _TurnIndex(turns), gap)
    return spk


def _sentences(words: Sequence[Word]) -> list[range]:
    """Index ranges of sentences: split after words ending with sentence punctuation."""
    out, start = [], 0
    for i, w in enumerate(words):
        if w.text.rstrip("\"')»”’").endswith(_SENTENCE_END):
            out.append(range(start, i + 1))
            start = i + 1
    if start < len(words):
        out.append(range(start, len(words)))
    return out


def smooth_flips(words: Sequence[Word], assigned: list[_Assignment], config: AlignConfig) -> list[_Assignment]:
    """Rule 3: relabel short uncertain runs inside a sentence to the sentence's majority."""
    out = [_Assignment(a.speaker, a.uncertain) for a in assigned]
    for sent in _sentences(words):
        idx = list(sent)
        if len(idx) < config.min_sentence_words:
            continue
        counts = Counter(out[i].speaker for i in idx if out[i].speaker is not None)
        if len(counts) < 2:
            continue
        major, n_major = counts.most_common(1)[0]
        if n_major / len(idx) < config.min_majority:
            continue
        k = 0
        while k < len(idx):
            spk = out[idx[k]].speaker
            j = k
            while j + 1 < len(idx) and out[idx[j + 1]].speaker == spk:
                j += 1
            run = idx[k:j + 1]
            if spk is not None and spk != major and len(run) <= config.flip_max_words:
                timed = [words[i] for i in run if words[i].start is not None and words[i].end is not None]
                span = (max(w.end for w in timed) - min(w.start for w in timed)) if timed else 0.0
                if span <= config.flip_max_seconds and all(out[i].uncertain for i in run):
                    for i in run:
                        out[i] = _Assignment(major, True)
            k = j + 1
    return out


def _fill_untimed(words: Sequence[Word], assigned: list[_Assignment], fallback: str | None) -> None:
    """Rule 2: untimed words take agreeing neighbours' speaker, else the segment's."""
    n = len(words)
    for i in range(n):
        if words[i].start is not None and words[i].end is not None:
            continue
        prev = next((assigned[j].speaker for j in range(i - 1, -1, -1)
                     if words[j].start is not None and assigned[j].speaker is not None), None)
        nxt = next((assigned[j].speaker for j in range(i + 1, n)
                    if words[j].start is not None and assigned[j].speaker is not None), None)
        if prev is not None and nxt is not None:
            spk = prev if prev == nxt else fallback
        else:
            spk = prev if prev is not None else nxt if nxt is not None else fallback
        assigned[i] = _Assignment(spk, True)


def _join(words: Sequence[Word], language: str | None) -> str:
    sep = "" if language in NO_SPACE_LANGUAGES else " "
    return sep.join(w.text for w in words).strip()


def _bounds(words: Sequence[Word], default: tuple[float, float] | None) -> tuple[float, float] | None:
    timed = [w for w in words if w.start is not None and w.end is not None]
    if not timed:
        return default
    return min(w.start for w in timed), max(w.end for w in timed)


def merge_segments(segments: Sequence[Segment], merge_gap: float, language: str | None = None) -> list[Segment]:
    """Rule 4b: merge neighbours of one (known) speaker separated by at most ``merge_gap``."""
    out: list[Segment] = []
    for s in segments:
        prev = out[-1] if out else None
        if (
            prev is not None
            and s.speaker is not None
            and s.speaker == prev.speaker
            and s.start - prev.end <= merge_gap
        ):
            sep = "" if language in NO_SPACE_LANGUAGES else " "
            out[-1] = Segment(prev.start, max(prev.end, s.end), (prev.text + sep + s.text).strip(),
                              prev.speaker, [*prev.words, *s.words])
        else:
            out.append(Segment(s.start, s.end, s.text, s.speaker, list(s.words)))
    return out


def align(
    segments: Sequence[Segment],
    turns: Sequence[Turn],
    config: AlignConfig = AlignConfig(),
    overlapped: Sequence[Turn] | None = None,
    language: str | None = None,
) -> list[Segment]:
    """Give every word and segment a speaker label (or None) and re-cut segments by speaker.

    ``turns``: exclusive diarization turns (one speaker at a time). ``overlapped``: the
    turns with overlap (optional; marks words in overlapped speech as uncertain).
    Input segments are not modified. With no turns at all, segments come back unchanged
    with no speakers.
    """
    if not turns:
        return [Segment(s.start, s.end, s.text, None, [_copy(w, None) for w in s.words]) for s in segments]
    has_times = [any(w.start is not None and w.end is not None for w in s.words) for s in segments]
    # Words of all timed segments form one stream: sentences may span whisper segments.
    flat: list[Word] = []
    spans: list[range] = []
    for seg, timed in zip(segments, has_times, strict=True):
        first = len(flat)
        if timed:
            flat.extend(seg.words)
        spans.append(range(first, len(flat)))
    assigned = assign_words(flat, turns, config, overlapped)
    fallbacks = [segment_speaker(seg, turns, config.max_gap) for seg in segments]
    for seg, span, fb in zip(segments, spans, fallbacks, strict=True):
        if len(span):
            part = assigned[span.start:span.stop]
            _fill_untimed(seg.words, part, fb)
            assigned[span.start:span.stop] = part
    assigned = smooth_flips(flat, assigned, config)
    out: list[Segment] = []
    for seg, span, fb in zip(segments, spans, fallbacks, strict=True):
        if not len(span):
            # rule 5: no word times -- the whole segment goes to one speaker
            out.append(Segment(seg.start, seg.end, seg.text, fb, [_copy(w, fb) for w in seg.words]))
            continue
        words = [_copy(flat[i], assigned[i].speaker) for i in span]
        # rule 4a: cut where the speaker changes
        runs: list[list[Word]] = []
        for w in words:
            if runs and w.speaker == runs[-1][-1].speaker:
                runs[-1].append(w)
            else:
                runs.append([w])
        prev_end = seg.start
        for i, run in enumerate(runs):
            # A run with no timed word lies between its neighbours, never across them.
            later = [b for r in runs[i + 1:] if (b := _bounds(r, None)) is not None]
            gap = (prev_end, max(prev_end, later[0][0] if later else seg.end))
            part = _segment_of(run, seg, language, whole=len(runs) == 1, default=gap)
            prev_end = max(prev_end, part.end)
            out.append(part)
    return merge_segments(out, config.merge_gap, language)


def _copy(w: Word, speaker: str | None) -> Word:
    return Word(w.text, w.start, w.end, w.probability, speaker)


def _segment_of(words: list[Word], seg: Segment, language: str | None, whole: bool = False,
                default: tuple[float, float] | None = None) -> Segment:
    bounds = _bounds(words, default or (seg.start, seg.end))
    assert bounds is not None
    start, end = bounds
    text = seg.text if whole and seg.text else _join(words, language)
    return Segment(start, end, text, words[0].speaker, words)
