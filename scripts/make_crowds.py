#!/usr/bin/env python3
"""Dev sets for the speaker count outside 2-10 speakers: crowds, monologues and long interviews.

Builds from the LibriSpeech readers in ../shared/data, deterministically from ``--seed`` (same
seed, same files, bit for bit), folders in the format of scripts/make_rooms.py (``<uri>.wav``
16 kHz mono 16-bit, ``<uri>.rttm``, ``<uri>.uem``, ``manifest.json``), so that
``scripts/bench_diarization.py`` and ``scripts/tune_diarization.py`` read them with
``--dataset NAME=FOLDER``:

  crowd      10 files, 15-100 speakers, ~88 min in all. Town hall (each speaks once: their
             whole utterance, 1-16 s of speech) with 15, 30, 60 and 100 readers; news
             compilation (each speaks once: a 2.5-6 s soundbite of it) with 30, 60 and 100;
             panel: 6 recurring voices (a chair and 5 panellists, each one-utterance reader's
             phrases spread over several short turns) and 20 one-off questioners, 1-3
             questions taken at a time; call-in show: a host (a multi-utterance reader) between
             15 or 30 one-off callers who come through a telephone line (a third of them on a
             speakerphone in a room), interjecting and backchannelling, the host clean or in a
             room. Pauses 0.3-1.5 s, a few barge-ins. Each speaker-count bucket (~15, ~30, ~60,
             ~100) has a clean file and a room or phone one. In a room the talkers come to 8
             places (microphone stands, seats; a panel: its 6 seats and 2 floor microphones).
  mono       one reader (lecture, audiobook): 1, 2, 5, 10, 30 and 60 min; clean, one room, a
             new room per 2-5 min stretch (sessions), or a phone recording; exactly one
             speaker in each RTTM
  interview  two readers, 60, 40 and 30 min: alternating turns of 5-60 s (lognormal, medians
             9 s interviewer and 25 s guest), listener backchannels, 15 % barge-ins; clean,
             both in one room, or the guest on a phone line (the interviewer dry)
  crowd-long only with ``--long-crowd-minutes M`` (own folder OUT/crowd-long, so the crowd set
             keeps its size): one M-minute meeting of a chair and 99 recurring voices
             (Zipf-like shares, everyone heard early), in a room (chair's seat and 12 floor
             microphones) with fan noise; for the memory benchmark of a 3-hour file

Renders: "room" is make_rooms.simulate_room (a shoebox room, a mono RIR per place, direct path
aligned to the reference) plus fan or street noise (make_rooms.make_noise, in 120 s chunks)
at 10-25 dB SNR (call-in studio, interview: 15-30 / 15-25 dB); "phone" is make_rooms.telephone
on the whole mix (60 s chunks), or per turn for callers and phone guests. Levels -32 to -20
dBFS of active speech, talkers +-4 dB (interview +-3 dB) around it. Files are built in
float32 in memory: the 60-min files peak at ~0.75 GB, a 180-min crowd-long at ~1.2 GB.

Readers. Only the 5 test-other readers (10 utterances, 49-68 s of speech each) have enough
speech to talk for long. The female reader and one male reader (which one comes from the
seed) make ``mono`` (alternating over its files), two male readers ``interview`` (all three
files are the same pair, who interviews whom alternating; a same-sex pair, the harder case),
and the last one is the call-in host (and the chair of crowd-long) in ``crowd``. The 191
train-clean-100 readers (one utterance each) are the crowds: the 187 with at least 2 s of
speech, least-used first within the set, so files of the set share readers (each 100-speaker
file uses more than half of them) but no reader is in two of mono, interview and crowd.

Reuse (a limitation). With ~1 min of distinct speech per long-talking reader, long files
repeat it: the 60-min monologue reads each of its reader's 10 utterances ~45 times, an
interview guest ~30 times. The first reading of an utterance in a file is as recorded; every
later one is perturbed: resampled by one factor in 1 +- 0.02 (``--speed``; speed and pitch
together, like a tape), gain +-6 dB, other pauses (pace 0.7-1.5 per 2-5 min stretch), and in
"rooms" files another room per stretch. Recurring crowd voices (chair, panellists, host,
crowd-long) get a milder 1 +- 0.03 and +-3 dB: they have only their one 10-16 s utterance,
and the panel's and the host's are reused 1.5-4 times. The words and prosody still repeat
exactly. The default was 0.06 at first: a 6 % formant shift is at the edge of what speaker
embeddings call the same voice (Kaldi's 0.9/1.1 speed perturbation makes "new speakers"), and
with it the same parts of one monologue were 0.52-0.69 alike (linkage ratio) against ~0.9 for
one natural voice; 2 % keeps the reuse from being exact without inventing voices. ``reuse``
in the manifest gives per reader the readings, perturbed readings and factor range.

References come from placement, never from a VAD: make_rooms.cut_utterance's energy-gated
phrase spans, as make_rooms does (see its docstring). Per file the manifest gives pattern,
render, duration, speakers, readers (reader, sex, label, role, speech seconds, files, reuse),
overlap share, turns, backchannels, barge-ins, room, noise, telephone.

    python scripts/make_crowds.py --out /tmp/whispdiar-bench/crowds --seed 26
    python scripts/make_crowds.py --out /tmp/small --seed 1 --sets mono,interview --max-minutes 3

Seeds: the reader split comes from (seed, 98) over all readers, a file from (seed, set, file)
(crowd readers: least used in the set's earlier files), so one set built alone is the same as
built with the others. One line per file (uri, speakers, minutes, render) goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy import signal

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_rooms as mr  # noqa: E402

SR, HOP = mr.SR, mr.HOP
Piece, Voice = mr.Piece, mr.Voice
SET_IDS = {"crowd": 10, "mono": 11, "interview": 12, "crowd-long": 13}  # make_rooms uses 0-2
MIN_CROWD_SPEECH = 2.0  # s; readers with less are no crowd talkers (2 of the 191)
SPEED_DEN = 400  # resampling factors are k / 400
Gained = tuple[Piece, float]  # a piece and its linear gain


# ---------------------------------------------------------------- reused speech
def resample_piece(p: Piece, factor: float) -> Piece:
    """``p`` played ``factor`` times faster (speed and pitch, as a tape), by polyphase resampling."""
    up, down = SPEED_DEN, int(round(SPEED_DEN * factor))
    y = signal.resample_poly(p.audio, up, down).astype(np.float32)
    a, b = (min(len(y), int(round(s * up / down))) for s in p.speech)
    return Piece(y, (a, b), p.source)


@dataclass
class Supply:
    """A reader's speech in reading order: utterance after utterance (shuffled each cycle), each
    utterance's phrases in order. An utterance's first reading is as recorded, later readings
    are resampled by one factor in 1 +- ``speed`` with a gain in +-``gain_db``; backchannel
    word groups likewise."""

    voice: Voice
    rng: np.random.Generator
    speed: float
    gain_db: float
    level_db: float = 0.0
    utts: list[list[Piece]] = field(init=False)
    current: list[Gained] = field(init=False, default_factory=list)
    order: list[int] = field(init=False, default_factory=list)
    uses: list[int] = field(init=False)
    short_uses: list[int] = field(init=False)
    readings: int = 0
    perturbed: int = 0
    factors: list[float] = field(init=False, default_factory=list)
    last: int = -1

    def __post_init__(self) -> None:
        by_src: dict[str, list[Piece]] = {}
        for p in self.voice.phrases:
            by_src.setdefault(p.source, []).append(p)
        self.utts = list(by_src.values())
        self.uses = [0] * len(self.utts)
        self.short_uses = [0] * len(self.voice.shorts)

    def _vary(self, used: int) -> tuple[float, float]:
        """(resampling factor, gain) for a use; the first use is unchanged."""
        g = 10 ** (self.level_db / 20)
        if not used:
            return 1.0, g
        f = int(round(SPEED_DEN * self.rng.uniform(1 - self.speed, 1 + self.speed))) / SPEED_DEN
        self.factors.append(f)
        return f, g * 10 ** (self.rng.uniform(-self.gain_db, self.gain_db) / 20)

    def _new_reading(self) -> None:
        if not self.order:
            self.order = [int(i) for i in self.rng.permutation(len(self.utts))]
            if self.order[0] == self.last and len(self.order) > 1:  # no utterance twice in a row
                self.order[0], self.order[1] = self.order[1], self.order[0]
        u = self.last = self.order.pop(0)
        f, g = self._vary(self.uses[u])
        self.perturbed += self.uses[u] > 0
        self.uses[u] += 1
        self.readings += 1
        self.current = [(p if f == 1.0 else resample_piece(p, f), g) for p in self.utts[u]]

    def reading(self) -> list[Gained]:
        """The rest of the current reading, or a new one."""
        if not self.current:
            self._new_reading()
        out, self.current = self.current, []
        return out

    def take(self, seconds: float) -> list[Gained]:
        """The next phrases (readings continue across calls) until their speech reaches ``seconds``."""
        out: list[Gained] = []
        dur = 0.0
        while not out or dur < seconds:
            if not self.current:
                self._new_reading()
            p, g = self.current.pop(0)
            out.append((p, g))
            dur += (p.speech[1] - p.speech[0]) / SR
        return out

    def bite(self, seconds: float) -> list[Gained]:
        """A soundbite: consecutive phrases of the first reading with >= ``seconds`` of speech
        (the whole utterance if it is shorter), starting at a random phrase."""
        self._new_reading()
        ps = self.current
        lens = np.array([(p.speech[1] - p.speech[0]) / SR for p, _ in ps])
        suffix = np.cumsum(lens[::-1])[::-1]
        starts = np.flatnonzero(suffix >= min(seconds, suffix[0]) - 1e-9)
        i = int(self.rng.choice(starts))
        j = i + int(np.searchsorted(np.cumsum(lens[i:]), seconds)) + 1
        self.current = []
        return ps[i:j]

    def short(self) -> Gained:
        """A backchannel word group (random), perturbed after its first use."""
        i = int(self.rng.integers(len(self.voice.shorts)))
        f, g = self._vary(self.short_uses[i])
        self.short_uses[i] += 1
        p = self.voice.shorts[i]
        return (p if f == 1.0 else resample_piece(p, f)), g

    def stats(self) -> dict:
        return {"readings": self.readings, "perturbed_readings": self.perturbed,
                "distinct_utterances": sum(u > 0 for u in self.uses), "shorts": sum(self.short_uses),
                "speed": [min(self.factors), max(self.factors)] if self.factors else None}


# ---------------------------------------------------------------- mixing
@dataclass
class Channel:
    """How a talker reaches the recording: through a room impulse response and/or a phone line."""

    rir: np.ndarray | None = None
    phone: tuple[bool, float] | None = None  # (mu-law, line SNR dB)


class Scene:
    """The float32 output, mixed turn by turn as turns are placed (no placed audio is kept),
    and the reference: the gated speech span of every placed piece.

    With ``seconds`` the file has that length and speech stops 0.3 s before its end; without,
    it grows until the pattern ends (or ``max_seconds``) and ``finish`` trims it."""

    def __init__(self, k: int, rng: np.random.Generator, seconds: float | None = None,
                 max_seconds: float | None = None) -> None:
        self.rng = rng
        self.fixed = seconds is not None
        lim = seconds if seconds is not None else max_seconds
        self.limit = int(lim * SR) if lim else None
        self.x = np.zeros(self.limit if self.fixed else 60 * SR, np.float32)
        self.channels = [Channel() for _ in range(k)]
        self.busy: list[list[tuple[int, int]]] = [[] for _ in range(k)]
        self.spans: list[tuple[int, int, int]] = []  # (talker, start, end) samples
        self.end = 0  # end of the latest speech of a turn
        self.last: tuple[int, int] = (0, 0)  # the latest turn's last phrase
        self.last_talker = -1
        self.full = False  # a turn hit the length limit
        self.backchannels = self.barge_ins = self.turns = 0

    def _add(self, at: int, y: np.ndarray) -> None:
        if not self.fixed and at + len(y) > len(self.x):
            grown = np.zeros(max(at + len(y), 2 * len(self.x)), np.float32)
            grown[: len(self.x)] = self.x
            self.x = grown
        y = y[: max(0, len(self.x) - at)]
        self.x[at:at + len(y)] += y

    def turn(self, talker: int, at: int, pieces: list[Gained], pauses: tuple[float, float] = (0.15, 0.5),
             backchannel: bool = False) -> tuple[int, int] | None:
        """Place ``pieces`` back to back, the first one's speech at sample ``at``, the next after a
        pause; moved past the talker's own speech (a backchannel that would overlap it is
        dropped). Returns the (start, end) of the placed speech, None if nothing fitted."""
        placed: list[tuple[int, Piece, float]] = []
        pos = max(0, at)
        for p, g in pieces:
            n = p.speech[1] - p.speech[0]
            for s, e in sorted(self.busy[talker]):
                if s < pos + n and e > pos:
                    if backchannel:
                        return None
                    pos = e + int(0.2 * SR)
            if self.limit is not None and pos + n > self.limit - int(0.3 * SR):
                self.full = not backchannel
                break
            start = pos - p.speech[0]
            if start < 0:  # only at the very start of a file: drop the lead-in
                p = Piece(p.audio[-start:], (p.speech[0] + start, p.speech[1] + start), p.source)
                start = 0
            placed.append((start, p, g))
            pos = start + p.speech[1] + int(self.rng.uniform(*pauses) * SR)
        if not placed:
            return None
        lo = placed[0][0]
        y = np.zeros(max(s + len(p.audio) for s, p, _ in placed) - lo, np.float32)
        for s, p, g in placed:
            y[s - lo:s - lo + len(p.audio)] += g * p.audio
        ch = self.channels[talker]
        if ch.rir is not None:
            y = signal.fftconvolve(y, ch.rir).astype(np.float32)
        if ch.phone is not None:
            y = mr.telephone(y, self.rng, *ch.phone)
        self._add(lo, y)
        spans = [(s + p.speech[0], s + p.speech[1]) for s, p, _ in placed]
        self.busy[talker] += spans
        self.spans += [(talker, a, b) for a, b in spans]
        a, b = spans[0][0], spans[-1][1]
        if backchannel:
            self.backchannels += 1
        else:
            if self.turns and a < self.end and talker != self.last_talker:
                self.barge_ins += 1
            self.turns += 1
            self.end, self.last, self.last_talker = max(self.end, b), spans[-1], talker
        return a, b

    def follow(self, barge: float, gap: tuple[float, float] = (0.3, 1.5)) -> int:
        """Where the next turn starts: a pause after the latest one, or with probability ``barge``
        0.3-1.2 s (at most half its last phrase) before it ends."""
        if not self.turns:
            return int(self.rng.uniform(0.3, 1.0) * SR)
        if self.rng.random() < barge:
            a, b = self.last
            return b - int(min(self.rng.uniform(0.3, 1.2), 0.5 * (b - a) / SR) * SR)
        return self.end + int(self.rng.uniform(*gap) * SR)

    def reference(self, labels: list[str]) -> list[tuple[float, float, str]]:
        """(start, end, label) seconds per talker, its touching or overlapping spans merged."""
        return mr.merged_reference(self.spans, labels)


def frame_power(x: np.ndarray, block: int = 6000) -> np.ndarray:
    """Mean square per 10 ms frame, in blocks (no float64 copy of a long file)."""
    n = len(x) // HOP
    out = np.empty(n)
    for i in range(0, n, block):
        seg = x[i * HOP:min(n, i + block) * HOP].reshape(-1, HOP).astype(np.float64)
        out[i:i + len(seg)] = np.mean(seg**2, axis=1)
    return out


def add_noise(x: np.ndarray, kind: str, power: float, rng: np.random.Generator, chunk: float = 120.0,
              fade: float = 0.5) -> None:
    """make_rooms noise of ``power`` added in place, in chunks joined by power-preserving crossfades."""
    c, f = int(chunk * SR), int(fade * SR)
    ramp = np.sin(np.linspace(0, np.pi / 2, f)).astype(np.float32)
    pos = 0
    while pos < len(x):
        m = min(c + f, len(x) - pos)
        nz, _ = mr.make_noise(kind, m, rng, [])
        nz *= np.float32(np.sqrt(power / (np.mean(nz.astype(np.float64) ** 2) + 1e-20)))
        if pos:
            nz[:f] *= ramp[:m]
        if pos + m < len(x):
            nz[m - f:] *= ramp[::-1]
        x[pos:pos + m] += nz
        pos += c


def phone_line(x: np.ndarray, rng: np.random.Generator, mulaw: bool, line_snr_db: float, chunk: float = 60.0,
               margin: float = 0.5) -> np.ndarray:
    """make_rooms.telephone over a long file in chunks (even-sample bounds, so the 8 kHz phase
    stays; margins on both sides for the zero-phase filter, then dropped)."""
    c, mg = int(chunk * SR), int(margin * SR)
    out = np.empty_like(x)
    for pos in range(0, len(x), c):
        a, b = max(0, pos - mg), min(len(x), pos + c + mg)
        y = mr.telephone(x[a:b], rng, mulaw, line_snr_db)
        m = min(c, len(x) - pos)
        out[pos:pos + m] = y[pos - a:pos - a + m]
    return out


@dataclass
class Built:
    audio: np.ndarray
    turns: list[tuple[float, float, str]]
    info: dict


def finish(scene: Scene, voices: list[Voice], roles: list[str], supplies: list[Supply], rng: np.random.Generator,
           *, noise: str | None = None, snr_db: float | None = None, phone: tuple[bool, float] | None = None,
           level_dbfs: float = -26.0, extra: dict | None = None) -> Built:
    """Trim, add noise, pass through a phone line, set the level; the manifest entry."""
    if scene.fixed:
        n = len(scene.x)
    else:
        n = scene.end + int(rng.uniform(0.5, 1.5) * SR)
        n = min(n, scene.limit) if scene.limit else n
        scene._add(n, np.zeros(0, np.float32))
    x = scene.x[:n]
    labels = [f"spk{v.reader}" for v in voices]
    turns = scene.reference(labels)
    count = mr.speech_mask(turns, n)[: n // HOP]
    on = count > 0
    power = float(np.mean(frame_power(x)[on])) if on.any() else 1e-6
    if noise:
        assert snr_db is not None
        add_noise(x, noise, power / 10 ** (snr_db / 10), rng)
    if phone:
        x = phone_line(x, rng, *phone)
        power = float(np.mean(frame_power(x)[on])) if on.any() else 1e-6
    x *= np.float32(10 ** (level_dbfs / 20) / np.sqrt(power))
    peak = max(float(np.max(np.abs(x[i:i + 60 * SR]))) for i in range(0, n, 60 * SR))
    if peak > 0.99:
        x *= np.float32(0.99 / peak)
    talkers = sorted({t for t, _, _ in scene.spans})
    info = {
        "duration": round(n / SR, 3),
        "speakers": len(talkers),
        "readers": [{"reader": voices[i].reader, "sex": voices[i].sex, "label": labels[i], "role": roles[i],
                     "speech_seconds": round(sum(b - a for a, b, s in turns if s == labels[i]), 2),
                     "files": voices[i].files, "reuse": supplies[i].stats()} for i in talkers],
        "speech_seconds": round(float(np.sum(on) * HOP / SR), 2),
        "overlap_share": round(float(np.sum(count > 1) / max(1, np.sum(on))), 4),
        "turns": scene.turns,
        "backchannels": scene.backchannels,
        "barge_ins": scene.barge_ins,
        "noise": {"type": noise, "snr_db": round(snr_db, 1)} if noise and snr_db is not None else None,
        "telephone": {"band_hz": [300, 3400], "rate": 8000, "mulaw": phone[0],
                      "line_snr_db": round(phone[1], 1)} if phone else None,
        **(extra or {}),
    }
    return Built(x, turns, info)


def room_for(k: int, rng: np.random.Generator, rt60: tuple[float, float], distance: tuple[float, float],
             ) -> tuple[list[np.ndarray], dict]:
    """make_rooms.simulate_room, drawn again (same generator) if a talker fell outside a small room."""
    for attempt in range(5):
        try:
            rirs, _, info = mr.simulate_room(k, rng, rt60=rt60, distance=distance, noise_source=False)
            return rirs, asdict(info)
        except ValueError:
            if attempt == 4:
                raise
    raise AssertionError


def seat(scene: Scene, who: list[int], rirs: list[np.ndarray], rng: np.random.Generator) -> list[int]:
    """Put talkers ``who`` at random ones of the positions ``rirs``; their position indices."""
    pos = [int(rng.integers(len(rirs))) for _ in who]
    for i, j in zip(who, pos, strict=True):
        scene.channels[i].rir = rirs[j]
    return pos


def phone_draw(rng: np.random.Generator) -> tuple[bool, float]:
    return bool(rng.random() < 0.7), float(rng.uniform(28, 40))


# ---------------------------------------------------------------- patterns
def backchannels(scene: Scene, span: tuple[int, int] | None, listeners: list[int], supplies: list[Supply],
                 rate: float) -> None:
    """Poisson(rate per s) backchannels by ``listeners`` inside a turn longer than 2 s."""
    if span is None or not listeners or span[1] - span[0] < 2 * SR:
        return
    a, b = span
    rng = scene.rng
    for _ in range(rng.poisson(rate * (b - a) / SR)):
        j = listeners[int(rng.integers(len(listeners)))]
        p, g = supplies[j].short()
        scene.turn(j, int(rng.uniform(a + 0.5 * SR, b - 1.0 * SR)), [(p, g * 10 ** (rng.uniform(-4, 0) / 20))],
                   backchannel=True)


def town_hall(scene: Scene, supplies: list[Supply], bites: bool, barge: float = 0.08) -> None:
    """Each talker speaks once, in random order: the whole utterance, or a 2.5-6 s soundbite."""
    rng = scene.rng
    for i in rng.permutation(len(supplies)):
        s = supplies[i]
        pieces = s.bite(rng.uniform(2.5, 6)) if bites else s.reading()
        if scene.turn(int(i), scene.follow(barge), pieces) is None or scene.full:
            break


def panel(scene: Scene, supplies: list[Supply], n_panel: int) -> None:
    """A chair (0) and panellists (1..n_panel-1) recur, their utterance cut into several short
    turns; the other talkers each ask one question, 1-3 questions taken at a time."""
    rng = scene.rng

    def say(i: int, seconds: float, barge: float) -> tuple[int, int] | None:
        return scene.turn(i, scene.follow(barge), supplies[i].take(seconds))

    say(0, rng.uniform(4, 8), 0)
    for p in rng.permutation(np.arange(1, n_panel)):
        say(int(p), rng.uniform(2, 5), 0.1)  # introductions
    w = rng.dirichlet(np.ones(n_panel - 1)) * 0.7 + 0.3 / (n_panel - 1)
    questions = list(range(n_panel, len(supplies)))
    while questions and not scene.full:
        m = int(rng.integers(1, 4))
        batch, questions = questions[:m], questions[m:]
        if rng.random() < 0.6:
            say(0, rng.uniform(1, 3), 0.15)  # the chair takes questions
        for q in batch:
            scene.turn(q, scene.follow(0.1), supplies[q].bite(rng.uniform(3, 10)))
        prev = -1
        for _ in range(int(rng.integers(1, 3))):
            c = w.copy()
            if prev > 0:
                c[prev - 1] = 0
            p = 1 + int(rng.choice(n_panel - 1, p=c / c.sum()))
            span = say(p, float(np.clip(4 * np.exp(rng.normal(0, 0.5)), 1.5, 10)), 0.25)
            backchannels(scene, span, [i for i in range(n_panel) if i != p], supplies, 0.05)
            prev = p
    say(0, rng.uniform(3, 6), 0.1)


def call_in(scene: Scene, supplies: list[Supply]) -> None:
    """The host (0) opens, then introduces each caller, interjects between the parts of their
    call and backchannels during it; callers (1..) speak once, their utterance in 1-3 parts."""
    rng = scene.rng
    host = supplies[0]

    def say_host(seconds: float, barge: float) -> None:
        scene.turn(0, scene.follow(barge), host.take(seconds))

    say_host(rng.uniform(10, 20), 0)
    for c in range(1, len(supplies)):
        if scene.full:
            return
        say_host(rng.uniform(1.5, 4), 0.1)
        phrases = supplies[c].reading()
        m = min(len(phrases), int(rng.integers(1, 4)))
        cuts = sorted(rng.choice(np.arange(1, len(phrases)), size=m - 1, replace=False)) if m > 1 else []
        for j, part in enumerate(np.split(np.arange(len(phrases)), cuts)):
            if j:  # "mm, go on" or a phrase
                if rng.random() < 0.5:
                    scene.turn(0, scene.follow(0.2), [host.short()])
                else:
                    say_host(rng.uniform(0.5, 3), 0.2)
            span = scene.turn(c, scene.follow(0.1), [phrases[k] for k in part])
            backchannels(scene, span, [0], supplies, 0.06)
    say_host(rng.uniform(4, 10), 0.1)


def monologue(scene: Scene, supply: Supply, new_room=None) -> list[dict]:
    """Readings with in-reading pauses of 0.15-0.6 s and 0.5-1.8 s between readings (5 %: 3-8 s),
    both scaled per 2-5 min stretch by a pace of 0.7-1.5; ``new_room()`` gives each stretch a
    room. Returns the rooms' info."""
    rng = scene.rng
    rooms = []
    pos = int(rng.uniform(0.3, 1.0) * SR)
    stretch_end, pace = 0, 1.0
    while True:
        if pos >= stretch_end:
            stretch_end = pos + int(rng.uniform(120, 300) * SR)
            pace = float(rng.uniform(0.7, 1.5))
            if new_room is not None:
                rir, info = new_room()
                scene.channels[0].rir = rir
                rooms.append({"from_s": round(pos / SR, 1), "rt60_measured": info["rt60_measured"],
                              "nearest_mic_m": info["nearest_mic_m"][0], "dims": info["dims"]})
        span = scene.turn(0, pos, supply.reading(), pauses=(0.15 * pace, 0.6 * pace))
        if span is None or scene.full:
            return rooms
        pause = rng.uniform(3, 8) if rng.random() < 0.05 else pace * rng.uniform(0.5, 1.8)
        pos = span[1] + int(pause * SR)


def interview(scene: Scene, supplies: list[Supply]) -> None:
    """Alternating turns, interviewer (0) median 9 s, guest (1) median 25 s, each 5-60 s; the
    listener backchannels 0.04-0.1 times a second; 15 % barge-ins."""
    rng = scene.rng
    rate = float(rng.uniform(0.04, 0.1))
    who = 0
    while not scene.full:
        target = float(np.clip((9 if who == 0 else 25) * np.exp(rng.normal(0, 0.5)), 5, 60))
        span = scene.turn(who, scene.follow(0.15, (0.2, 1.2)), supplies[who].take(target))
        if span is None:
            return
        backchannels(scene, span, [1 - who], supplies, rate)
        who = 1 - who


def meeting_long(scene: Scene, supplies: list[Supply]) -> None:
    """A chair (0) takes every ~4th turn; the others Zipf-like shares; all are heard early on."""
    rng = scene.rng
    k = len(supplies)
    w = 1 / np.arange(1, k) ** 0.8
    w = rng.permutation(w / w.sum())
    heard = np.zeros(k, bool)
    prev = -1
    while not scene.full:
        if prev != 0 and rng.random() < 0.25:
            spk = 0
        elif not heard[1:].all() and rng.random() < 0.5:
            spk = int(rng.choice(np.flatnonzero(~heard[1:]))) + 1
        else:
            c = w.copy()
            if prev > 0:
                c[prev - 1] = 0
            spk = 1 + int(rng.choice(k - 1, p=c / c.sum()))
        target = float(np.clip(5 * np.exp(rng.normal(0, 0.8)), 1, 40))
        span = scene.turn(spk, scene.follow(0.15), supplies[spk].take(target))
        if span is None:
            return
        heard[spk] = True
        others = [i for i in np.flatnonzero(heard) if i != spk]
        backchannels(scene, span, [int(i) for i in rng.permutation(others)[:5]], supplies, 0.03)
        prev = spk


# ---------------------------------------------------------------- sets
@dataclass
class CrowdFile:
    pattern: str  # town-hall, news, panel, call-in
    people: int  # one-off talkers (plus 6 recurring for a panel, 1 host for a call-in)
    render: str  # clean, room, phone


CROWD_PLAN = [
    CrowdFile("town-hall", 15, "clean"), CrowdFile("call-in", 15, "room"),
    CrowdFile("town-hall", 30, "room"), CrowdFile("news", 30, "clean"),
    CrowdFile("panel", 20, "room"), CrowdFile("call-in", 30, "clean"),
    CrowdFile("town-hall", 60, "clean"), CrowdFile("news", 60, "phone"),
    CrowdFile("town-hall", 100, "room"), CrowdFile("news", 100, "clean"),
]
MONO_PLAN = [(1, "clean"), (2, "room"), (5, "phone"), (10, "rooms"), (30, "clean"), (60, "rooms")]
INTERVIEW_PLAN = [(60, "clean"), (40, "room"), (30, "phone-guest")]
CROWD_REUSE = (0.03, 3.0)  # recurring crowd voices: speed +-, gain dB +-


def split_readers(voices: dict[str, Voice], rng: np.random.Generator) -> dict[str, list[str]]:
    """The multi-utterance readers: female first, then the males in seeded order; mono gets the
    first two, interview the next two, the crowd host the last. The crowds: one-utterance readers."""
    multi = [r for r, v in voices.items() if len(v.files) > 1]
    if len(multi) < 5:
        raise SystemExit(f"need 5 readers with many utterances, found {len(multi)}")
    multi = sorted((multi[i] for i in rng.permutation(len(multi))), key=lambda r: voices[r].sex != "F")
    crowd = [r for r, v in voices.items() if len(v.files) == 1 and v.seconds >= MIN_CROWD_SPEECH]
    return {"mono": sorted(multi[:2], key=int), "interview": sorted(multi[2:4], key=int),
            "host": multi[4:5], "crowd": crowd}


def write_file(out: Path, uri: str, b: Built) -> None:
    sf.write(out / f"{uri}.wav", b.audio, SR, subtype="PCM_16")
    (out / f"{uri}.rttm").write_text("".join(
        f"SPEAKER {uri} 1 {a:.3f} {e - a:.3f} <NA> <NA> {s} <NA> <NA>\n" for a, e, s in b.turns))
    (out / f"{uri}.uem").write_text(f"{uri} 1 0.000 {b.info['duration']:.3f}\n")


def build_crowd_file(index: int, spec: CrowdFile, pool: list[Voice], host: Voice, usage: dict[str, int],
                     rng: np.random.Generator, max_minutes: float | None) -> tuple[str, Built]:
    """One crowd file; ``usage`` (reader -> files so far) picks the least-used readers first."""
    order = sorted(pool, key=lambda v: (usage[v.reader], rng.random()))
    if spec.pattern == "panel":  # the recurring voices need some speech to cut into turns
        rec = [v for v in order if v.seconds >= 12 and len(v.phrases) >= 2][:6]
        voices = rec + [v for v in order if v not in rec][: spec.people]
        roles = ["chair"] + ["panellist"] * 5 + ["questioner"] * spec.people
    elif spec.pattern == "call-in":
        voices = [host] + order[: spec.people]
        roles = ["host"] + ["caller"] * spec.people
    else:
        voices = order[: spec.people]
        roles = ["speaker"] * spec.people
    for v in voices:
        usage[v.reader] = usage.get(v.reader, 0) + 1
    k = len(voices)
    levels = rng.uniform(-4, 4, k)
    supplies = [Supply(v, rng, *CROWD_REUSE, level_db=float(g)) for v, g in zip(voices, levels, strict=True)]
    scene = Scene(k, rng, max_seconds=max_minutes * 60 if max_minutes else None)
    extra: dict = {"pattern": spec.pattern, "render": spec.render}
    noise = snr = phone = None
    kind = ("fan", "street")[int(rng.integers(2))]
    if spec.pattern == "call-in":
        callers = []
        for i in range(1, k):  # every caller on a phone line, a third of them from a room
            ch = scene.channels[i]
            ch.phone = phone_draw(rng)
            rt = None
            if rng.random() < 1 / 3:
                rirs, info = room_for(1, rng, (0.2, 0.6), (0.3, 1.5))
                ch.rir, rt = rirs[0], info["rt60_measured"]
            callers.append({"reader": voices[i].reader, "mulaw": ch.phone[0], "line_snr_db": round(ch.phone[1], 1),
                            "room_rt60": rt})
        extra["callers"] = callers
        if spec.render == "room":
            rirs, extra["room"] = room_for(1, rng, (0.3, 0.8), (0.5, 2.0))
            scene.channels[0].rir = rirs[0]
            noise, snr = kind, float(rng.uniform(15, 30))
        call_in(scene, supplies)
    else:
        if spec.render == "room":  # talkers come to 8 places (stands, seats); a panel: 6 seats, 2 floor mics
            rirs, extra["room"] = room_for(8, rng, (0.3, 0.8), (0.7, 4.0))
            if spec.pattern == "panel":
                for i in range(6):
                    scene.channels[i].rir = rirs[i]
                extra["positions"] = list(range(6)) + [6 + j for j in seat(scene, list(range(6, k)), rirs[6:], rng)]
            else:
                extra["positions"] = seat(scene, list(range(k)), rirs, rng)
            noise, snr = kind, float(rng.uniform(10, 25))
        elif spec.render == "phone":
            phone = phone_draw(rng)
        if spec.pattern == "panel":
            panel(scene, supplies, 6)
        else:
            town_hall(scene, supplies, bites=spec.pattern == "news")
    b = finish(scene, voices, roles, supplies, rng, noise=noise, snr_db=snr, phone=phone,
               level_dbfs=float(rng.uniform(-32, -20)), extra=extra)
    return f"crowd{index:02d}-{spec.pattern.replace('-', '')}{b.info['speakers']:03d}-{spec.render}", b


def build_mono_file(minutes: float, render: str, voice: Voice, rng: np.random.Generator, speed: float
                    ) -> Built:
    supply = Supply(voice, rng, speed, 6.0)
    scene = Scene(1, rng, seconds=minutes * 60)
    extra: dict = {"pattern": "monologue", "render": render, "minutes": minutes}
    noise = snr = phone = None
    new_room = None
    if render == "room":
        rirs, extra["room"] = room_for(1, rng, (0.3, 0.9), (0.5, 3.0))
        scene.channels[0].rir = rirs[0]
    elif render == "rooms":
        def new_room() -> tuple[np.ndarray, dict]:
            rirs, info = room_for(1, rng, (0.2, 0.8), (0.3, 2.5))
            return rirs[0], info
    elif render == "phone":
        phone = phone_draw(rng)
    if render in ("room", "rooms"):
        noise, snr = ("fan", "street")[int(rng.integers(2))], float(rng.uniform(10, 25))
    rooms = monologue(scene, supply, new_room)
    if rooms:
        extra["rooms_per_stretch"] = rooms
    return finish(scene, [voice], ["reader"], [supply], rng, noise=noise, snr_db=snr, phone=phone,
                  level_dbfs=float(rng.uniform(-32, -20)), extra=extra)


def build_interview_file(minutes: float, render: str, voices: list[Voice], rng: np.random.Generator,
                         speed: float) -> Built:
    levels = rng.uniform(-3, 3, 2)
    supplies = [Supply(v, rng, speed, 6.0, level_db=float(g)) for v, g in zip(voices, levels, strict=True)]
    scene = Scene(2, rng, seconds=minutes * 60)
    extra: dict = {"pattern": "interview", "render": render, "minutes": minutes}
    noise = snr = None
    if render == "room":
        rirs, extra["room"] = room_for(2, rng, (0.2, 0.6), (0.5, 2.0))
        for ch, h in zip(scene.channels, rirs, strict=True):
            ch.rir = h
        noise, snr = ("fan", "street")[int(rng.integers(2))], float(rng.uniform(15, 25))
    elif render == "phone-guest":  # the interviewer in the studio (dry), the guest on the line
        scene.channels[1].phone = phone_draw(rng)
        extra["guest_line"] = {"mulaw": scene.channels[1].phone[0],
                               "line_snr_db": round(scene.channels[1].phone[1], 1)}
    interview(scene, supplies)
    return finish(scene, voices, ["interviewer", "guest"], supplies, rng, noise=noise, snr_db=snr,
                  level_dbfs=float(rng.uniform(-32, -20)), extra=extra)


def build_set(name: str, voices: dict[str, Voice], split: dict[str, list[str]], out: Path, seed: int,
              max_minutes: float | None, speed: float, long_minutes: float = 0.0) -> list[dict]:
    out.mkdir(parents=True, exist_ok=True)
    sid = SET_IDS[name]
    entries = []

    def emit(i: int, make) -> None:
        t0 = time.perf_counter()
        frng = np.random.default_rng([seed, sid, i + 1])
        uri, b = make(frng)
        write_file(out, uri, b)
        entries.append({"uri": uri, **b.info})
        print(f"{name}/{uri}: {b.info['speakers']} spk, {b.info['duration'] / 60:.1f} min, {b.info['render']}, "
              f"overlap {100 * b.info['overlap_share']:.1f} %, {time.perf_counter() - t0:.1f} s",
              file=sys.stderr, flush=True)

    if name == "crowd":
        pool = [voices[r] for r in split["crowd"]]
        host = voices[split["host"][0]]
        usage = {v.reader: 0 for v in pool}
        for i, spec in enumerate(CROWD_PLAN):
            emit(i, lambda r, spec=spec, i=i: build_crowd_file(i, spec, pool, host, usage, r, max_minutes))
    elif name == "mono":
        readers = [voices[r] for r in split["mono"]]
        for i, (m, render) in enumerate(MONO_PLAN):
            m = min(m, max_minutes) if max_minutes else m
            v = readers[i % 2]
            emit(i, lambda r, m=m, render=render, v=v, i=i: (
                f"mono{i:02d}-{m:g}min-{render}", build_mono_file(m, render, v, r, speed)))
    elif name == "interview":
        pair = [voices[r] for r in split["interview"]]
        for i, (m, render) in enumerate(INTERVIEW_PLAN):
            m = min(m, max_minutes) if max_minutes else m
            who = pair if i % 2 == 0 else pair[::-1]  # who interviews whom alternates
            emit(i, lambda r, m=m, render=render, who=who, i=i: (
                f"interview{i:02d}-{m:g}min-{render}", build_interview_file(m, render, who, r, speed)))
    elif name == "crowd-long":
        pool = [voices[r] for r in split["crowd"]]
        host = voices[split["host"][0]]

        def make_long(r: np.random.Generator) -> tuple[str, Built]:
            people = [host] + [pool[j] for j in sorted(r.choice(len(pool), size=min(99, len(pool)),
                                                                replace=False))]
            sup = [Supply(v, r, *CROWD_REUSE, level_db=float(g)) for v, g in zip(people, r.uniform(-4, 4,
                                                                                          len(people)), strict=True)]
            scene = Scene(len(people), r, seconds=long_minutes * 60)
            rirs, room = room_for(13, r, (0.3, 0.7), (0.7, 4.0))  # the chair's seat and 12 floor mics
            scene.channels[0].rir = rirs[0]
            room["positions"] = [0] + [1 + j for j in seat(scene, list(range(1, len(people))), rirs[1:], r)]
            meeting_long(scene, sup)
            b = finish(scene, people, ["chair"] + ["member"] * (len(people) - 1), sup, r, noise="fan",
                       snr_db=float(r.uniform(15, 25)), level_dbfs=float(r.uniform(-32, -20)),
                       extra={"pattern": "meeting", "render": "room", "room": room})
            return "crowd-long", b

        emit(0, make_long)
    return entries


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="writes OUT/<set>/ for each set")
    ap.add_argument("--seed", type=int, default=26)
    ap.add_argument("--sets", default="crowd,mono,interview", help="which sets to write (the split uses all)")
    ap.add_argument("--max-minutes", type=float, default=None,
                    help="no file longer: mono/interview lengths capped, crowd files stop placing talkers")
    ap.add_argument("--speed", type=float, default=0.02,
                    help="mono/interview: reused speech resampled by a factor in 1 +- SPEED")
    ap.add_argument("--long-crowd-minutes", type=float, default=0.0,
                    help="also write OUT/crowd-long/: one file of M minutes, ~100 recurring speakers")
    args = ap.parse_args()
    sets = [s for s in args.sets.split(",") if s]
    if unknown := set(sets) - set(SET_IDS):
        raise SystemExit(f"unknown sets: {sorted(unknown)}")
    if args.long_crowd_minutes > 0 and "crowd-long" not in sets:
        sets.append("crowd-long")
    if "crowd-long" in sets and args.long_crowd_minutes <= 0:
        raise SystemExit("crowd-long needs --long-crowd-minutes M")

    t0 = time.perf_counter()
    sexes = mr.read_sexes()
    voices = {r: mr.load_voice(r, sexes.get(r, "?"), fs) for r, fs in mr.discover_readers().items()}
    split = split_readers(voices, np.random.default_rng([args.seed, 98]))
    print(f"{len(voices)} readers loaded in {time.perf_counter() - t0:.1f} s; "
          + ", ".join(f"{k}: {len(v)}" for k, v in split.items()), file=sys.stderr, flush=True)
    total = 0.0
    for name in sets:
        entries = build_set(name, voices, split, args.out / name, args.seed, args.max_minutes, args.speed,
                            args.long_crowd_minutes)
        readers = split["crowd"] + split["host"] if name.startswith("crowd") else split[name]
        manifest = {
            "set": name, "seed": args.seed, "max_minutes": args.max_minutes, "speed": args.speed,
            "readers": [{"reader": r, "sex": voices[r].sex, "speech_seconds": round(voices[r].seconds, 1)}
                        for r in readers],
            "split": split,
            "reference_rule": "placed phrase from its first to its last 10 ms frame above the energy gate "
                              "(max(peak - 35 dB, floor + 30 % of peak-floor)); pauses < 0.3 s inside count",
            "reuse_rule": "first reading of an utterance as recorded; later ones resampled by one factor in "
                          f"1 +- {args.speed} (mono, interview) or 1 +- {CROWD_REUSE[0]} (crowd), gain +- 6 / "
                          f"{CROWD_REUSE[1]} dB",
            "files": entries,
        }
        (args.out / name / "manifest.json").write_text(json.dumps(manifest, indent=1))
        mins = sum(e["duration"] for e in entries) / 60
        total += mins
        print(f"{name}: {len(entries)} files, {mins:.1f} min", file=sys.stderr, flush=True)
    print(f"{total:.1f} min in {time.perf_counter() - t0:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
