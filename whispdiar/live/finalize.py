"""The two tiers at the end of a live session.

Instant: the live lines, with speakers re-decided by a global clustering over the
embeddings cached during the run (the batch diarizer's spectral clustering, enrollment
steering and naming), so one voice has one label over the whole meeting. It only
clusters one vector per utterance: milliseconds for a 60-minute meeting.

Refined: the saved recording through the normal ``Pipeline`` (as ``transcribe``), its
anonymous speakers renamed to the instant tier's labels where they overlap most, so
the two agree wherever they can.

Both report how many lines' speaker they changed (from the live lines, from the
instant tier).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.optimize import linear_sum_assignment

from ..diarization.clustering import Clustering, centroids_of, l2_normalize, merge_weak_clusters
from ..records import Result, Segment, Speaker, Turn, Word
from ..speakers.naming import DEFAULT_THRESHOLD, Voiceprint, name_speakers, steer_clustering
from .events import LiveUtterance
from .online_speakers import DEFAULT_JOIN, next_anonymous_names

MIN_SPEAKER_SECONDS = 2.0  # a speaker of the instant tier needs this much speech in all
MIN_CLUSTER_SPEECH = 0.5  # s of speech for an utterance's embedding to shape the clusters


@dataclass(frozen=True, slots=True)
class TierChange:
    changed: int  # lines whose speaker this tier changed
    lines: int


def _best_mapping(weights: np.ndarray) -> dict[int, int]:
    """Row -> column one-to-one maximising the total weight (pairs of weight 0 left out)."""
    if weights.size == 0:
        return {}
    rows, cols = linear_sum_assignment(weights, maximize=True)
    return {int(r): int(c) for r, c in zip(rows, cols, strict=True) if weights[r, c] > 0}


def cluster_utterances(x: np.ndarray, seconds: np.ndarray, join: float = DEFAULT_JOIN,
                       min_seconds: float = MIN_SPEAKER_SECONDS) -> Clustering:
    """Average-linkage clustering of unit utterance embeddings, cut where the mean
    similarity between two groups falls under ``join`` (the online threshold, now with
    every utterance known); speakers with under ``min_seconds`` of speech join their
    nearest (``merge_weak_clusters``, as the diarizer does). Works from two utterances
    on, where the spectral count of the batch diarizer needs many more embeddings."""
    n = len(x)
    if n < 2:
        return Clustering(np.zeros(n, np.int64), x[:1].astype(np.float32))
    z = linkage(x, method="average", metric="cosine")
    labels = fcluster(z, 1.0 - join, criterion="distance") - 1
    labels = merge_weak_clusters(x, labels, 1, seconds, 1, min_seconds)
    return Clustering(labels, centroids_of(x, labels, int(labels.max()) + 1))


def recluster(utts: Sequence[LiveUtterance], voiceprints: Mapping[str, Voiceprint],
              threshold: float = DEFAULT_THRESHOLD, join: float = DEFAULT_JOIN) -> list[str]:
    """The shown name of each utterance after a global clustering of their embeddings:
    enrolled voices by name, the others "Speaker 1", "Speaker 2", ... in the order their
    first lines appeared (``dense_names``)."""
    live = [u.name for u in utts]
    train = [i for i, u in enumerate(utts) if u.embedding is not None and u.speech_seconds >= MIN_CLUSTER_SPEECH]
    if len(train) < 2:
        return dense_names(live, voiceprints)
    x = l2_normalize(np.stack([utts[i].embedding for i in train]))
    clustering = cluster_utterances(x, np.array([utts[i].speech_seconds for i in train]), join)
    if voiceprints:
        clustering = steer_clustering(clustering, x, voiceprints, threshold)
    labels = _label_all(utts, train, clustering)
    k = clustering.num_clusters
    matches = name_speakers({str(c): clustering.centroids[c] for c in range(k)}, voiceprints, threshold)
    names: dict[int, str] = {int(c): m.name for c, m in matches.items()}
    fresh = iter(next_anonymous_names((), voiceprints))
    for c in labels:  # utterance order: numbered by first appearance
        if c not in names:
            names[c] = next(fresh)
    return [names[c] for c in labels]


def _label_all(utts: Sequence[LiveUtterance], train: list[int], clustering: Clustering) -> list[int]:
    """A cluster for every utterance: its own, its nearest centroid's, or the one before it."""
    labels = [-1] * len(utts)
    for i, c in zip(train, clustering.labels, strict=True):
        labels[i] = int(c)
    for i, u in enumerate(utts):
        if labels[i] < 0 and u.embedding is not None:
            labels[i] = int(np.argmax(clustering.centroids @ l2_normalize(u.embedding)))
    last = next((c for c in labels if c >= 0), 0)
    for i, c in enumerate(labels):
        last = labels[i] = c if c >= 0 else last
    return labels


def build_result(utts: Sequence[LiveUtterance], names: Sequence[str], audio: str, duration: float,
                 language: str | None, models: dict[str, str], enrolled: Iterable[str] = (),
                 confidence: Mapping[str, float] | None = None) -> Result:
    """A Result the writers render: one segment per utterance, its words with the speaker."""
    enrolled = set(enrolled)
    labels: dict[str, str] = {}
    for n in names:
        labels.setdefault(n, f"SPEAKER_{len(labels):02d}")
    segments, turns = [], []
    seconds = dict.fromkeys(labels, 0.0)
    for u, n in zip(utts, names, strict=True):
        lab = labels[n]
        words = [Word(w.text, w.start, w.end, w.probability, lab) for w in u.words]
        timed = [w for w in words if w.start is not None and w.end is not None]
        start = timed[0].start if timed else u.start
        end = max(w.end for w in timed) if timed else u.end
        if u.text:
            segments.append(Segment(start, max(start, end), u.text, lab, words))
        turns.append(Turn(u.start, u.end, lab))
        seconds[n] += u.speech_seconds
    confidence = confidence or {}
    speakers = [Speaker(lab, n, confidence.get(n), round(seconds[n], 3), n in enrolled) for n, lab in labels.items()]
    return Result(audio, round(duration, 3), language, segments, speakers, turns, dict(models))


def dense_names(names: Sequence[str], reserved: Iterable[str] = ()) -> list[str]:
    """The anonymous names (those not in ``reserved``, the enrolled ones) renumbered
    "Speaker 1", "Speaker 2", ... by first appearance, as ``transcribe`` numbers them: live,
    a voice first split in two may have shown as "Speaker 3" before the instant tier joined
    it to "Speaker 1", and a saved transcript of two people should not read 1 and 4."""
    enrolled = {r.casefold() for r in reserved}
    fresh = iter(next_anonymous_names((), enrolled))
    mapping: dict[str, str] = {}
    out = []
    for n in names:
        if n.casefold() in enrolled:
            out.append(n)
            continue
        if n not in mapping:
            mapping[n] = next(fresh)
        out.append(mapping[n])
    return out


def changed(before: Sequence[str], after: Sequence[str]) -> TierChange:
    return TierChange(sum(a != b for a, b in zip(before, after, strict=True)), len(before))


def align_refined(refined: Result, utts: Sequence[LiveUtterance], instant: Sequence[str],
                  reserved: Iterable[str] = ()) -> list[str]:
    """Rename the refined result's anonymous speakers (in place) to the instant names they
    overlap most; returns the refined speaker of each instant line (most overlap)."""
    reserved = {r.casefold() for r in reserved}
    labels = [s.label for s in refined.speakers]
    anon = sorted({n for n in instant if n.casefold() not in reserved})
    overlap = np.zeros((len(labels), len(anon)))
    per_line = np.zeros((len(utts), len(labels)))
    for t in refined.turns:
        if t.speaker not in labels:
            continue
        j = labels.index(t.speaker)
        for i, u in enumerate(utts):
            o = min(t.end, u.end) - max(t.start, u.start)
            if o > 0:
                per_line[i, j] += o
                if instant[i] in anon:
                    overlap[j, anon.index(instant[i])] += o
    by_label = {s.label: s for s in refined.speakers}
    mapping = _best_mapping(overlap)
    taken = {s.name for s in refined.speakers if s.enrolled}
    for j, lab in enumerate(labels):
        s = by_label[lab]
        if not s.enrolled and j in mapping:
            s.name = anon[mapping[j]]
            taken.add(s.name)
    fresh = iter(next_anonymous_names(taken | set(instant), reserved))
    for j, lab in enumerate(labels):
        if not by_label[lab].enrolled and j not in mapping:
            by_label[lab].name = next(fresh)
    return [by_label[labels[int(np.argmax(row))]].name if row.max() > 0 else instant[i]
            for i, row in enumerate(per_line)]
