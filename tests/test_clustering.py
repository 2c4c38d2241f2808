"""Clustering on synthetic embeddings: counts, hints, small clusters, assignment."""

from __future__ import annotations

import numpy as np
import pytest

from whispdiar.clustering import cluster_embeddings, constrained_assignment
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
    c = cluster_embeddings(x)
    assert c.num_clusters == k
    assert same_partition(c.labels, truth)
    assert c.centroids.shape == (k, x.shape[1])
    np.testing.assert_allclose(np.linalg.norm(c.centroids, axis=1), 1.0, rtol=1e-5)


def test_num_speakers_forces_count():
    x, _ = blobs(3)
    assert cluster_embeddings(x, num_speakers=2).num_clusters == 2
    assert cluster_embeddings(x, num_speakers=5).num_clusters == 5
    assert cluster_embeddings(x, num_speakers=1).num_clusters == 1


def test_min_max_speakers_bound_count():
    x, _ = blobs(4)
    assert cluster_embeddings(x, max_speakers=2).num_clusters == 2
    assert cluster_embeddings(x, min_speakers=6).num_clusters == 6
    assert cluster_embeddings(x, min_speakers=2, max_speakers=6).num_clusters == 4  # within bounds: untouched


def test_small_cluster_joins_nearest_large():
    x, _ = blobs(2, n=30)
    rng = np.random.default_rng(1)
    outlier = rng.standard_normal((1, x.shape[1])).astype(np.float32)  # a lone, far embedding
    c = cluster_embeddings(np.vstack([x, outlier]))
    assert c.num_clusters == 2
    assert c.labels[-1] in (0, 1)


def test_degenerate_inputs():
    assert cluster_embeddings(np.zeros((0, 192), np.float32)).num_clusters == 0
    one = cluster_embeddings(np.ones((1, 192), np.float32))
    assert one.num_clusters == 1 and one.labels.tolist() == [0]
    with pytest.raises(UsageError):
        cluster_embeddings(np.ones((3, 4)), min_speakers=3, max_speakers=2)
    with pytest.raises(UsageError):
        cluster_embeddings(np.ones((3, 4)), num_speakers=0)


def test_constrained_assignment_keeps_window_speakers_apart():
    # Window 0: both local speakers prefer cluster 0; the second must take cluster 1.
    scores = np.array([[[0.9, 0.1], [0.8, 0.7], [0.0, 0.0]],
                       [[0.2, 0.9], [0.0, 0.0], [0.0, 0.0]]], np.float32)
    active = np.array([[True, True, False], [True, False, False]])
    out = constrained_assignment(scores, active)
    assert out.tolist() == [[0, 1, -1], [1, -1, -1]]
