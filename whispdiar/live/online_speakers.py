"""Who is speaking, decided utterance by utterance as they arrive.

Each utterance has one CAM++ embedding (its speech frames). It joins the speaker whose
running centroid is most similar, if that similarity reaches ``join``; else, if an
enrolled voiceprint not yet heard matches it (``name``, the naming threshold), a speaker
with that name starts; else, with enough speech for a trustworthy embedding
(``min_new_seconds``), a new anonymous "Speaker N" starts; a shorter utterance goes to
the nearest speaker without moving its centroid.

Labels are stable by construction: a label is never handed to another speaker (numbers
are not reused, and names of enrolled people are never used for "Speaker N"), and a
speaker keeps the label it was shown with, with one exception, announced: an anonymous
speaker whose centroid, once it holds ``promote_seconds`` of speech, matches an enrolled
voiceprint not yet heard takes that name for its next lines (its first utterance may
have been too short or noisy to be recognised). "Speaker N" is then retired. Other
mistakes are corrected later, by the instant tier's global re-clustering (``finalize``),
never by silently relabelling lines already printed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from ..diarization.clustering import l2_normalize
from ..speakers.naming import DEFAULT_THRESHOLD, Voiceprint

# Calibrated on the LibriSpeech meetings (docs/live.md): utterance embeddings of one reader
# against that reader's running centroid are mostly above 0.5, other readers' below 0.3.
DEFAULT_JOIN = 0.5
MIN_NEW_SECONDS = 1.0  # speech an utterance needs to start a new anonymous speaker
MIN_UPDATE_SECONDS = 0.8  # ... and to move a centroid
PRINT_WEIGHT = 3.0  # an enrolled speaker's centroid starts as this many utterances' worth of voiceprint
PROMOTE_SECONDS = 3.0  # speech an anonymous speaker needs before its centroid is matched to voiceprints


@dataclass(slots=True)
class OnlineSpeaker:
    label: str  # internal, SPEAKER_00, SPEAKER_01, ... in order of appearance
    name: str  # shown: the enrolled name or "Speaker N"
    total: np.ndarray  # weighted sum of unit embeddings
    weight: float = 0.0
    seconds: float = 0.0
    enrolled: bool = False
    similarity: float | None = None  # best voiceprint similarity of a member (enrolled only)

    @property
    def centroid(self) -> np.ndarray:
        return l2_normalize(self.total).astype(np.float32)


@dataclass(frozen=True, slots=True)
class Assignment:
    speaker: OnlineSpeaker
    similarity: float | None  # to the speaker's centroid (or voiceprint) when decided
    new: bool  # the speaker started with this utterance
    renamed_from: str | None = None  # the anonymous name it had until this utterance showed who it is


@dataclass(slots=True)
class OnlineSpeakers:
    voiceprints: Mapping[str, Voiceprint] = field(default_factory=dict)
    join: float = DEFAULT_JOIN
    name_threshold: float = DEFAULT_THRESHOLD
    min_new_seconds: float = MIN_NEW_SECONDS
    min_update_seconds: float = MIN_UPDATE_SECONDS
    promote_seconds: float = PROMOTE_SECONDS
    speakers: list[OnlineSpeaker] = field(default_factory=list)
    _next_anonymous: int = 1
    _last: OnlineSpeaker | None = None  # the speaker of the latest utterance

    @property
    def reserved(self) -> set[str]:
        return {n.casefold() for n in self.voiceprints}

    def assign(self, embedding: np.ndarray | None, seconds: float) -> Assignment:
        """The speaker of one utterance (``embedding`` None: too little speech to embed)."""
        if embedding is None or not np.all(np.isfinite(embedding)):
            if self._last is not None:  # nothing to go by: the most recent speaker keeps the floor
                return Assignment(self._last, None, False)
            return Assignment(self._new_anonymous(None, seconds), None, True)
        x = l2_normalize(np.asarray(embedding, np.float64)).astype(np.float32)
        best, best_sim = None, -1.0
        for s in self.speakers:
            sim = float(x @ s.centroid)
            if sim > best_sim:
                best, best_sim = s, sim
        if best is not None and best_sim >= self.join:
            self._add(best, x, seconds)
            return Assignment(best, best_sim, False, self._promote(best))
        prints = self._unheard()
        if prints:
            sims = [float(x @ v.centroid) for v in prints]
            i = int(np.argmax(sims))
            if sims[i] >= self.name_threshold:
                sp = self._start(prints[i].name, prints[i].centroid * PRINT_WEIGHT, PRINT_WEIGHT, enrolled=True)
                sp.similarity = sims[i]
                self._add(sp, x, seconds)
                return Assignment(sp, sims[i], True)
        if best is not None and seconds < self.min_new_seconds:
            self._last = best
            return Assignment(best, best_sim, False)
        return Assignment(self._new_anonymous(x, seconds), None, True)

    # -- internals
    def _unheard(self) -> list[Voiceprint]:
        heard = {s.name for s in self.speakers if s.enrolled}
        return [v for v in self.voiceprints.values() if v.name not in heard]

    def _promote(self, s: OnlineSpeaker) -> str | None:
        """Name an anonymous speaker after the enrolled voice its centroid matches; returns
        the name it had (None: unchanged)."""
        prints = self._unheard()
        if s.enrolled or s.weight < self.promote_seconds or not prints:
            return None
        c = s.centroid
        sims = [float(c @ v.centroid) for v in prints]
        i = int(np.argmax(sims))
        if sims[i] < self.name_threshold:
            return None
        old, s.name, s.enrolled, s.similarity = s.name, prints[i].name, True, sims[i]
        return old

    def _add(self, s: OnlineSpeaker, x: np.ndarray, seconds: float) -> None:
        if seconds >= self.min_update_seconds:
            s.total = s.total + x * seconds  # longer utterances weigh more: better embeddings
            s.weight += seconds
        s.seconds += seconds
        self._last = s

    def _start(self, name: str, total: np.ndarray, weight: float, enrolled: bool) -> OnlineSpeaker:
        sp = OnlineSpeaker(f"SPEAKER_{len(self.speakers):02d}", name, np.asarray(total, np.float32), weight,
                           enrolled=enrolled)
        self.speakers.append(sp)
        return sp

    def _new_anonymous(self, x: np.ndarray | None, seconds: float) -> OnlineSpeaker:
        taken = self.reserved | {s.name.casefold() for s in self.speakers}
        while f"speaker {self._next_anonymous}" in taken:
            self._next_anonymous += 1
        name = f"Speaker {self._next_anonymous}"
        self._next_anonymous += 1
        dim = len(x) if x is not None else 192
        sp = self._start(name, np.zeros(dim, np.float32), 0.0, enrolled=False)
        if x is not None:
            sp.total = x * max(seconds, 1e-3)
            sp.weight = seconds
        sp.seconds += seconds
        self._last = sp
        return sp


def next_anonymous_names(used: Iterable[str], reserved: Iterable[str]) -> Iterable[str]:
    """"Speaker N" names not in ``used`` or ``reserved``, in order (N = 1, 2, ...)."""
    taken = {u.casefold() for u in used} | {r.casefold() for r in reserved}
    n = 1
    while True:
        if f"speaker {n}" not in taken:
            yield f"Speaker {n}"
        n += 1
