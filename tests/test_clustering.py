"""Clustering on synthetic embeddings: counts, hints, small clusters, assignment."""

from __future__ import annotations

import numpy as np
import pytest

from whispdiar.diarization.clustering import (
    constrained_assignment,
    l2_normalize,
    merge_weak_clusters,
    spectral_cluster_embeddings,
)
from whispdiar.errors import UsageError


def blobs(k: int, n: int = 20, dim: int = 192, spread: float = 0.25, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """k well-separated directions on the unit sphere, n noisy embeddings each."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((k, dim))
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    x = np.repeat(centers, n, axis=0) + spread * rng.standard_normal((k * n, dim)) / np.sqrt(dim)
    return x.astype(np.float32), np.repeat(np.arange(k), n)


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    return len(set(zip(a.tolist(), b.tolist(), strict=True))) == len(set(a.tolist())) == len(set(b.tolist()))


@pytest.mark.parametrize("k", [1, 2, 3, 5, 8])
def test_separated_blobs_give_right_count(k: int):
    x, truth = blobs(k)
    c = spectral_cluster_embeddings(x)
    assert c.num_clusters == k
    assert same_partition(c.labels, truth)
    assert c.centroids.shape == (k, x.shape[1])
    np.testing.assert_allclose(np.linalg.norm(c.centroids, axis=1), 1.0, rtol=1e-5)


def test_bad_hints_are_refused():
    with pytest.raises(UsageError):
        spectral_cluster_embeddings(np.ones((3, 4)), min_speakers=3, max_speakers=2)
    with pytest.raises(UsageError):
        spectral_cluster_embeddings(np.ones((3, 4)), num_speakers=0)


def test_constrained_assignment_keeps_window_speakers_apart():
    # Window 0: both local speakers prefer cluster 0; the second must take cluster 1.
    scores = np.array([[[0.9, 0.1], [0.8, 0.7], [0.0, 0.0]],
                       [[0.2, 0.9], [0.0, 0.0], [0.0, 0.0]]], np.float32)
    active = np.array([[True, True, False], [True, False, False]])
    out = constrained_assignment(scores, active)
    assert out.tolist() == [[0, 1, -1], [1, -1, -1]]


# ------------------------------------------------------------ spectral (the default)
def speakers(k: int, seed: int, spread: float, outliers: int = 0, dim: int = 192) -> tuple[np.ndarray, np.ndarray]:
    """k voices of 6-59 embeddings each (2 s of speech apiece) around random unit
    directions; ``spread`` 0.5 / 1.0 / 1.3 puts members at cosine ~0.9 / 0.7 / 0.6 to
    their centre (CAM++ on clean / far-field speech); ``outliers`` lone 0.3-s embeddings."""
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((k, dim))
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    sizes = rng.integers(6, 60, size=k)
    x = np.concatenate([c[i] + spread * rng.standard_normal((s, dim)) / np.sqrt(dim) for i, s in enumerate(sizes)])
    seconds = np.full(len(x), 2.0)
    if outliers:
        x = np.vstack([x, rng.standard_normal((outliers, dim))])
        seconds = np.concatenate([seconds, np.full(outliers, 0.3)])
    return x.astype(np.float32), seconds


@pytest.mark.parametrize("k", range(1, 11))
@pytest.mark.parametrize("spread", [0.5, 1.0, 1.3])
def test_eigengap_counts_speakers_of_any_size_and_spread(k: int, spread: float):
    for seed in range(3):
        x, seconds = speakers(k, seed, spread, outliers=3 if seed == 2 else 0)
        c = spectral_cluster_embeddings(x, seconds)
        assert c.num_clusters == k, (seed, c.num_clusters)
        np.testing.assert_allclose(np.linalg.norm(c.centroids, axis=1), 1.0, rtol=1e-5)


def test_spectral_partition_matches_the_voices():
    x, _ = blobs(4, n=15)
    truth = np.repeat(np.arange(4), 15)
    assert same_partition(spectral_cluster_embeddings(x).labels, truth)


def test_too_little_speech_is_not_a_speaker():
    # two voices, plus a third "voice" of two embeddings with 0.4 s each (0.8 s < 1 s)
    x, _ = blobs(3, n=20)
    x = np.vstack([x[:40], x[40:42]])
    seconds = np.concatenate([np.full(40, 2.0), [0.4, 0.4]])
    assert spectral_cluster_embeddings(x, seconds).num_clusters == 2
    assert spectral_cluster_embeddings(x, np.full(42, 2.0)).num_clusters == 3


def test_spectral_hints_are_exact():
    x, seconds = speakers(4, 0, 1.0)
    for k in (1, 2, 4, 6, 9):
        assert spectral_cluster_embeddings(x, seconds, num_speakers=k).num_clusters == k
    assert spectral_cluster_embeddings(x, seconds, max_speakers=2).num_clusters == 2
    assert spectral_cluster_embeddings(x, seconds, min_speakers=6).num_clusters == 6
    assert spectral_cluster_embeddings(x, seconds, min_speakers=2, max_speakers=6).num_clusters == 4


def test_spectral_degenerate_inputs():
    assert spectral_cluster_embeddings(np.zeros((0, 192), np.float32)).num_clusters == 0
    assert spectral_cluster_embeddings(np.ones((1, 192), np.float32)).labels.tolist() == [0]
    x, _ = blobs(2, n=2)
    assert spectral_cluster_embeddings(x).num_clusters in (1, 2)


def test_merge_weak_clusters_stops_at_the_minimum():
    x, _ = blobs(3, n=10)
    labels = np.repeat(np.arange(3), 10)
    out = merge_weak_clusters(l2_normalize(x), labels, lo=3, seconds=np.full(30, 0.01), min_seconds=1.0)
    assert len(np.unique(out)) == 3
    out = merge_weak_clusters(l2_normalize(x), labels, lo=1, seconds=np.full(30, 0.01), min_seconds=1.0)
    assert len(np.unique(out)) == 1


def test_spectral_on_3000_embeddings_is_fast():
    import time

    x, _ = crowd([300] * 10, seed=0)
    t0 = time.perf_counter()
    c = spectral_cluster_embeddings(x, np.full(len(x), 2.0))
    assert time.perf_counter() - t0 < 20.0
    assert c.num_clusters == 10


def test_merge_reads_the_members_not_the_centroids():
    """Two voices whose centres are fairly alike (cosine 0.5), 40 embeddings each at
    cosine ~0.7 to their centre: their centroids are ~0.5 apart (the centroid cosine of
    big clusters tends to the cosine of the centres), but any two members of different
    voices are at ~0.25 and two of one voice at ~0.5. The merge at 0.45 keeps the voices
    apart and joins a voice split in two, whatever the clusters' sizes."""
    rng = np.random.default_rng(3)
    dim = 192
    a = rng.standard_normal(dim)
    a /= np.linalg.norm(a)
    b = rng.standard_normal(dim)
    b -= (b @ a) * a
    b = 0.5 * a + np.sqrt(1 - 0.25) * b / np.linalg.norm(b)

    def voice(c: np.ndarray, n: int) -> np.ndarray:
        return l2_normalize(c + rng.standard_normal((n, dim)) / np.sqrt(dim))

    x = np.vstack([voice(a, 40), voice(b, 40)])
    two = np.repeat([0, 1], 40)
    assert len(np.unique(merge_weak_clusters(x, two, lo=1, merge_cosine=0.45))) == 2
    cents = np.stack([l2_normalize(x[two == c].mean(axis=0)) for c in (0, 1)])
    assert float(cents[0] @ cents[1]) >= 0.45  # the centroids alone would have joined them
    split = np.concatenate([np.repeat([0, 2], [36, 4]), np.ones(40, np.int64)])  # voice a as 36 + 4
    out = merge_weak_clusters(x, split, lo=1, merge_cosine=0.45)
    assert same_partition(out, two)


# ------------------------------------------------- any number of speakers (1 to 100+)
def crowd(sizes: list[int], seed: int, within: float = 0.8, shared: float = 0.1,
          dim: int = 192) -> tuple[np.ndarray, np.ndarray]:
    """Voices with ``sizes`` embeddings each, members at cosine ``within`` to their centre,
    the centres sharing a common direction (cosine ``shared`` between voices, as CAM++
    voices of one recording share a channel). The defaults are what the dev crowds show
    (2026-12-08): two embeddings of one voice at cosine ~0.64-0.73, of two voices ~0.06-0.11;
    a phone line: ~0.54 and ~0.39 (within 0.73, shared 0.4)."""
    rng = np.random.default_rng(seed)
    common = rng.standard_normal(dim)
    common /= np.linalg.norm(common)
    own = rng.standard_normal((len(sizes), dim))
    own /= np.linalg.norm(own, axis=1, keepdims=True)
    centres = np.sqrt(shared) * common + np.sqrt(1 - shared) * own
    sigma = np.sqrt((1 / within**2 - 1) / dim)
    x = np.concatenate([centres[i] + sigma * rng.standard_normal((s, dim)) for i, s in enumerate(sizes)])
    return l2_normalize(x).astype(np.float32), np.repeat(np.arange(len(sizes)), sizes)


def _within(found: int, true: int, tolerance: float) -> bool:
    return abs(found - true) <= max(1, round(tolerance * true))


@pytest.mark.parametrize("k", [1, 2, 5, 20, 60, 100])
def test_count_holds_from_one_to_a_hundred_voices(k: int):
    # Many voices with 3-6 embeddings each (the one-off questioners of a town hall: a 13-s
    # question gives ~8 on the dev crowds), a few with many: the global eigengap alone found
    # 2 of 60 here. A voice with a single embedding (under ~4 s) cannot be told from a stray
    # window of another voice and joins its nearest (docs/diarization.md).
    for seed in range(2):
        rng = np.random.default_rng(100 + seed)
        sizes = (rng.integers(3, 7, size=k) if k >= 20 else rng.integers(20, 80, size=k)).tolist()
        if k >= 20:
            sizes[:3] = [40, 25, 12]  # a panel that speaks a lot among the one-off voices
        x, _ = crowd(sizes, seed)
        found = spectral_cluster_embeddings(x).num_clusters
        assert _within(found, k, 0.15), (k, seed, found)


def test_one_voice_stays_one_however_long():
    for n, within in ((10, 0.8), (400, 0.8), (1500, 0.7)):  # 25 s .. an hour, a clean or a far voice
        x, _ = crowd([n], seed=n, within=within)
        assert spectral_cluster_embeddings(x).num_clusters == 1, n


def test_unequal_voices_and_outliers():
    # one voice talks most of the time, one a little, one says a single sentence; two lone
    # outlier embeddings (a cough, a door) are no speakers of their own.
    x, truth = crowd([300, 30, 5], seed=7)
    rng = np.random.default_rng(8)
    out = l2_normalize(rng.standard_normal((2, x.shape[1]))).astype(np.float32)
    seconds = np.concatenate([np.full(len(x), 2.0), [0.3, 0.3]])
    c = spectral_cluster_embeddings(np.vstack([x, out]), seconds)
    assert c.num_clusters == 3 and same_partition(c.labels[: len(x)], truth)


@pytest.mark.parametrize("k", [3, 9, 30])
def test_a_right_hint_never_changes_the_result(k: int):
    # The hinted run narrows the same method: when the unhinted one already found k, a hint
    # of k (or a range holding k) returns that very partition.
    sizes = [40] * k if k < 20 else [5] * k
    x, _ = crowd(sizes, seed=k)
    free = spectral_cluster_embeddings(x)
    assert free.num_clusters == k
    for hint in ({"num_speakers": k}, {"min_speakers": max(1, k - 2), "max_speakers": k + 2},
                 {"max_speakers": k}, {"min_speakers": k}):
        hinted = spectral_cluster_embeddings(x, **hint)
        assert np.array_equal(hinted.labels, free.labels), hint


def test_hints_outside_the_found_count_merge_or_split_the_same_partition():
    x, truth = crowd([40] * 6, seed=11)
    free = spectral_cluster_embeddings(x)
    assert same_partition(free.labels, truth)
    fewer = spectral_cluster_embeddings(x, num_speakers=4)
    more = spectral_cluster_embeddings(x, num_speakers=8)
    assert fewer.num_clusters == 4 and more.num_clusters == 8
    # Merging joins whole voices; splitting divides voices: no voice is torn across clusters
    # by a hint below the count, none mixed with another by a hint above it.
    assert all(len(set(fewer.labels[truth == v].tolist())) == 1 for v in range(6))
    assert all(len(set(truth[more.labels == c].tolist())) == 1 for c in range(8))


def test_ten_thousand_embeddings_cluster_in_seconds():
    import time

    rng = np.random.default_rng(5)
    sizes = rng.integers(20, 200, size=100).tolist()
    x, _ = crowd(sizes, seed=5)
    x = x[:2000]  # the diarizer clusters at most max_cluster_embeddings (2000); 10 000 is timed in make bench
    t0 = time.perf_counter()
    c = spectral_cluster_embeddings(x, np.full(len(x), 2.0))
    assert time.perf_counter() - t0 < 30.0  # generous for a loaded CI machine; the bench states the figure
    assert c.num_clusters > 10


@pytest.mark.parametrize("k", [20, 60])
def test_many_voices_on_one_phone_line_are_not_merged(k: int):
    # A phone line lifts every similarity (voices share the band and the codec): clusters
    # that mix voices look coherent on the raw scale. Read above the file's floor, the count
    # stays near the truth. These voices look like the dev crowd's 60 news voices on a phone
    # line (pairs of voices ~0.45 median, nearest neighbours ~0.83; 19 of 60 found on the raw
    # scale, 41 above the floor); on the raw scale 18 of 60 here.
    rng = np.random.default_rng(5)
    sizes = rng.integers(3, 7, size=k).tolist()
    x, _ = crowd(sizes, seed=3, within=0.9, shared=0.55)
    found = spectral_cluster_embeddings(x).num_clusters
    assert k / 2 <= found <= 2 * k, (k, found)


def test_one_voice_on_a_phone_line_stays_one():
    for n in (40, 600):
        x, _ = crowd([n], seed=n, within=0.9, shared=0.55)
        assert spectral_cluster_embeddings(x).num_clusters == 1, n
