"""Spectral clustering of speaker embeddings with an eigengap estimate of the count.

The recipe that 3D-Speaker uses for CAM++ embeddings (``speakerlab/process/cluster.py``,
after SpeechBrain's spectral clustering and Ning et al., "A spectral clustering approach
to speaker diarization", ICSLP 2006; the pruning is from Park et al., "Auto-tuning
spectral clustering for speaker diarization using normalized maximum eigengap", 2019):

1. cosine affinity between the L2-normalised embeddings;
2. row pruning: each row keeps its ``pval`` largest entries (at least ``min_keep``), the
   rest are set to 0, so only near neighbours stay connected and the graph falls apart
   along speaker boundaries; then symmetrise, ``(A + A.T) / 2``, and zero the diagonal;
3. unnormalised Laplacian ``L = D - A``;
4. the smallest eigenvalues of ``L``: a graph with k loosely connected parts has k
   eigenvalues near 0 and then a jump, so the count is the position of the largest gap
   among the first ``max_speakers + 1`` eigenvalues (clamped to the hint range);
5. k-means on the first k eigenvectors.

Own code on ``scipy.linalg.eigh`` (only the first ``max_k + 1`` eigenpairs are computed,
``subset_by_index``) rather than ``sklearn.cluster.SpectralClustering``: sklearn's class
takes the number of clusters as an input and does not expose the eigenvalues, and the
eigengap is the point here; its affinity options (RBF, k-NN connectivity) are not the
pruned cosine affinity either.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import eigh


def pruned_affinity(x: np.ndarray, pval: float, min_keep: int) -> np.ndarray:
    """[N, N] symmetric cosine affinity where each row kept only its nearest neighbours."""
    n = len(x)
    sim = np.clip(x @ x.T, 0.0, None)
    keep = min(n, max(min_keep, int(np.ceil(pval * n))))
    if keep < n:
        # the (n - keep) smallest entries of each row -> 0
        low = np.argpartition(sim, n - keep, axis=1)[:, : n - keep]
        np.put_along_axis(sim, low, 0.0, axis=1)
    a = 0.5 * (sim + sim.T)
    np.fill_diagonal(a, 0.0)
    return a


def spectral_count_and_labels(
    x: np.ndarray, lo: int, hi: int, pval: float = 0.02, min_keep: int = 6, seed: int = 0,
) -> tuple[int, np.ndarray, np.ndarray]:
    """(k, labels [N], the first eigenvalues) for L2-normalised ``x``; k in [lo, hi].

    ``lo == hi`` gives that count exactly (a hint); else the eigengap decides.
    """
    n = len(x)
    hi = max(lo, min(hi, n))
    a = pruned_affinity(x, pval, min_keep)
    lap = np.diag(a.sum(axis=1)) - a
    m = min(n - 1, hi)  # eigenpairs 0..m
    vals, vecs = eigh(lap, subset_by_index=[0, m])
    if lo == hi:
        k = lo
    else:
        gaps = np.diff(vals)  # gaps[i] = vals[i+1] - vals[i]: a cut after i + 1 clusters
        k = int(np.argmax(gaps[lo - 1 : hi])) + lo
    if k <= 1:
        return 1, np.zeros(n, np.int64), vals
    return k, kmeans(vecs[:, :k], k, seed=seed), vals


def kmeans(x: np.ndarray, k: int, n_init: int = 10, iters: int = 100, seed: int = 0) -> np.ndarray:
    """Labels of the best (lowest inertia) of ``n_init`` k-means++ runs; deterministic.

    Own few lines instead of sklearn's KMeans: on these tiny inputs (N <= a few thousand
    points in k <= 15 dimensions) sklearn's OpenMP set-up cost ~50 ms per run, 10x the work.
    """
    rng = np.random.default_rng(seed)
    n = len(x)
    best, best_inertia = np.zeros(n, np.int64), np.inf
    for _ in range(n_init):
        cents = [x[rng.integers(n)]]
        d2 = np.sum((x - cents[0]) ** 2, axis=1)
        for _ in range(1, k):
            p = d2 / d2.sum() if d2.sum() > 0 else np.full(n, 1.0 / n)
            cents.append(x[rng.choice(n, p=p)])
            d2 = np.minimum(d2, np.sum((x - cents[-1]) ** 2, axis=1))
        c = np.array(cents)
        labels = np.full(n, -1, np.int64)
        for _ in range(iters):
            dist = np.sum(x**2, axis=1)[:, None] - 2 * x @ c.T + np.sum(c**2, axis=1)[None, :]
            new = np.argmin(dist, axis=1)
            if np.array_equal(new, labels):
                break
            labels = new
            for j in range(k):
                mine = labels == j
                if mine.any():
                    c[j] = x[mine].mean(axis=0)
        inertia = float(np.sum((x - c[labels]) ** 2))
        if inertia < best_inertia:
            best, best_inertia = labels, inertia
    return best
