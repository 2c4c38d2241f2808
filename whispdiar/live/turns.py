"""Speaker changes inside one utterance, from segmentation-3.0.

People answer each other without a pause the VAD would call the end of an utterance
(pyannote's sample: 23 s of talk with no 0.5 s silence). The segmentation model hears
who speaks in each 17 ms frame of a 10 s window; where the dominant local speaker
changes and both sides last at least ``min_turn`` seconds, the utterance is cut, and
each part gets its own embedding, speaker and line.
"""

from __future__ import annotations

import numpy as np

from ..diarization.segmentation import FRAME_STEP, NUM_FRAMES, WINDOW_SAMPLES, Segmenter, frame_center
from .utterances import Utterance

MIN_TURN = 1.0  # s: shorter runs of one local speaker join their neighbours


def dominant(activity: np.ndarray) -> np.ndarray:
    """[F, 3] activity -> [F] local speaker per frame (-1: nobody); in overlap the
    speaker already talking keeps the frame."""
    out = np.full(len(activity), -1, np.int64)
    prev = -1
    for i, a in enumerate(activity):
        on = np.flatnonzero(a)
        if len(on):
            prev = prev if prev in on else int(on[0])
            out[i] = prev
    return out


def runs(labels: np.ndarray, min_frames: int) -> list[tuple[int, int, int]]:
    """(first frame, end frame, label) runs of speech; silence goes to the speaker before
    it, runs shorter than ``min_frames`` to the longer neighbour."""
    lab = labels.copy()
    for i in range(1, len(lab)):  # silence belongs to whoever spoke last
        if lab[i] < 0:
            lab[i] = lab[i - 1]
    first = np.flatnonzero(lab >= 0)
    if not len(first):
        return []
    lab[: first[0]] = lab[first[0]]
    out: list[list[int]] = []
    for i, v in enumerate(lab):
        if out and out[-1][2] == v:
            out[-1][1] = i + 1
        else:
            out.append([i, i + 1, int(v)])
    while len(out) > 1:
        short = min(range(len(out)), key=lambda k: out[k][1] - out[k][0])
        if out[short][1] - out[short][0] >= min_frames:
            break
        k = short
        left = out[k - 1] if k > 0 else None
        right = out[k + 1] if k + 1 < len(out) else None
        into = left if right is None or (left is not None and left[1] - left[0] >= right[1] - right[0]) else right
        into[0], into[1] = min(into[0], out[k][0]), max(into[1], out[k][1])
        del out[k]
        merged: list[list[int]] = []
        for r in out:
            if merged and merged[-1][2] == r[2]:
                merged[-1][1] = r[1]
            else:
                merged.append(r)
        out = merged
    return [(a, b, c) for a, b, c in out]


def change_points(segmenter: Segmenter, samples: np.ndarray, min_turn: float = MIN_TURN) -> list[float]:
    """Seconds into ``samples`` (at most one 10 s window is read) where the speaker
    changes, each side of every change holding at least ``min_turn`` s."""
    if len(samples) < 2 * min_turn * 16000:
        return []
    n = min(len(samples), WINDOW_SAMPLES)
    window = np.zeros((1, WINDOW_SAMPLES), np.float32)
    window[0, :n] = samples[:n]  # utterances are at most ~10 s (EndpointConfig.max_seconds)
    activity = segmenter(window)[0]
    frames = min(NUM_FRAMES, int(n / WINDOW_SAMPLES * NUM_FRAMES))
    parts = runs(dominant(activity[:frames]), int(round(min_turn / FRAME_STEP)))
    return [float(frame_center(a)) for a, _, _ in parts[1:]]


def split_at_changes(segmenter: Segmenter, u: Utterance, min_turn: float = MIN_TURN) -> list[Utterance]:
    """``u`` cut at its speaker changes (``[u]`` when one speaker holds it)."""
    cuts = change_points(segmenter, u.samples, min_turn)
    if not cuts:
        return [u]
    out: list[Utterance] = []
    bounds = [0.0, *cuts, u.duration]
    for k, (a, b) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        i, j = int(a * 16000), int(b * 16000)
        pa, pb = int(a / 0.032), int(np.ceil(b / 0.032))
        out.append(Utterance(u.index * 100 + k, u.start + a, u.start + b, u.samples[i:j], u.probs[pa:pb], u.final))
    return out
