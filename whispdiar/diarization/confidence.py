"""How likely a hypothesised speaker is a distinct, real voice (the ``conf`` of a speaker).

Two features, both available after diarization:

- separation: 1 - the highest cosine between this speaker's centroid and another
  speaker's (a split of one voice sits close to its twin; a lone speaker gets 1);
- speech: log(1 + seconds of speech in its turns) (a 2-s "speaker" is often a stray).

A logistic model maps them to a probability. Its coefficients were fitted on the dev
sets (AMI excerpts, room, telephone and clean simulated meetings) with the label "this
speaker maps to a reference speaker that no larger hypothesised speaker already took"
(``scripts/tune_diarization.py --confidence``, leave-one-set-out; reliability table in
docs/diarization.md).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from ..records import Turn

# Fitted on all four dev sets (docs/diarization.md, 2026-12-01, after the average-linkage
# merge: the speakers users now get).
COEF_SEPARATION = 6.35
COEF_SPEECH = 2.20
INTERCEPT = -6.08


def features(centroids: dict[str, np.ndarray], turns: Iterable[Turn]) -> dict[str, tuple[float, float]]:
    """label -> (separation, log1p(speech seconds))."""
    labels = sorted(centroids)
    speech = dict.fromkeys(labels, 0.0)
    for t in turns:
        if t.speaker in speech:
            speech[t.speaker] += t.end - t.start
    out = {}
    if not labels:
        return out
    c = np.stack([np.asarray(centroids[lab], np.float64) for lab in labels])
    c /= np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-12)
    sim = c @ c.T
    np.fill_diagonal(sim, -1.0)
    for i, lab in enumerate(labels):
        nearest = float(sim[i].max()) if len(labels) > 1 else 0.0
        out[lab] = (1.0 - nearest, float(np.log1p(speech[lab])))
    return out


def probability(separation: float, log_speech: float, coef: tuple[float, float, float] | None = None) -> float:
    a, b, c = coef if coef is not None else (COEF_SEPARATION, COEF_SPEECH, INTERCEPT)
    return float(1.0 / (1.0 + np.exp(-(a * separation + b * log_speech + c))))


def speaker_confidence(centroids: dict[str, np.ndarray], turns: Iterable[Turn]) -> dict[str, float]:
    """label -> probability in [0, 1] that this speaker is a distinct real voice."""
    return {lab: probability(*f) for lab, f in features(centroids, turns).items()}
