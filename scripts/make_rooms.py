#!/usr/bin/env python3
"""Development sets that look like users' recordings: LibriSpeech meetings in simulated rooms.

Builds named sets from the LibriSpeech readers in ../shared/data, deterministically from
``--seed`` (same seed, same files, bit for bit):

  clean   meetings of 2-8 readers, no room and no noise
  room    the same kind of meetings rendered in shoebox rooms (pyroomacoustics image
          source method, RT60 0.2-0.8 s measured on the RIRs, talkers 0.5-4 m from one
          or two microphones; with two microphones the output is their average, as a
          conference unit summing its capsules would give), plus babble, fan or
          street-like noise at 5-20 dB SNR
  phone   calls of 2-4 readers (half of them first rendered in a room: RT60 0.2-0.6 s,
          0.5-2.5 m, noise at 10-25 dB SNR) through a
          telephone channel: 300-3400 Hz band, 8 kHz, mostly mu-law, a little line
          noise, then back to 16 kHz

Each set is a folder of ``<uri>.wav`` (16 kHz mono, 16-bit), ``<uri>.rttm``, ``<uri>.uem``
and one ``manifest.json`` (per file: readers, speakers, duration, RT60, microphone
distances, SNR, noise type, telephone or not, overlap share; per set: the readers it
may use). That is what ``scripts/bench_diarization.py --dataset NAME=FOLDER`` reads.

Readers are split once, from the seed, into disjoint pools (stratified by sex): one per
set plus a babble pool whose voices are only ever noise. So a set can be held out in
leave-one-set-out cross-validation without its voices appearing in the others.

References come from placement, not from a VAD. Every utterance is cut into phrases at
its natural pauses by an energy gate (10 ms frames; gate = max(peak - 35 dB,
floor + 30 % of the peak-to-floor range), peak and floor the 98th and 10th percentile
frame levels of the utterance; a pause is >= 0.3 s below the gate). A placed phrase
is speech from its first to its last frame above the gate, pauses inside it (< 0.3 s)
included: a placed word is speech. In rooms the reference is the dry placement, with
the direct path aligned to it (the reverberant tail after a phrase is not speech).
Backchannels ("yeah", "mm-hm") are 0.3-1 s word groups cut from the readers' own
phrases at shorter dips (>= 60 ms below the gate) and placed inside another reader's
turn; together with barge-ins (the next talker starting 0.3-2 s before the previous
one stops) they make the overlap, typically 5-15 % of the speech. A talker's first turn
lasts at least 2.5 s, so every reference speaker has a few seconds of speech.

Within a set, which files get a room, their RT60 and SNR are stratified (one quantile of
the range per file, shuffled) and the noise kinds taken in turn, so a dozen files cover
the ranges. These set-level choices come from a generator seeded by (seed, set), the
rest of a file from one seeded by (seed, set, file).

    python scripts/make_rooms.py --out /tmp/wd-dev --seed 15
    python scripts/make_rooms.py --out /tmp/small --seed 1 --files clean=2 --files room=2 \\
        --files phone=2 --long clean= --long room= --long phone=

Tests build a short file from tests/data with ``load_voice`` + ``render_meeting``.
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

SR = 16000
HOP = 160  # 10 ms energy frames
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"  # ../shared/data beside the clone
SOURCES = (SHARED / "librispeech", SHARED / "librispeech-train-clean-100")
SPEAKERS_TXT = SHARED / "librispeech-train-clean-100" / "SPEAKERS.TXT"
SET_NAMES = ("clean", "room", "phone")
PAD = 0.08  # s of the recording kept around each cut (below the gate), with fades
SOUND_SPEED = 343.0


# ---------------------------------------------------------------- cutting utterances
@dataclass
class Piece:
    """A cut of one utterance: ``audio`` with ``speech`` = (start, end) samples of its gated speech."""

    audio: np.ndarray
    speech: tuple[int, int]
    source: str


@dataclass
class Voice:
    reader: str
    sex: str
    files: list[str]
    phrases: list[Piece]
    shorts: list[Piece]  # 0.3-1 s word groups for backchannels

    @property
    def seconds(self) -> float:
        return sum((p.speech[1] - p.speech[0]) / SR for p in self.phrases)


def frame_db(x: np.ndarray) -> np.ndarray:
    n = len(x) // HOP
    e = np.mean(x[: n * HOP].reshape(n, HOP).astype(np.float64) ** 2, axis=1)
    return 10 * np.log10(e + 1e-12)


def gate_db(db: np.ndarray) -> float:
    peak, floor = np.percentile(db, 98), np.percentile(db, 10)
    return float(max(peak - 35.0, floor + 0.3 * (peak - floor)))


def runs(mask: np.ndarray, bridge: int, min_len: int) -> list[tuple[int, int]]:
    """[start, end) frame runs of True, gaps shorter than ``bridge`` frames bridged."""
    idx = np.flatnonzero(mask)
    out: list[list[int]] = []
    for i in idx:
        if out and i - out[-1][1] < bridge:
            out[-1][1] = i + 1
        else:
            out.append([i, i + 1])
    return [(a, b) for a, b in out if b - a >= min_len]


def _piece(x: np.ndarray, a: int, b: int, source: str, fade_out_inside: bool = False,
           room: tuple[int, int] | None = None) -> Piece:
    """Samples [a, b) of speech plus PAD each side (at most ``room`` = the sub-gate samples
    before and after, so no neighbouring word comes along), raised-cosine fades on the pads."""
    pad = int(PAD * SR)
    before, after = (pad, pad) if room is None else (min(pad, room[0]), min(pad, room[1]))
    lo, hi = max(0, a - before), min(len(x), b + after)
    y = x[lo:hi].astype(np.float32).copy()
    f = min(int(0.01 * SR), len(y) // 4)
    ramp = (0.5 - 0.5 * np.cos(np.linspace(0, np.pi, f))).astype(np.float32)
    y[:f] *= ramp
    if fade_out_inside:  # a bit cut mid-speech: fade over its last 30 ms
        f = min(int(0.03 * SR), len(y) // 3)
        ramp = (0.5 - 0.5 * np.cos(np.linspace(0, np.pi, f))).astype(np.float32)
    y[len(y) - f:] *= ramp[::-1]
    return Piece(y, (a - lo, b - lo), source)


def cut_utterance(x: np.ndarray, source: str) -> tuple[list[Piece], list[Piece]]:
    """Phrases (split at pauses >= 0.3 s) and short word groups (0.3-1 s, split at dips >= 60 ms)."""
    db = frame_db(x)
    on = db > gate_db(db)
    phrases, shorts = [], []
    for a, b in runs(on, bridge=30, min_len=12):
        phrases.append(_piece(x, a * HOP, b * HOP, source))
        words = runs(on[a:b], bridge=6, min_len=1)
        for i, (c, d) in enumerate(words):
            if 30 <= d - c <= 100:
                gap0 = c - words[i - 1][1] if i else 30  # frames below the gate before / after
                gap1 = words[i + 1][0] - d if i + 1 < len(words) else 30
                shorts.append(_piece(x, (a + c) * HOP, (a + d) * HOP, source,
                                     room=((gap0 - 1) * HOP, (gap1 - 1) * HOP)))
    return phrases, shorts


def load_voice(reader: str, sex: str, files: list[Path]) -> Voice:
    phrases: list[Piece] = []
    shorts: list[Piece] = []
    for f in files:
        x, sr = sf.read(f, dtype="float32", always_2d=False)
        if sr != SR or x.ndim != 1:
            raise SystemExit(f"{f}: expected 16 kHz mono")
        db = frame_db(x)
        on = np.repeat(db > gate_db(db), HOP)
        rms = float(np.sqrt(np.mean(x[: len(on)][on] ** 2))) if on.any() else 1.0
        p, s = cut_utterance(x * (0.05 / max(rms, 1e-5)), f.name)  # active speech at -26 dBFS
        phrases += p
        shorts += s
    if not shorts and phrases:  # no word group found: the first 0.3-0.7 s of a phrase
        p = phrases[0]
        y = p.audio[: p.speech[0] + int(0.5 * SR)]
        a = p.speech[0]
        sub = _piece(y, a, min(len(y), p.speech[1]), p.source, fade_out_inside=True)
        shorts.append(sub)
    return Voice(reader, sex, [f.name for f in files], phrases, shorts)


def read_sexes(path: Path = SPEAKERS_TXT) -> dict[str, str]:
    out = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith(";"):
            continue
        p = [s.strip() for s in line.split("|")]
        if len(p) >= 2 and p[0].isdigit():
            out[p[0]] = p[1]
    return out


def discover_readers(sources: tuple[Path, ...] = SOURCES) -> dict[str, list[Path]]:
    """reader id -> its FLAC files: folders per reader, or ``<reader>-<chapter>-<n>.flac``."""
    out: dict[str, list[Path]] = {}
    for root in sources:
        for f in sorted(root.rglob("*.flac")):
            out.setdefault(f.name.split("-")[0], []).append(f)
    return dict(sorted(out.items(), key=lambda kv: int(kv[0])))


# ---------------------------------------------------------------- placement
@dataclass
class Placed:
    talker: int
    start: int  # sample of the piece's first audio sample in the output
    piece: Piece
    gain: float
    backchannel: bool = False

    @property
    def speech(self) -> tuple[int, int]:
        return self.start + self.piece.speech[0], self.start + self.piece.speech[1]


@dataclass
class Style:
    """How a conversation goes; drawn per file."""

    barge_in: float  # probability that the next talker starts before the previous one stops
    backchannel: float  # backchannels per second of another talker's turn
    turn_median: float  # s
    weights: list[float]  # share of turns per talker (dominant and quiet talkers)
    levels_db: list[float]  # per-talker level
    gap_mean: float = 0.4  # s; pause between turns = 0.1 s + exponential(gap_mean), at most 1.5 s


def draw_style(k: int, rng: np.random.Generator) -> Style:
    w = 0.7 * rng.dirichlet(np.ones(k)) + 0.3 / k
    return Style(barge_in=float(rng.uniform(0.15, 0.4)), backchannel=float(rng.uniform(0.04, 0.12)),
                 turn_median=float(rng.uniform(2.5, 6.0)), weights=[float(v) for v in w / w.sum()],
                 levels_db=[float(v) for v in rng.uniform(-5, 5, k)])


def _free(busy: list[tuple[int, int]], a: int, b: int) -> bool:
    return all(b <= s or a >= e for s, e in busy)


def place_speech(voices: list[Voice], seconds: float, rng: np.random.Generator,
                 style: Style | None = None) -> tuple[list[Placed], Style]:
    """Turn-taking: turns of consecutive phrases, pauses 0.1-1.5 s, barge-ins, backchannels."""
    k = len(voices)
    st = style or draw_style(k, rng)
    total = int(seconds * SR)
    gains = [10 ** (g / 20) for g in st.levels_db]
    cursor = [0] * k  # next phrase per talker (cycling through a shuffled order)
    orders = [rng.permutation(len(v.phrases)) for v in voices]
    busy: list[list[tuple[int, int]]] = [[] for _ in range(k)]
    out: list[Placed] = []

    def next_phrase(i: int) -> Piece:
        v = voices[i]
        if cursor[i] >= len(orders[i]):
            orders[i], cursor[i] = rng.permutation(len(v.phrases)), 0
        p = v.phrases[orders[i][cursor[i]]]
        cursor[i] += 1
        return p

    t = int(rng.uniform(0.2, 1.5) * SR)  # where the next speech starts
    prev = -1
    last_end = last_len = 0
    heard = np.zeros(k, bool)
    while True:
        cand = np.array(st.weights)
        if prev >= 0 and k > 1 and rng.random() >= 0.1:  # mostly someone else speaks next
            cand[prev] = 0
        if not heard.all() and rng.random() < 0.7:  # bring in who has not spoken yet (quiet talkers too)
            cand = np.where(heard, 0.0, cand + 1e-3)
        spk = int(rng.choice(k, p=cand / cand.sum()))
        if prev >= 0:
            if spk != prev and rng.random() < st.barge_in:
                t = last_end - int(min(rng.uniform(0.3, 2.0), 0.7 * last_len / SR) * SR)
            else:
                t = last_end + int(min(1.5, 0.1 + rng.exponential(st.gap_mean)) * SR)
        # Turn length: lognormal around the style's median, longer for dominant talkers.
        target = st.turn_median * (st.weights[spk] * k) ** 0.4 * float(np.exp(rng.normal(0, 0.8)))
        target = float(np.clip(target, 0.4, 30.0))
        if not heard[spk]:  # a talker's first turn is a real one, so every talker has >= ~2 s of speech
            target = max(target, 2.5)
        if heard[spk] and target < 1.2 and rng.random() < 0.5:
            v = voices[spk]
            pieces = [v.shorts[int(rng.integers(len(v.shorts)))]]  # a short answer
        else:
            pieces = []
            dur = 0.0
            while dur < target:
                p = next_phrase(spk)
                pieces.append(p)
                dur += (p.speech[1] - p.speech[0]) / SR + 0.3
        turn: list[Placed] = []
        pos = t
        for p in pieces:
            length = p.speech[1] - p.speech[0]
            for s, e in sorted(busy[spk]):  # never over this talker's own speech (a backchannel)
                if s < pos + length and e > pos:
                    pos = e + int(0.2 * SR)
            if pos + length > total - int(0.3 * SR):
                break
            start = pos - p.speech[0]
            pl = Placed(spk, max(0, start), p if start >= 0 else _shift(p, -start), gains[spk])
            turn.append(pl)
            busy[spk].append(pl.speech)
            pos = pl.speech[1] + int(rng.uniform(0.15, 0.5) * SR)  # pause between phrases of a turn
        if not turn:
            break
        out += turn
        heard[spk] = True
        a, b = turn[0].speech[0], turn[-1].speech[1]
        # Backchannels by others inside this turn.
        n_bc = rng.poisson(st.backchannel * (b - a) / SR) if k > 1 and b - a > 2 * SR else 0
        for _ in range(n_bc):
            o = np.where(heard, st.weights, 0.0)  # only who has had a turn backchannels
            o[spk] = 0
            if o.sum() <= 0:
                break
            j = int(rng.choice(k, p=o / o.sum()))
            p = voices[j].shorts[int(rng.integers(len(voices[j].shorts)))]
            at = int(rng.uniform(a + 0.5 * SR, b - 1.0 * SR))
            start = at - p.speech[0]
            if start >= 0 and _free(busy[j], at, start + p.speech[1]):
                pl = Placed(j, start, p, gains[j] * 10 ** (rng.uniform(-4, 0) / 20), backchannel=True)
                out.append(pl)
                busy[j].append(pl.speech)
        prev = spk
        last_end, last_len = turn[-1].speech[1], turn[-1].speech[1] - turn[-1].speech[0]
    return out, st


def _shift(p: Piece, n: int) -> Piece:
    """Drop the first n samples of a piece (only at the very start of a file)."""
    return Piece(p.audio[n:], (max(0, p.speech[0] - n), p.speech[1] - n), p.source)


def reference(placed: list[Placed], labels: list[str]) -> list[tuple[float, float, str]]:
    """Placed speech as (start, end, speaker) seconds, one speaker's overlapping bits merged."""
    return merged_reference([(p.talker, *p.speech) for p in placed], labels)


def merged_reference(spans: list[tuple[int, int, int]], labels: list[str]) -> list[tuple[float, float, str]]:
    """(talker, start, end) sample spans as (start, end, label) seconds, each talker's
    touching or overlapping spans merged."""
    out = []
    for i, lab in enumerate(labels):
        iv = sorted((a, b) for t, a, b in spans if t == i)
        merged: list[list[int]] = []
        for a, b in iv:
            if merged and a <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], b)
            else:
                merged.append([a, b])
        out += [(a / SR, b / SR, lab) for a, b in merged]
    return sorted(out)


def speech_mask(turns: list[tuple[float, float, str]], n: int) -> np.ndarray:
    """Per 10 ms frame: number of talkers speaking."""
    c = np.zeros(n // HOP + 1, np.int16)
    for a, b, _ in turns:
        c[int(round(a * SR / HOP)):int(round(b * SR / HOP))] += 1
    return c


# ---------------------------------------------------------------- rooms
@dataclass
class RoomInfo:
    dims: list[float]
    rt60_target: float
    rt60_measured: float  # mean T20-based RT60 of the final RIRs (pyroomacoustics.experimental.measure_rt60)
    absorption: float
    max_order: int
    mics: list[list[float]]
    mic_mode: str  # "single" or "average of 2"
    talkers: list[list[float]]
    distances: list[list[float]]  # [talker][mic] m
    nearest_mic_m: list[float]  # per talker, the distance drawn in ``distance`` (to its nearer mic)
    noise_source: list[float] | None = None


def simulate_room(k: int, rng: np.random.Generator, rt60: tuple[float, float] = (0.2, 0.8),
                  distance: tuple[float, float] = (0.5, 4.0), two_mics: float = 0.4,
                  noise_source: bool = True, max_order: int = 40) -> tuple[list[np.ndarray], np.ndarray | None,
                                                                             RoomInfo]:
    """One shoebox room: a mono RIR per talker (mics averaged), direct path at sample 0.

    Absorption is calibrated (two Sabine-ratio corrections on one RIR) so that the RIRs'
    measured RT60 is the drawn one: image-source RIRs decay slower than Sabine predicts.
    Also returns the RIR of a far noise source (for babble) when ``noise_source``.
    """
    import pyroomacoustics as pra

    target = float(rng.uniform(*rt60))
    # Larger rooms for longer reverberation, and room for the farthest talker.
    scale = (target - 0.2) / 0.6
    dims = [float(rng.uniform(4.5, 7) + 4 * scale * rng.uniform(0.5, 1)),
            float(rng.uniform(3.5, 5.5) + 3 * scale * rng.uniform(0.5, 1)), float(rng.uniform(2.5, 3.4))]
    n_mics = 2 if rng.random() < two_mics else 1
    centre = np.array([dims[0] / 2, dims[1] / 2, 0.8])
    mics = [centre + [rng.uniform(-0.8, 0.8), rng.uniform(-0.6, 0.6), rng.uniform(-0.05, 0.05)]]
    if n_mics == 2:  # a second table microphone 0.5-2 m away
        ang = rng.uniform(0, 2 * np.pi)
        mics.append(mics[0] + rng.uniform(0.5, 2.0) * np.array([np.cos(ang), np.sin(ang), 0.0]))
        mics[1][:2] = np.clip(mics[1][:2], 0.5, np.array(dims[:2]) - 0.5)

    def inside(p: np.ndarray, margin: float = 0.3) -> bool:
        return bool(np.all(p[:2] > margin) and np.all(p[:2] < np.array(dims[:2]) - margin))

    talkers = []
    for _ in range(k):
        for _attempt in range(200):
            d = rng.uniform(*distance)
            ang = rng.uniform(0, 2 * np.pi)
            h = rng.uniform(1.1, 1.7)  # seated or standing mouth height
            ref = mics[int(rng.integers(n_mics))]
            horiz = np.sqrt(max(d**2 - (h - ref[2]) ** 2, 0.01))
            p = np.array([ref[0] + horiz * np.cos(ang), ref[1] + horiz * np.sin(ang), h])
            near = min(np.linalg.norm(p - q) for q in mics)
            if (inside(p) and near >= distance[0] and all(np.linalg.norm(p - q) > 0.5 for q in talkers)):
                break
        talkers.append(p)
    far = None
    if noise_source:  # a room corner region, far from the mics
        far = np.array([rng.uniform(0.3, 1.0), rng.uniform(0.3, 1.0), rng.uniform(1.0, 2.0)])
        far[:2] = np.where(rng.random(2) < 0.5, far[:2], np.array(dims[:2]) - far[:2])

    def build(e: float, srcs: list[np.ndarray], mic_list: list[np.ndarray]):
        _, mo = pra.inverse_sabine(target, dims)
        room = pra.ShoeBox(dims, fs=SR, materials=pra.Material(e), max_order=min(mo, max_order),
                           air_absorption=True)
        for s in srcs:
            room.add_source(list(s))
        room.add_microphone_array(np.array(mic_list).T)
        room.compute_rir()
        return room, min(mo, max_order)

    e, _ = pra.inverse_sabine(target, dims)
    for _ in range(2):
        room, _mo = build(e, [talkers[0]], [mics[0]])
        m = pra.experimental.measure_rt60(room.rir[0][0], fs=SR)
        e = float(np.clip(e * m / target, 0.02, 0.95))
    srcs = talkers + ([far] if far is not None else [])
    room, mo = build(e, srcs, mics)
    fdl = pra.constants.get("frac_delay_length") // 2
    rirs, measured = [], []
    for s, pos in enumerate(srcs):
        dist = [float(np.linalg.norm(pos - q)) for q in mics]
        off = int(round(min(dist) / SOUND_SPEED * SR)) + fdl  # direct path of the nearer mic -> sample 0
        n = max(len(room.rir[m][s]) for m in range(n_mics))
        h = np.zeros(n)
        for m in range(n_mics):
            h[: len(room.rir[m][s])] += room.rir[m][s]
        h = (h / n_mics)[off:].astype(np.float32)
        rirs.append(h)
        if s < k:
            measured.append(float(pra.experimental.measure_rt60(room.rir[0][s], fs=SR)))
    info = RoomInfo(dims=[round(v, 2) for v in dims], rt60_target=round(target, 3),
                    rt60_measured=round(float(np.mean(measured)), 3), absorption=round(e, 3), max_order=mo,
                    mics=[[round(float(v), 2) for v in q] for q in mics],
                    mic_mode="single" if n_mics == 1 else "average of 2",
                    talkers=[[round(float(v), 2) for v in p] for p in talkers],
                    distances=[[round(float(np.linalg.norm(p - q)), 2) for q in mics] for p in talkers],
                    nearest_mic_m=[round(float(min(np.linalg.norm(p - q) for q in mics)), 2) for p in talkers],
                    noise_source=None if far is None else [round(float(v), 2) for v in far])
    return rirs[:k], (rirs[k] if far is not None else None), info


# ---------------------------------------------------------------- noise
def coloured(n: int, rng: np.random.Generator, exponent: float) -> np.ndarray:
    """Noise with power spectrum ~ 1/f^exponent (1 pink, 2 brown) from 20 Hz up, unit RMS.
    (Without the 20 Hz cut the power below hearing dominates and the level drifts.)"""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / SR)
    spec *= np.where(f >= 20, np.maximum(f, 20) ** (-exponent / 2), 0)
    x = np.fft.irfft(spec, n)
    return (x / np.sqrt(np.mean(x**2))).astype(np.float32)


def fan_noise(n: int, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Pink noise low-passed at 1.5-4 kHz, a mains hum with harmonics, a slow wobble."""
    fc = float(rng.uniform(1500, 4000))
    x = signal.sosfilt(signal.butter(2, fc, "low", fs=SR, output="sos"), coloured(n, rng, 1.0))
    x /= np.sqrt(np.mean(x**2))
    hum_f = float(rng.choice([50.0, 60.0]))
    t = np.arange(n) / SR
    hum = sum(0.5 ** h * np.sin(2 * np.pi * hum_f * (h + 1) * t + rng.uniform(0, 2 * np.pi)) for h in range(4))
    hum_db = float(rng.uniform(-15, -5))
    wob = 1 + 0.05 * np.sin(2 * np.pi * rng.uniform(0.2, 2) * t)
    y = x * wob + hum / np.sqrt(np.mean(hum**2)) * 10 ** (hum_db / 20)
    return y.astype(np.float32), {"lowpass_hz": round(fc), "hum_hz": hum_f, "hum_db": round(hum_db, 1)}


def street_noise(n: int, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Brown-noise rumble below ~250 Hz, cars passing (swelling band noise), short bursts."""
    rumble = signal.sosfilt(signal.butter(2, rng.uniform(150, 300), "low", fs=SR, output="sos"),
                            coloured(n, rng, 2.0))
    y = rumble / np.sqrt(np.mean(rumble**2))
    t = np.arange(n) / SR
    cars = 0
    pos = rng.uniform(1, 10)
    while pos < n / SR:
        width = rng.uniform(1.5, 4.0)
        a, b = max(0, int((pos - 3 * width) * SR)), min(n, int((pos + 3 * width) * SR))
        env = np.exp(-0.5 * ((t[a:b] - pos) / width) ** 2) * 10 ** (rng.uniform(0, 12) / 20)
        car = signal.sosfilt(signal.butter(2, rng.uniform(600, 2000), "low", fs=SR, output="sos"),
                             rng.standard_normal(b - a))
        y[a:b] += env * car / (np.std(car) + 1e-9)
        cars += 1
        pos += rng.uniform(6, 25)
    bursts = int(rng.poisson(n / SR / 30))
    for _ in range(bursts):  # horns and clatter, 0.05-0.6 s
        d = int(rng.uniform(0.05, 0.6) * SR)
        a = int(rng.integers(0, max(1, n - d)))
        if rng.random() < 0.5:
            f0 = rng.uniform(300, 500)
            s = sum(np.sin(2 * np.pi * f0 * h * np.arange(d) / SR) / h for h in (1, 2, 3))
        else:
            s = rng.standard_normal(d) * np.exp(-np.arange(d) / (0.05 * SR))
        y[a:a + d] += s * np.hanning(d) * 10 ** (rng.uniform(0, 10) / 20)
    return y.astype(np.float32), {"cars": cars, "bursts": bursts}


def babble_noise(n: int, rng: np.random.Generator, pool: list[Voice]) -> tuple[np.ndarray, dict]:
    """Sum of 6-10 babble-pool readers, each its phrases looped with short gaps."""
    m = int(min(len(pool), rng.integers(6, 11)))
    who = [pool[i] for i in rng.choice(len(pool), size=m, replace=False)]
    y = np.zeros(n, np.float32)
    for v in who:
        pos = int(rng.uniform(-2, 0) * SR)
        g = 10 ** (rng.uniform(-3, 3) / 20)
        while pos < n:
            p = v.phrases[int(rng.integers(len(v.phrases)))]
            a, b = max(0, pos), min(n, pos + len(p.audio))
            if b > a:
                y[a:b] += g * p.audio[a - pos:b - pos]
            pos += len(p.audio) + int(rng.uniform(0.05, 0.4) * SR)
    return y, {"babble_readers": [v.reader for v in who]}


def make_noise(kind: str, n: int, rng: np.random.Generator, pool: list[Voice]) -> tuple[np.ndarray, dict]:
    if kind == "babble":
        return babble_noise(n, rng, pool)
    if kind == "fan":
        return fan_noise(n, rng)
    if kind == "street":
        return street_noise(n, rng)
    raise ValueError(kind)


# ---------------------------------------------------------------- telephone
def telephone(x: np.ndarray, rng: np.random.Generator, mulaw: bool, line_snr_db: float) -> np.ndarray:
    """300-3400 Hz band (zero phase, so the reference stays aligned), 8 kHz, optional
    8-bit mu-law, white line noise at ``line_snr_db`` below the signal, back to 16 kHz."""
    sos = signal.butter(6, [300, 3400], "bandpass", fs=SR, output="sos")
    y = signal.sosfiltfilt(sos, x.astype(np.float64))
    y = signal.resample_poly(y, 1, 2)
    p = np.mean(y**2)
    y = y + rng.standard_normal(len(y)) * np.sqrt(p / 10 ** (line_snr_db / 10))
    if mulaw:
        mu = 255.0
        peak = np.max(np.abs(y)) + 1e-9
        z = np.sign(y) * np.log1p(mu * np.abs(y / peak)) / np.log1p(mu)
        z = np.round(z * 127) / 127  # 8 bits
        y = np.sign(z) * np.expm1(np.abs(z) * np.log1p(mu)) / mu * peak
    return signal.resample_poly(y, 2, 1).astype(np.float32)[: len(x)]


# ---------------------------------------------------------------- one file
@dataclass
class Meeting:
    audio: np.ndarray
    turns: list[tuple[float, float, str]]
    info: dict = field(default_factory=dict)


def render_meeting(voices: list[Voice], seconds: float, rng: np.random.Generator, *, room: bool = False,
                   noise: str | None = None, snr_db: float | None = None, phone: bool = False,
                   babble: list[Voice] | None = None, mulaw: bool = True, line_snr_db: float = 35.0,
                   rt60: tuple[float, float] = (0.2, 0.8), distance: tuple[float, float] = (0.5, 4.0),
                   level_dbfs: float = -26.0, style: Style | None = None) -> Meeting:
    """Place speech, optionally render it in a room, add noise, pass it through a phone line.

    ``turns`` are the placed speech (speaker = ``spk<reader>``), ``info`` the manifest entry.
    """
    labels = [f"spk{v.reader}" for v in voices]
    placed, style = place_speech(voices, seconds, rng, style)
    n = int(seconds * SR)
    turns = reference(placed, labels)
    rirs, noise_rir, rinfo = (simulate_room(len(voices), rng, rt60=rt60, distance=distance,
                                            noise_source=noise == "babble") if room else (None, None, None))
    x = np.zeros(n + (max(len(h) for h in rirs) if rirs else 0), np.float32)
    for p in placed:
        seg = p.piece.audio * p.gain
        if rirs is not None:
            seg = signal.fftconvolve(seg, rirs[p.talker]).astype(np.float32)
        x[p.start:p.start + len(seg)] += seg
    x = x[:n]
    on = np.repeat(speech_mask(turns, n) > 0, HOP)[:n]
    speech_power = float(np.mean(x[on] ** 2)) if on.any() else 1e-6
    ninfo: dict = {}
    if noise:
        nz, ninfo = make_noise(noise, n, rng, babble or [])
        if noise_rir is not None:
            nz = signal.oaconvolve(nz, noise_rir)[:n].astype(np.float32)
        assert snr_db is not None
        nz *= np.sqrt(speech_power / 10 ** (snr_db / 10) / (np.mean(nz**2) + 1e-20))
        x = x + nz
    if phone:
        x = telephone(x, rng, mulaw, line_snr_db)
        speech_power = float(np.mean(x[on] ** 2)) if on.any() else 1e-6
    x *= 10 ** (level_dbfs / 20) / np.sqrt(speech_power)
    peak = float(np.max(np.abs(x)))
    if peak > 0.99:
        x *= 0.99 / peak
    count = speech_mask(turns, n)
    speech_s = float(np.sum(count > 0) * HOP / SR)
    info = {
        "duration": round(n / SR, 3),
        "speakers": len({s for _, _, s in turns}),
        "readers": [{"reader": v.reader, "sex": v.sex, "label": lab, "level_db": round(g, 1),
                     "speech_seconds": round(sum(b - a for a, b, s in turns if s == lab), 2),
                     "files": sorted({p.piece.source for p in placed if p.talker == i})}
                    for i, (v, lab, g) in enumerate(zip(voices, labels, style.levels_db, strict=True))],
        "speech_seconds": round(speech_s, 2),
        "overlap_share": round(float(np.sum(count > 1) / max(1, np.sum(count > 0))), 4),
        "turns": len(turns),
        "backchannels": sum(p.backchannel for p in placed),
        "style": {"barge_in": round(style.barge_in, 3), "backchannel_per_s": round(style.backchannel, 3),
                  "turn_median_s": round(style.turn_median, 2)},
        "room": asdict(rinfo) if rinfo else None,
        "noise": {"type": noise, "snr_db": round(snr_db, 1), **ninfo} if noise and snr_db is not None else None,
        "telephone": {"band_hz": [300, 3400], "rate": 8000, "mulaw": mulaw,
                      "line_snr_db": round(line_snr_db, 1)} if phone else None,
    }
    return Meeting(x.astype(np.float32), turns, info)


# ---------------------------------------------------------------- sets
@dataclass
class SetSpec:
    name: str
    short_files: int
    short_minutes: tuple[float, float]
    long_minutes: list[float]
    speakers: tuple[int, int]
    room: float  # share of files rendered in a room
    noise: bool
    phone: bool


DEFAULT_SPECS = {
    "clean": SetSpec("clean", 8, (0.5, 5.0), [10.0], (2, 8), 0.0, False, False),
    "room": SetSpec("room", 10, (0.5, 5.0), [20.0], (2, 8), 1.0, True, False),
    "phone": SetSpec("phone", 8, (0.5, 4.0), [8.0], (2, 4), 0.5, True, True),
}


def split_readers(readers: dict[str, list[Path]], sexes: dict[str, str], voices_s: dict[str, float],
                  rng: np.random.Generator, shares: dict[str, float],
                  babble_below: float = 5.0) -> dict[str, list[str]]:
    """Disjoint reader pools per set, stratified by sex. Readers with under ``babble_below``
    seconds of speech are too short to be talkers and become the babble pool."""
    pools: dict[str, list[str]] = {name: [] for name in shares}
    pools["babble"] = [r for r in readers if voices_s[r] < babble_below]
    rest = [r for r in readers if voices_s[r] >= babble_below]
    names = list(shares)
    w = np.array([shares[s] for s in names], float)
    for sex in ("F", "M"):
        group = [rest[i] for i in rng.permutation(len(rest)) if sexes.get(rest[i], "?") == sex]
        cuts = np.round(np.cumsum(w / w.sum()) * len(group)).astype(int)
        lo = 0
        for name, hi in zip(names, cuts, strict=True):
            pools[name] += group[lo:hi]
            lo = hi
    return {k: sorted(v, key=int) for k, v in pools.items()}


def plan_files(spec: SetSpec, rng: np.random.Generator) -> list[tuple[float, int]]:
    """(minutes, speakers) per file: log-spaced short lengths (jittered), then the long ones."""
    lo, hi = spec.short_minutes
    grid = np.exp(np.linspace(np.log(lo), np.log(hi), spec.short_files)) if spec.short_files > 1 else np.array([lo])
    jitter = np.exp(rng.uniform(-0.1, 0.1, len(grid)))
    lengths = [float(np.clip(m * j, lo, hi)) for m, j in zip(grid, jitter, strict=True)]
    lengths[0] = lo  # the shortest file is exactly the minimum
    # Speaker counts: the longest files first, each the largest count left in a shuffled deck of
    # all counts that it may have (short files hold few talkers), so every count occurs.
    files = lengths + list(spec.long_minutes)
    counts = [0] * len(files)
    deck: list[int] = []
    lo_k, hi_k = spec.speakers
    for i in sorted(range(len(files)), key=lambda i: -files[i]):
        m = files[i]
        kmax = hi_k if m >= 2.5 else min(hi_k, 3 if m < 1 else 5)
        if not any(c <= kmax for c in deck):
            deck += [int(c) for c in rng.permutation(np.arange(lo_k, hi_k + 1))]
        pick = max(c for c in deck if c <= kmax)
        deck.remove(pick)
        counts[i] = pick
    plan = [(round(m, 2), k) for m, k in zip(files, counts, strict=True)]
    return plan


def build_set(spec: SetSpec, pool: list[Voice], babble: list[Voice], out: Path, seed: int,
              set_index: int) -> list[dict]:
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, set_index, 0])
    plan = plan_files(spec, rng)
    n = len(plan)
    # Stratified over the set's files, so that every range is covered even by a dozen files:
    # which files get a room, RT60, SNR (quantiles of the range, shuffled), noise kinds in turn.
    rooms = rng.permutation(np.arange(n) < round(spec.room * n))
    rt_q, snr_q = rng.permutation((np.arange(n) + 0.5) / n), rng.permutation((np.arange(n) + 0.5) / n)
    kinds = [("babble", "fan", "street")[j % 3] for j in rng.permutation(n)]
    rt_lo, rt_hi = (0.2, 0.6) if spec.phone else (0.2, 0.8)
    snr_lo, snr_hi = (10.0, 25.0) if spec.phone else (5.0, 20.0)
    usage = {v.reader: 0 for v in pool}
    entries = []
    for i, (minutes, k) in enumerate(plan):
        frng = np.random.default_rng([seed, set_index, i + 1])
        # Least-used readers first (ties at random), so a set's voices are all heard.
        order = sorted(pool, key=lambda v: (usage[v.reader], frng.random()))
        chosen = order[:k]
        for v in chosen:
            usage[v.reader] += 1
        uri = f"{spec.name}{i:02d}"
        room = bool(rooms[i])
        noise = None
        snr = None
        if spec.noise and (not spec.phone or room):
            noise = kinds[i]
            snr = float(snr_lo + (snr_hi - snr_lo) * snr_q[i])
        rt = float(rt_lo + (rt_hi - rt_lo) * rt_q[i])
        kw: dict = {"rt60": (rt, rt)}
        if spec.phone:
            kw |= {"mulaw": bool(frng.random() < 0.7), "line_snr_db": float(frng.uniform(28, 40)),
                   "distance": (0.5, 2.5)}
        t0 = time.perf_counter()
        m = render_meeting(chosen, minutes * 60, frng, room=room, noise=noise, snr_db=snr, phone=spec.phone,
                           babble=babble, level_dbfs=float(frng.uniform(-32, -20)), **kw)
        sf.write(out / f"{uri}.wav", m.audio, SR, subtype="PCM_16")
        (out / f"{uri}.rttm").write_text("".join(
            f"SPEAKER {uri} 1 {a:.3f} {b - a:.3f} <NA> <NA> {s} <NA> <NA>\n" for a, b, s in m.turns))
        (out / f"{uri}.uem").write_text(f"{uri} 1 0.000 {m.info['duration']:.3f}\n")
        entries.append({"uri": uri, **m.info})
        r = m.info["room"]
        where = f"RT60 {r['rt60_measured']:.2f} s" if r else "dry"
        print(f"{spec.name}/{uri}: {k} spk, {minutes:.1f} min, overlap {100 * m.info['overlap_share']:.1f} %, "
              f"{where}, noise {noise} {snr and round(snr, 1)}, {time.perf_counter() - t0:.1f} s", flush=True)
    return entries


def parse_kv(items: list[str], cast) -> dict:
    out = {}
    for s in items:
        k, v = s.split("=", 1)
        out[k] = cast(v)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="writes OUT/<set>/ for each set")
    ap.add_argument("--seed", type=int, default=15)
    ap.add_argument("--sets", default=",".join(SET_NAMES), help="which sets to write (the split uses all)")
    ap.add_argument("--files", action="append", default=[], metavar="SET=N", help="short files per set")
    ap.add_argument("--long", action="append", default=[], metavar="SET=MIN[+MIN]",
                    help="long files per set, minutes ('SET=' for none)")
    ap.add_argument("--max-minutes", action="append", default=[], metavar="SET=MIN",
                    help="longest short file per set")
    ap.add_argument("--shares", default="clean=0.3,room=0.4,phone=0.3", help="reader split between the sets")
    args = ap.parse_args()
    specs = {k: SetSpec(**asdict(v)) for k, v in DEFAULT_SPECS.items()}
    for k, v in parse_kv(args.files, int).items():
        specs[k].short_files = v
    for k, v in parse_kv(args.long, lambda s: [float(x) for x in s.split("+") if x]).items():
        specs[k].long_minutes = v
    for k, v in parse_kv(args.max_minutes, float).items():
        specs[k].short_minutes = (specs[k].short_minutes[0], v)
    shares = parse_kv(args.shares.split(","), float)

    t0 = time.perf_counter()
    sexes = read_sexes()
    files = discover_readers()
    voices = {r: load_voice(r, sexes.get(r, "?"), fs) for r, fs in files.items()}
    split = split_readers(files, sexes, {r: v.seconds for r, v in voices.items()},
                          np.random.default_rng([args.seed, 99]), shares)
    babble = [voices[r] for r in split["babble"]]
    print(f"{len(voices)} readers loaded in {time.perf_counter() - t0:.1f} s; "
          + ", ".join(f"{k}: {len(v)}" for k, v in split.items()), flush=True)
    for name in args.sets.split(","):
        spec = specs[name]
        pool = [voices[r] for r in split[name]]
        entries = build_set(spec, pool, babble, args.out / name, args.seed, SET_NAMES.index(name))
        manifest = {
            "set": name, "seed": args.seed, "spec": asdict(spec),
            "readers": [{"reader": r, "sex": voices[r].sex, "speech_seconds": round(voices[r].seconds, 1)}
                        for r in split[name]],
            "babble_readers": split["babble"],
            "split": {k: v for k, v in split.items()},
            "reference_rule": "placed phrase from its first to its last 10 ms frame above the energy gate "
                              "(max(peak - 35 dB, floor + 30 % of peak-floor)); pauses < 0.3 s inside count",
            "files": entries,
        }
        (args.out / name / "manifest.json").write_text(json.dumps(manifest, indent=1))
        mins = sum(e["duration"] for e in entries) / 60
        print(f"{name}: {len(entries)} files, {mins:.1f} min", flush=True)
    print(f"done in {time.perf_counter() - t0:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
