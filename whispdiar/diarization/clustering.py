"""Global speaker clustering of (window, local speaker) embeddings.

``spectral_cluster_embeddings``: an eigengap count on a pruned cosine affinity
(``whispdiar.diarization.spectral``), weak clusters merged (``merge_weak_clusters``),
clusters that mix voices split again; hints adjust that one partition
(docs/diarization.md, "Speaker count from 1 to 100+"). The threshold-cut agglomerative
clustering it replaced is described in docs/experiments.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.optimize import linear_sum_assignment

from ..errors import UsageError
from .spectral import spectral_count_and_labels

DEFAULT_MIN_CLUSTER_SIZE = 4  # members a cluster needs to take speech in the re-check


@dataclass(slots=True)
class Clustering:
    labels: np.ndarray  # [N] int, cluster index per embedding, 0..K-1
    centroids: np.ndarray  # [K, D] float32, L2-normalised

    @property
    def num_clusters(self) -> int:
        return len(self.centroids)


def l2_normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norm, 1e-12)


def check_hints(
    num_speakers: int | None, min_speakers: int | None, max_speakers: int | None
) -> tuple[int, int | None]:
    """Validated (min, max) speaker counts; max None means unbounded."""
    for name, v in (("num_speakers", num_speakers), ("min_speakers", min_speakers),
                    ("max_speakers", max_speakers)):
        if v is not None and v < 1:
            raise UsageError(f"{name} must be at least 1 (got {v})")
    if num_speakers is not None:
        if (min_speakers is not None and min_speakers > num_speakers) or (
            max_speakers is not None and max_speakers < num_speakers
        ):
            raise UsageError("num_speakers contradicts min_speakers/max_speakers")
        return num_speakers, num_speakers
    lo = min_speakers or 1
    if max_speakers is not None and max_speakers < lo:
        raise UsageError(f"min_speakers ({lo}) is larger than max_speakers ({max_speakers})")
    return lo, max_speakers


def cluster_sums(x: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """[K, D] sum of each cluster's members (a sparse one-hot product: ~10x np.add.at)."""
    onehot = sparse.csr_matrix((np.ones(len(labels)), (labels, np.arange(len(labels)))), shape=(k, len(labels)))
    return np.asarray(onehot @ np.asarray(x, np.float64))


def centroids_of(x: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """L2-normalised mean of the (normalised) members of each cluster."""
    return l2_normalize(cluster_sums(x, labels, k)).astype(np.float32)


def _no_speakers(emb: np.ndarray) -> Clustering:
    """The clustering of zero embeddings (keeps their dimension)."""
    return Clustering(np.zeros(0, np.int64), np.zeros((0, emb.shape[-1] if emb.ndim == 2 else 0), np.float32))


def constrained_assignment(scores: np.ndarray, active: np.ndarray) -> np.ndarray:
    """Per window, give each active local speaker a distinct cluster maximising similarity.

    scores [W, S, K] (higher is better), active [W, S] bool -> [W, S] int, -1 when inactive.
    Two speakers of one window are different people by construction, so they must not
    share a cluster (unless there are more local speakers than clusters).
    """
    w, s, k = scores.shape
    out = np.full((w, s), -1, np.int64)
    for i in range(w):
        idx = np.flatnonzero(active[i])
        if len(idx) == 0 or k == 0:
            continue
        sc = scores[i, idx]
        if len(idx) == 1 or k == 1:
            out[i, idx] = np.argmax(sc, axis=1)
            continue
        rows, cols = linear_sum_assignment(sc, maximize=True)
        out[i, idx[rows]] = cols
        rest = np.setdiff1d(np.arange(len(idx)), rows)  # more speakers than clusters
        if len(rest):
            out[i, idx[rest]] = np.argmax(sc[rest], axis=1)
    return out


def linkage_ratio(x: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """[K, K]: the mean similarity between two clusters' members over the geometric mean of
    their mean similarities inside (pairs of distinct members; a single member takes the
    median of the others).

    About 1 for two parts of one voice whatever their sizes and however noisy the voice's
    embeddings (a far microphone, a phone line), well below 1 for two voices: a scale-free
    test where a fixed cosine depends on the channel and on how much each one said.
    """
    sizes = np.bincount(labels, minlength=k).astype(np.float64)
    sums = cluster_sums(x, labels, k)
    means = sums / np.maximum(sizes, 1)[:, None]
    between = means @ means.T
    many = sizes >= 2
    inside = np.full(k, np.nan)
    inside[many] = (np.einsum("kd,kd->k", sums[many], sums[many]) - sizes[many]) / (sizes[many] * (sizes[many] - 1))
    fill = float(np.median(inside[many])) if many.any() else 1.0
    inside = np.clip(np.where(many, inside, fill), 1e-3, None)
    return between / np.sqrt(np.outer(inside, inside))


def merge_weak_clusters(
    x: np.ndarray, labels: np.ndarray, lo: int, seconds: np.ndarray | None = None,
    min_size: int = 1, min_seconds: float = 0.0, merge_cosine: float | None = None,
    merge_ratio: float | None = None, ratio_min_size: int = 1,
) -> np.ndarray:
    """Merge clusters that are not speakers of their own into their most similar one (the
    mean cosine over all pairs of members), one at a time, never below ``lo`` clusters:

    - fewer than ``min_size`` members (a few stray embeddings);
    - less than ``min_seconds`` of speech in all (``seconds`` per embedding): two people
      talking for 30 s are not nine speakers;
    - a pair with similarity >= ``merge_cosine`` (one voice split in two);
    - a pair whose ``linkage_ratio`` is >= ``merge_ratio`` (as alike as each is inside).

    Returns labels renumbered 0..K-1.
    """
    labels = np.unique(labels, return_inverse=True)[1].astype(np.int64)
    w = np.ones(len(x)) if seconds is None else np.asarray(seconds, np.float64)
    while True:
        k = int(labels.max()) + 1 if len(labels) else 0
        if k <= max(1, lo):
            return labels
        sizes = np.bincount(labels, minlength=k)
        speech = np.bincount(labels, weights=w, minlength=k)
        # The mean cosine over all pairs of members (the dot of the unnormalised means) does
        # not grow with the clusters' sizes, as the cosine of their centroids would.
        means = cluster_sums(x, labels, k) / np.maximum(sizes, 1)[:, None]
        sim = means @ means.T
        np.fill_diagonal(sim, -np.inf)
        victim = -1
        small = np.flatnonzero((sizes < min_size) | (speech < min_seconds))
        if len(small):
            victim = int(small[np.lexsort((speech[small], sizes[small] >= min_size))[0]])
            target = int(np.argmax(sim[victim]))
        elif merge_cosine is not None and sim.max() >= merge_cosine:
            i, j = np.unravel_index(int(np.argmax(sim)), sim.shape)
            victim, target = (int(i), int(j)) if speech[i] <= speech[j] else (int(j), int(i))
        elif merge_ratio is not None and k > 1:
            ratio = linkage_ratio(x, labels, k)
            np.fill_diagonal(ratio, -np.inf)
            few = sizes < ratio_min_size  # too few members for a reliable ratio
            ratio[few, :] = -np.inf
            ratio[:, few] = -np.inf
            if ratio.max() >= merge_ratio:
                i, j = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
                victim, target = (int(i), int(j)) if speech[i] <= speech[j] else (int(j), int(i))
        if victim < 0:
            return labels
        labels = np.where(labels == victim, target, labels)
        labels = np.unique(labels, return_inverse=True)[1].astype(np.int64)


def spectral_cluster_embeddings(
    emb: np.ndarray,
    seconds: np.ndarray | None = None,
    num_speakers: int | None = None,
    min_speakers: int | None = None,
    max_speakers: int | None = None,
    *,
    pval: float = 0.02,
    min_keep: int = 6,
    max_auto: int = 15,
    min_cluster_size: int = 1,
    min_speaker_seconds: float = 1.0,
    merge_cosine: float | None = 0.45,
    floor_percentile: float | None = 5.0,
    coherence: float | None = 0.6,
    merge_ratio: float | None = 0.8,
    min_split_size: int = 2,
    ratio_min_size: int = 5,
    rejoin_ratio: float | None = 0.85,
) -> Clustering:
    """Spectral clustering with an eigengap count (``whispdiar.diarization.spectral``), each cluster
    split again while its parts are different voices, then the weak clusters merged
    (``merge_weak_clusters``). See ``_split_while_distinct`` for why the splits.

    Hints narrow the result of the same method, never swap it for another: an unhinted
    partition whose count is inside the hint is returned as it is; above the maximum the
    most alike clusters (``linkage_ratio``) keep merging down to it; below the minimum the
    spectral bisection with the least alike halves keeps being applied (``_split_to``).
    """
    emb = np.asarray(emb)
    lo, hi = check_hints(num_speakers, min_speakers, max_speakers)
    n = len(emb)
    if n == 0:
        return _no_speakers(emb)
    x = l2_normalize(emb)
    if n == 1 or (hi is not None and hi == 1):
        labels = np.zeros(n, np.int64)
    else:
        threshold = None
        floor = 0.0
        if floor_percentile is not None and n > 2:
            # What the file's most different embeddings still share (channel, band) is not
            # speaker similarity: read the merge threshold above that floor.
            # (from at most 500 evenly spaced embeddings: the memory stays small)
            sub = x[np.linspace(0, n - 1, min(n, 500)).round().astype(np.int64)]
            sims = (sub @ sub.T)[np.triu_indices(len(sub), 1)]
            floor = float(np.clip(np.percentile(sims, floor_percentile), 0.0, 0.9))
        if merge_cosine is not None:
            threshold = floor + merge_cosine * (1.0 - floor)
        top = min(n, max_auto)  # the same unhinted partition whatever the hint: a hint only adjusts it
        _, labels, _ = spectral_count_and_labels(x, 1, top, pval, min_keep)
        labels = merge_weak_clusters(x, labels, 1, seconds, min_cluster_size, min_speaker_seconds,
                                     threshold, merge_ratio, ratio_min_size)
        if coherence is not None:
            # The parts a split leaves apart stay apart: the cosine merge above reads its
            # threshold off the whole file's floor, and one channel shared by many voices
            # (a call-in show's phone lines) would join them again.
            # Coherence is read above the file's floor too (a shared phone line lifts every
            # similarity) once the first pass has heard several voices; a monologue's floor
            # is its own voice, so a single first cluster is judged on the raw scale.
            many = int(labels.max()) > 0
            labels = _split_while_distinct(x, labels, coherence, pval, min_keep, max_auto, min_split_size,
                                           rejoin_ratio, floor if many else 0.0)
            labels = merge_weak_clusters(x, labels, 1, seconds, min_cluster_size, min_speaker_seconds,
                                         None)
        k = int(labels.max()) + 1
        if hi is not None and k > hi:
            labels = merge_weak_clusters(x, labels, hi, merge_ratio=-np.inf)  # the most alike pair first
        elif k < lo:
            labels = _split_to(x, labels, lo, pval, min_keep)
    k = int(labels.max()) + 1
    return Clustering(labels, centroids_of(x, labels, k))


def _bisect(x: np.ndarray, pval: float, min_keep: int, max_parts: int) -> np.ndarray:
    """Spectral partition of one cluster's members into 2..max_parts parts (eigengap)."""
    n = len(x)
    _, labels, _ = spectral_count_and_labels(x, 2, max(2, min(max_parts, n - 1)), pval, min(min_keep, n - 1))
    return labels


def nearest_similarity(x: np.ndarray, chunk: int = 512) -> np.ndarray:
    """[N]: each embedding's cosine similarity to its nearest other embedding."""
    xf = np.asarray(x, np.float32)
    out = np.empty(len(x))
    for a in range(0, len(x), chunk):
        sim = xf[a : a + chunk] @ xf.T
        sim[np.arange(len(sim)), np.arange(a, a + len(sim))] = -np.inf
        out[a : a + chunk] = sim.max(axis=1) if len(x) > 1 else 1.0
    return out


def _split_while_distinct(x: np.ndarray, labels: np.ndarray, coherence: float, pval: float, min_keep: int,
                          max_parts: int, min_size: int, rejoin: float | None = None,
                          floor: float = 0.0) -> np.ndarray:
    """Split (spectrally, eigengap count) every cluster that is not one voice, and its
    parts again, until each is: a cluster is one voice when the mean similarity of its
    members is at least ``coherence`` times their mean similarity to their nearest
    neighbour (what one voice's embeddings show here, channel and noise included), both
    measured above ``floor`` (the file's 5th-percentile similarity: what different voices
    on one phone line still share; 0 on the raw scale).

    The global eigengap reads the count among the first ``max_parts`` eigenvalues, and
    with many speakers who each say little (a town hall: 60 people, ~5 embeddings each)
    the pruned graph joins their voices into a few large components whose members share
    little. A cluster of one voice is coherent and stays whole, so meetings of a few
    people keep the global eigengap's partition; parts of one parent at least ``rejoin``
    alike (``linkage_ratio``) are joined again.
    """
    nn = nearest_similarity(x)
    labels = np.unique(labels, return_inverse=True)[1].astype(np.int64)
    out = np.full(len(x), -1, np.int64)
    nxt = 0
    for parent in range(int(labels.max()) + 1):
        members = np.flatnonzero(labels == parent)
        leaves = _leaves(x, members, nn, coherence, pval, min_keep, max_parts, min_size, floor)
        if rejoin is not None and leaves.max() > 0:
            # Parts of one voice that the recursion left apart (a long monologue whose nearest
            # neighbours are unusually close) are as alike as each is inside: join them again.
            leaves = merge_weak_clusters(x[members], leaves, 1, merge_ratio=rejoin)
        out[members] = leaves + nxt
        nxt += int(leaves.max()) + 1
    return out


def _leaves(x: np.ndarray, members: np.ndarray, nn: np.ndarray, coherence: float, pval: float, min_keep: int,
            max_parts: int, min_size: int, floor: float = 0.0) -> np.ndarray:
    """Labels (0..) of ``members`` after splitting recursively while parts are incoherent."""
    out = np.full(len(members), -1, np.int64)
    todo = [np.arange(len(members))]  # positions in ``members``
    nxt = 0
    while todo:
        pos = todo.pop()
        idx = members[pos]
        n = len(idx)
        split = None
        if n >= min_size:
            xs = x[idx]
            s = xs.sum(axis=0)
            inside = (float(s @ s) - n) / (n * (n - 1))
            if inside - floor < coherence * (float(nn[idx].mean()) - floor):
                split = np.arange(n) % 2 if n == 2 else _bisect(xs, pval, min_keep, max_parts)
        if split is None or split.max() == 0:
            out[pos] = nxt
            nxt += 1
        else:
            todo.extend(pos[split == c] for c in range(int(split.max()) + 1))
    return out


def _split_to(x: np.ndarray, labels: np.ndarray, lo: int, pval: float, min_keep: int) -> np.ndarray:
    """Split clusters until there are ``lo``: a hint above what the voices support. Each
    step takes, among every cluster's spectral bisection, the one whose two halves are
    least alike (``linkage_ratio``): a quiet voice absorbed by another comes out first."""
    labels = np.unique(labels, return_inverse=True)[1].astype(np.int64)
    while int(labels.max()) + 1 < lo:
        k = int(labels.max()) + 1
        best: tuple[float, np.ndarray, np.ndarray] | None = None
        for c in range(k):
            idx = np.flatnonzero(labels == c)
            if len(idx) < 2:
                continue
            halves = np.arange(len(idx)) % 2 if len(idx) == 2 else _bisect(x[idx], pval, min_keep, 2)
            if halves.max() == 0:
                continue
            r = float(linkage_ratio(x[idx], halves, 2)[0, 1])
            if best is None or r < best[0]:
                best = (r, idx, halves)
        if best is None:
            break  # every cluster is a single embedding: nothing left to split
        labels[best[1][best[2] > 0]] = k
    return labels
