"""Recognition: which diarized speaker is which enrolled person (pure functions, no I/O).

Each cluster's centroid is compared with each voiceprint (the L2-normalised mean of the
enrolled sample embeddings) by cosine similarity. Names are assigned one-to-one with the
Hungarian algorithm, so two clusters of one recording never get the same name, and only
where the similarity reaches ``threshold``; the similarity is the name's confidence.
Everybody else keeps an anonymous "Speaker N" label.

Mixed clusters: a cluster's centroid is the mean of its members, and the mean of many
different voices drifts toward a "generic" voice that may resemble some voiceprint even
though none of its members does. So a cluster is named only if its members agree too:
the median cosine similarity of its members (window embeddings) to the voiceprint must
reach ``member_median`` (at least half of its windows resemble that person).

Merge rule (enrollment steering diarization): when two or more clusters each have the
same voiceprint as their best match with similarity >= ``merge_threshold`` (stricter
than naming), they are one person split by clustering, and become one cluster before
the turns are built. Calibration: docs/voiceprints.md.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
from scipy.optimize import linear_sum_assignment

from ..diarization.clustering import Clustering, centroids_of, l2_normalize
from ..records import Result, Segment, Speaker, Timings, Turn

if TYPE_CHECKING:
    from ..diarization.diarizer import Diarization

# Calibrated by scripts/bench_voiceprints.py on LibriSpeech (docs/voiceprints.md).
DEFAULT_THRESHOLD = 0.5
DEFAULT_MERGE_THRESHOLD = 0.6
DEFAULT_MEMBER_THRESHOLD = 0.55  # one window's embedding (<= 5 s of speech) claimed by a voiceprint
# Median member-to-voiceprint similarity a named cluster needs (docs/voiceprints.md, "Mixed
# clusters"). Measured: clusters mixing 10-77 unenrolled voices matched a voiceprint by their
# centroid (0.52-0.59) with member medians of 0.15-0.34; correctly named clusters had 0.40-0.80
# (0.40-0.67 in simulated rooms and phone calls, 0.61-0.80 in the clean meetings). Crowd files
# told too few speakers (bench_voiceprints.py --crowds): 8.37 -> 0.29 % of unenrolled speech
# named; right names on the meetings unchanged (95.9 %).
DEFAULT_MEMBER_MEDIAN = 0.35
# The best of N impostor scores grows with N: with 90-170 people enrolled, single unenrolled
# voices passed 0.5 against one of them (1.30 % of their speech named). The threshold holds
# as calibrated up to CROWD_PRINTS voiceprints and rises CROWD_STEP per doubling beyond:
# impostor cluster scores have sd ~0.10 here, and the maximum of N normal draws near z = 4.5
# moves ~ln 2 / 4.5 = 0.15 sd per doubling of N, so the chance that any enrolled person
# claims an unenrolled voice stays what it is with 8 (docs/voiceprints.md, "Many voiceprints").
CROWD_PRINTS = 8
CROWD_STEP = 0.015
MIN_GROUP = 4  # members a voice needs inside a cluster to be split off (clustering's min cluster size)


class Match(NamedTuple):
    """A recognised speaker: unpacks as ``name, confidence``."""

    name: str
    confidence: float  # cosine similarity of cluster centroid and voiceprint, in [-1, 1]


@dataclass(frozen=True, slots=True)
class Voiceprint:
    name: str
    embeddings: np.ndarray  # [n, D] float32, L2-normalised sample embeddings
    centroid: np.ndarray  # [D] float32, L2-normalised mean of ``embeddings``
    speech_seconds: float = 0.0

    @classmethod
    def from_embeddings(cls, name: str, embeddings: np.ndarray, speech_seconds: float = 0.0) -> Voiceprint:
        e = l2_normalize(np.atleast_2d(embeddings))
        return cls(name, e.astype(np.float32), l2_normalize(e.mean(axis=0)).astype(np.float32), speech_seconds)


def similarities(centroids: np.ndarray, voiceprints: Iterable[Voiceprint]) -> np.ndarray:
    """[K, P] cosine similarity of cluster centroids [K, D] and voiceprint centroids."""
    prints = list(voiceprints)
    c = l2_normalize(np.atleast_2d(np.asarray(centroids, np.float64)))
    if not prints or c.size == 0:
        return np.zeros((len(c), len(prints)))
    p = l2_normalize(np.stack([v.centroid for v in prints]))
    if p.shape[1] != c.shape[1]:
        raise ValueError(f"voiceprints have {p.shape[1]} dimensions, clusters {c.shape[1]}")
    return c @ p.T


def assign(scores: np.ndarray, threshold: float, allowed: np.ndarray | None = None) -> list[tuple[int, int]]:
    """One-to-one (row, column) pairs maximising the number, then the sum, of scores >= threshold
    (only pairs ``allowed``, a boolean mask like ``scores``, when given)."""
    if scores.size == 0:
        return []
    ok = scores >= threshold
    if allowed is not None:
        ok &= allowed
    # Pairs below threshold cost so much that the assignment avoids them whenever it can;
    # any it is forced into (more rows than good columns) are dropped afterwards.
    weights = np.where(ok, scores, scores - 1e6)
    rows, cols = linear_sum_assignment(weights, maximize=True)
    return [(int(r), int(c)) for r, c in zip(rows, cols, strict=True) if ok[r, c]]


def member_agreement(members: np.ndarray, voiceprints: Iterable[Voiceprint]) -> np.ndarray:
    """[P] median cosine similarity of a cluster's members [n, D] to each voiceprint."""
    p = np.stack([v.centroid for v in voiceprints]).astype(np.float64)
    x = np.asarray(members, np.float64).reshape(-1, p.shape[1])
    x = x[np.isfinite(x).all(axis=1)]
    if len(x) == 0:
        return np.ones(len(p))  # nothing to judge by: the centroid decides
    return np.median(l2_normalize(x) @ l2_normalize(p).T, axis=0)


def threshold_for(threshold: float, n_prints: int) -> float:
    """The naming threshold with ``n_prints`` voiceprints to choose from (``CROWD_STEP``)."""
    if n_prints <= CROWD_PRINTS:
        return threshold
    return threshold + CROWD_STEP * math.log2(n_prints / CROWD_PRINTS)


def name_speakers(
    centroids: Mapping[str, np.ndarray],
    voiceprints: Mapping[str, Voiceprint],
    threshold: float = DEFAULT_THRESHOLD,
    members: Mapping[str, np.ndarray] | None = None,
    member_median: float = DEFAULT_MEMBER_MEDIAN,
) -> dict[str, Match]:
    """{cluster label: Match} for the clusters recognised as enrolled speakers.

    With ``members`` ({label: [n, D] member embeddings}, ``Diarization.embeddings``) a
    cluster may take a name only if its members' median similarity to that voiceprint
    reaches ``member_median`` as well (mixed clusters stay anonymous); a label without
    members is judged by its centroid alone. ``threshold`` rises with the number of
    voiceprints beyond ``CROWD_PRINTS`` (``threshold_for``)."""
    labels = list(centroids)
    prints = list(voiceprints.values())
    if not labels or not prints:
        return {}
    s = similarities(np.stack([centroids[k] for k in labels]), prints)
    allowed = None
    if members:
        allowed = np.ones(s.shape, bool)
        for i, k in enumerate(labels):
            if k in members and len(members[k]):
                allowed[i] = member_agreement(members[k], prints) >= member_median
    pairs = assign(s, threshold_for(threshold, len(prints)), allowed)
    return {labels[r]: Match(prints[c].name, round(float(s[r, c]), 4)) for r, c in pairs}


def merge_groups(
    centroids: np.ndarray, voiceprints: Mapping[str, Voiceprint], merge_threshold: float = DEFAULT_MERGE_THRESHOLD
) -> list[list[int]]:
    """Groups (>= 2 cluster indices) that all match one voiceprint best, each >= merge_threshold."""
    prints = list(voiceprints.values())
    if len(centroids) < 2 or not prints:
        return []
    s = similarities(centroids, prints)
    best = np.argmax(s, axis=1)
    strong = s[np.arange(len(s)), best] >= merge_threshold
    groups = [np.flatnonzero(strong & (best == p)).tolist() for p in range(len(prints))]
    return [g for g in groups if len(g) >= 2]


def merge_clustering(
    clustering: Clustering, train: np.ndarray, voiceprints: Mapping[str, Voiceprint],
    merge_threshold: float = DEFAULT_MERGE_THRESHOLD,
) -> Clustering:
    """The clustering with each ``merge_groups`` group made one cluster (Diarizer relabel hook)."""
    groups = merge_groups(clustering.centroids, voiceprints, merge_threshold)
    if not groups:
        return clustering
    k = clustering.num_clusters
    target = np.arange(k)
    for g in groups:
        target[g] = g[0]
    _, remap = np.unique(target, return_inverse=True)  # compact 0..K'-1, order kept
    labels = remap[clustering.labels]
    return Clustering(labels.astype(np.int64), centroids_of(l2_normalize(train), labels, int(remap.max()) + 1))


def split_groups(
    x: np.ndarray, labels: np.ndarray, prints: list[Voiceprint], threshold: float, member_threshold: float,
    min_group: int = MIN_GROUP,
) -> np.ndarray:
    """Labels after splitting clusters that hold two or more voices (enrolled or not).

    Within a cluster each member is claimed by its best voiceprint if their similarity
    reaches ``member_threshold``, else it is unclaimed. Claimed groups of >= ``min_group``
    members become clusters of their own; the unclaimed rest too, unless its centroid
    looks like one of those voices (>= ``threshold``: the same person's weaker windows).
    Smaller groups join the most similar group. A cluster with one group is unchanged.
    """
    sims = x @ np.stack([p.centroid for p in prints]).T  # [N, P]
    best = np.argmax(sims, axis=1)
    claim = np.where(sims[np.arange(len(x)), best] >= member_threshold, best, -1)
    out = labels.copy()
    next_label = int(labels.max()) + 1
    for k in np.unique(labels):
        idx = np.flatnonzero(labels == k)
        groups = {int(g): idx[claim[idx] == g] for g in np.unique(claim[idx])}
        big = {g: m for g, m in groups.items() if len(m) >= min_group and g >= 0}
        if not big or (len(big) == 1 and len(groups.get(-1, [])) < min_group):
            continue
        rest = groups.get(-1, idx[:0])
        if len(rest) >= min_group:
            c = l2_normalize(x[rest].mean(axis=0))
            if max(float(c @ prints[g].centroid) for g in big) < threshold:
                big[-1] = rest
        if len(big) < 2:
            continue
        cents = {g: l2_normalize(x[m].mean(axis=0)) for g, m in big.items()}
        keys = list(big)
        target = np.empty(len(idx), np.int64)
        for j, i in enumerate(idx):
            g = int(claim[i])
            target[j] = keys.index(g) if g in big else int(np.argmax([x[i] @ cents[h] for h in keys]))
        new = [k] + list(range(next_label, next_label + len(keys) - 1))
        next_label += len(keys) - 1
        out[idx] = np.array(new)[target]
    return out


def steer_clustering(
    clustering: Clustering, train: np.ndarray, voiceprints: Mapping[str, Voiceprint],
    threshold: float = DEFAULT_THRESHOLD, merge_threshold: float = DEFAULT_MERGE_THRESHOLD,
    member_threshold: float = DEFAULT_MEMBER_THRESHOLD, min_group: int = MIN_GROUP,
) -> Clustering:
    """Enrollment-steered clustering: split clusters holding several voices, then merge
    clusters of one enrolled voice (``merge_clustering``). The Diarizer's relabel hook."""
    prints = list(voiceprints.values())
    if not prints or clustering.num_clusters == 0 or len(train) == 0:
        return clustering
    x = l2_normalize(train)
    labels = split_groups(x, clustering.labels, prints, threshold, member_threshold, min_group)
    if not np.array_equal(labels, clustering.labels):
        _, labels = np.unique(labels, return_inverse=True)
        clustering = Clustering(labels.astype(np.int64), centroids_of(x, labels, int(labels.max()) + 1))
    return merge_clustering(clustering, train, voiceprints, merge_threshold)


def speaker_order(turns: Iterable[Turn], segments: Iterable[Segment] = ()) -> list[str]:
    """Labels by first appearance: first word (or untimed segment) in the transcript,
    then, for speakers the transcript never shows, first turn."""
    first: dict[str, float] = {}
    for s in segments:
        for w in s.words or []:
            if w.speaker is not None and w.start is not None:
                first.setdefault(w.speaker, w.start)
        if s.speaker is not None:
            first.setdefault(s.speaker, s.start)
    order = sorted(first, key=lambda k: first[k])
    by_turn: dict[str, float] = {}
    for t in sorted(turns, key=lambda t: t.start):
        by_turn.setdefault(t.speaker, t.start)
    return order + [label for label in sorted(by_turn, key=lambda k: by_turn[k]) if label not in first]


def display_names(
    turns: Iterable[Turn],
    matches: Mapping[str, tuple[str, float]],
    reserved: Iterable[str] = (),
    segments: Iterable[Segment] = (),
) -> dict[str, str]:
    """Label -> shown name: the enrolled name, else "Speaker N".

    N is the speaker's rank by first appearance (``speaker_order``: Jan, Anna, Speaker 3),
    moved up when "Speaker N" is already taken by a shown or reserved (enrolled) name.
    """
    order = speaker_order(turns, segments)
    order += [label for label in matches if label not in order]
    taken = {name.casefold() for name, _ in matches.values()} | {r.casefold() for r in reserved}
    out: dict[str, str] = {}
    for rank, label in enumerate(order, start=1):
        if label in matches:
            out[label] = matches[label][0]
            continue
        n = rank
        while f"speaker {n}" in taken:
            n += 1
        taken.add(f"speaker {n}")
        out[label] = f"Speaker {n}"
    return out


def speakers_of(diar: Diarization, namer: Callable | None, audio: str,
                segments: Iterable[Segment] = ()) -> list[Speaker]:
    """records.Speaker per speaker of ``diar``: enrolled voices named by ``namer`` (a
    VoiceprintNamer, or None), speaker memory applied when it is on, the others "Speaker N"
    with the confidence that they are distinct real voices (``whispdiar.diarization.confidence``)."""
    from ..diarization.confidence import speaker_confidence

    named = dict(namer(diar)) if namer is not None else {}
    conf: dict[str, float | None] = dict(speaker_confidence(diar.centroids, diar.turns))
    remember = getattr(namer, "remember", None)  # speaker memory (whispdiar.speakers.memory)
    if remember is not None:
        named.update(remember(diar, named, conf, audio))
    reserved = getattr(namer, "names", ())  # every enrolled name, shown or not
    return speaker_records(list(diar.turns), named, reserved, segments, conf)


def diarization_result(diar: Diarization, audio: str, namer: Callable | None = None,
                       models: Mapping[str, str] | None = None, seconds: float | None = None) -> Result:
    """A Result without text (what ``whispdiar diarize`` writes): the turns and the named
    speakers of ``diar``; ``seconds`` the diarization's time."""
    return Result(audio, diar.duration, None, [], speakers_of(diar, namer, audio), list(diar.turns),
                  dict(models or {}), Timings(None, seconds, seconds or 0.0))


def speaker_records(
    turns: list[Turn],
    matches: Mapping[str, tuple[str, float]],
    reserved: Iterable[str] = (),
    segments: Iterable[Segment] = (),
    confidence: Mapping[str, float | None] | None = None,
) -> list[Speaker]:
    """records.Speaker per label in order of first appearance. An enrolled speaker's
    confidence is its voiceprint similarity; another's comes from ``confidence``."""
    names = display_names(turns, matches, reserved, segments)
    seconds: dict[str, float] = dict.fromkeys(names, 0.0)
    for t in turns:
        seconds[t.speaker] = seconds.get(t.speaker, 0.0) + t.duration
    confidence = confidence or {}
    return [
        Speaker(label=label, name=name,
                confidence=float(matches[label][1]) if label in matches else confidence.get(label),
                speech_seconds=round(seconds.get(label, 0.0), 3), enrolled=label in matches)
        for label, name in names.items()
    ]


ANONYMOUS_PREFIX = "Unknown"  # remembered unknown voices are "Unknown 1", "Unknown 2", ...


def is_anonymous_name(name: str) -> bool:
    """True for names of remembered unknown voices ("Unknown 3"), which users cannot pick."""
    return re.fullmatch(rf"(?i){ANONYMOUS_PREFIX}[ _]?\d+", name.strip()) is not None


def is_placeholder(name: str) -> bool:
    """True for names of the form of anonymous labels ("Speaker 3", "SPEAKER_03")."""
    return re.fullmatch(r"(?i)speaker[ _]?\d+", name.strip()) is not None
