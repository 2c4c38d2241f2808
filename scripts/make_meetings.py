#!/usr/bin/env python3
"""Build synthetic multi-speaker "meetings" from LibriSpeech utterances, with exact RTTM.

Deterministic for a given seed. Each meeting has 2-5 speakers and lasts 4-8 minutes:
turns are random crops (1.5-12 s) of the speakers' utterances, separated by short
pauses (0.1-1.0 s), and about 15 % of turns start before the previous one ends
(0.3-1.5 s of overlap). The reference turns are the crops' speech according to Silero
VAD (32 ms frames with speech probability >= 0.5, gaps under 0.25 s bridged), so
reference silence is real silence. (An energy threshold was tried first: on the noisier
LibriSpeech "other" recordings the room noise is within 35 dB of the speech peak and
became "speech" in the reference.)

    python scripts/make_meetings.py --out /tmp/meetings --count 8 --seed 1
    python scripts/make_meetings.py --out /tmp/long --long-minutes 60 --speakers 4 --seed 7

Writes <uri>.wav (16 kHz, 16-bit) and <uri>.rttm per meeting.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from whispdiar.outputs.rttm import format_rttm  # noqa: E402
from whispdiar.records import Turn  # noqa: E402

SR = 16000
DEFAULT_SOURCE = Path("/work/shared/data/librispeech")


@dataclass
class Voice:
    name: str
    utterances: list[np.ndarray]  # float32, RMS-normalised
    speech: list[np.ndarray]  # per utterance: Silero speech probability per 32 ms frame


def load_voices(root: Path, vad_model: Path) -> list[Voice]:
    from whispdiar.asr.vad import SileroVad

    vad = SileroVad(vad_model, threads=1)
    voices = []
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        utts, probs = [], []
        for f in sorted(d.glob("*.flac")) + sorted(d.glob("*.wav")):
            x, sr = sf.read(f, dtype="float32", always_2d=False)
            if sr != SR or x.ndim != 1:
                raise SystemExit(f"{f}: expected 16 kHz mono")
            utts.append(x / max(1e-4, float(np.sqrt(np.mean(x**2)))) * 0.05)
            probs.append(vad.probabilities(x))
        if utts:
            voices.append(Voice(d.name, utts, probs))
    if len(voices) < 2:
        raise SystemExit(f"{root}: need at least 2 speaker folders of FLAC/WAV")
    return voices


VAD_HOP = 512  # samples per Silero frame


def voiced_runs(probs: np.ndarray, a: int, length: int, bridge: float = 0.25) -> list[tuple[float, float]]:
    """(start, end) seconds, relative to the crop [a, a + length), of its speech frames."""
    runs: list[list[float]] = []
    for i in np.flatnonzero(probs >= 0.5):
        s = max(0, i * VAD_HOP - a) / SR
        e = min(length, (i + 1) * VAD_HOP - a) / SR
        if e <= s:
            continue
        if runs and s - runs[-1][1] <= bridge:
            runs[-1][1] = e
        else:
            runs.append([s, e])
    return [(x, y) for x, y in runs if y - x >= 0.05]


def meeting(voices: list[Voice], k: int, minutes: float, rng: np.random.Generator) -> tuple[np.ndarray, list[Turn]]:
    chosen = [voices[i] for i in rng.choice(len(voices), size=k, replace=False)]
    gains = {v.name: 10 ** (rng.uniform(-4, 4) / 20) for v in chosen}
    total = int(minutes * 60 * SR)
    out = np.zeros(total + 30 * SR, np.float32)
    turns: list[Turn] = []
    prev = -1
    prev_end = rng.uniform(0.2, 1.5)  # end of all speech so far (s)
    prev_len = 0.0
    while True:
        # Mostly alternate; sometimes the same speaker continues after a pause.
        s = int(rng.integers(k)) if prev < 0 or rng.random() < 0.15 else int((prev + rng.integers(1, k)) % k)
        if s != prev and prev >= 0 and rng.random() < 0.15:
            t = prev_end - min(rng.uniform(0.3, 1.5), 0.5 * prev_len)  # barges in
        else:
            t = prev_end + rng.uniform(0.1, 1.0)
        v = chosen[s]
        u = int(rng.integers(len(v.utterances)))
        utt = v.utterances[u]
        length = min(len(utt), int(rng.uniform(1.5, 12.0) * SR))
        a = int(rng.integers(0, len(utt) - length + 1))
        crop = utt[a : a + length] * gains[v.name]
        runs = voiced_runs(v.speech[u], a, length)
        if not runs:
            continue
        # Put the first voiced sample at t (pause or overlap measured on speech, not on the crop).
        begin = t - runs[0][0]
        i0 = int(round(begin * SR))
        if i0 < 0:
            crop, i0 = crop[-i0:], 0
        if i0 + len(crop) > total:
            break
        out[i0 : i0 + len(crop)] += crop
        turns.extend(Turn(round(max(0.0, begin + x), 3), round(begin + y, 3), f"spk{v.name}") for x, y in runs)
        end = begin + runs[-1][1]
        prev, prev_len, prev_end = s, end - t, max(end, prev_end)
    last = int(np.ceil((max(tr.end for tr in turns) + 0.5) * SR))
    out = out[:last]
    peak = float(np.max(np.abs(out)))
    if peak > 0.99:
        out *= 0.99 / peak
    return out, merge_same_speaker(turns)


def merge_same_speaker(turns: list[Turn]) -> list[Turn]:
    """Union of overlapping turns of one speaker (crops of one speaker never overlap, but be safe)."""
    out: list[Turn] = []
    for spk in sorted({t.speaker for t in turns}):
        for t in sorted((t for t in turns if t.speaker == spk), key=lambda t: t.start):
            if out and out[-1].speaker == spk and t.start <= out[-1].end:
                out[-1] = Turn(out[-1].start, max(out[-1].end, t.end), spk)
            else:
                out.append(t)
    return sorted(out, key=lambda t: (t.start, t.speaker))


def default_vad() -> Path:
    try:
        from whispdiar import models

        return models.resolve("silero-vad")
    except Exception:
        return Path("/tmp/wd-models/silero_vad.onnx")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="folder of speaker folders (FLAC)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--vad", type=Path, default=None, help="silero_vad.onnx (default: model registry)")
    ap.add_argument("--count", type=int, default=8, help="number of meetings")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--min-speakers", type=int, default=2)
    ap.add_argument("--max-speakers", type=int, default=5)
    ap.add_argument("--min-minutes", type=float, default=4.0)
    ap.add_argument("--max-minutes", type=float, default=8.0)
    ap.add_argument("--long-minutes", type=float, default=None,
                    help="instead: one recording this long (speed/memory benchmark)")
    ap.add_argument("--speakers", type=int, default=4, help="speakers of the --long-minutes recording")
    args = ap.parse_args()
    voices = load_voices(args.source, args.vad or default_vad())
    args.out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    if args.long_minutes:
        jobs = [(f"long{int(args.long_minutes)}min", min(args.speakers, len(voices)), args.long_minutes)]
    else:
        hi = min(args.max_speakers, len(voices))
        jobs = [(f"meeting{i:02d}", int(rng.integers(args.min_speakers, hi + 1)),
                 float(rng.uniform(args.min_minutes, args.max_minutes))) for i in range(args.count)]
    for uri, k, minutes in jobs:
        x, turns = meeting(voices, k, minutes, np.random.default_rng(rng.integers(2**32)))
        sf.write(args.out / f"{uri}.wav", x, SR, subtype="PCM_16")
        (args.out / f"{uri}.rttm").write_text(format_rttm(turns, uri))
        speech = sum(t.duration for t in turns)
        print(f"{uri}: {k} speakers, {len(x) / SR / 60:.1f} min, {len(turns)} turns, {speech / 60:.1f} min speech")


if __name__ == "__main__":
    main()
