#!/usr/bin/env python3
"""Benchmark ``whispdiar live``: play a recording into ``whispdiar live -`` at real-time
pace (this script paces the pipe) and measure what a user sees.

    python scripts/bench_live.py --model tiny.en --minutes 3          # synthetic meeting
    python scripts/bench_live.py --model base --audio sample.wav --rttm sample.rttm

Reports: latency from the end of each reference utterance (RTTM turns of one speaker
joined across gaps < 0.5 s) to the printed line that holds it (the last line whose
printed time, its first word's, is before that end; median, p95, max, first vs last
minute); CPU seconds and peak RSS of
the live process (psutil, every 0.5 s; RSS at minute 1 vs the end); WER of the live
lines against the refined (batch) transcript; agreement of live speaker labels with the
refined pass (one-to-one best mapping: share of the refined pass's speech time whose
line shows a speaker speaking there, and, stricter, of its speaker time, where an
overlapped frame counts once per speaker and a one-speaker line can match only one of
them); for the synthetic
meeting, the share of the enrolled readers' speech (``--enroll``, enrolled from
utterances the meeting does not use) whose live line carries their name, over all their
speech and over the part where no one else speaks; the instant tier's
time (input closed -> instant files written); and the instant finalization alone on
60 minutes' worth of utterances (library call, 1200 utterances of 4 voices).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import soundfile as sf
from scipy.optimize import linear_sum_assignment

ROOT = Path(__file__).resolve().parent.parent
LIBRISPEECH = ROOT.parent / "shared" / "data" / "librispeech"  # 5 readers x 10 utterances
sys.path.insert(0, str(ROOT))


def reference_utterances(rttm: Path, gap: float = 0.5) -> list[tuple[float, float, str]]:
    return join_turns([(float(p[3]), float(p[3]) + float(p[4]), p[7]) for p in (line.split() for line in rttm.open())
                       if p and p[0] == "SPEAKER"], gap)


def join_turns(turns: list[tuple[float, float, str]], gap: float = 0.5) -> list[tuple[float, float, str]]:
    """One speaker's turns joined across gaps shorter than ``gap``: the reference utterances."""
    out: list[list] = []
    for s, e, who in sorted(turns):
        if out and out[-1][2] == who and s - out[-1][1] < gap:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e, who])
    return [(a, b, c) for a, b, c in out]


def words(text: str) -> list[str]:
    return re.sub(r"[^\w' ]+", " ", text.lower()).split()


def wer(ref: list[str], hyp: list[str]) -> float:
    if not ref:
        return 0.0
    prev = np.arange(len(hyp) + 1)
    h = np.array(hyp, dtype=object)
    for i, r in enumerate(ref, 1):
        cur = np.empty_like(prev)
        cur[0] = i
        sub = prev[:-1] + (h != r)
        cur[1:] = np.minimum(sub, prev[1:] + 1)
        for j in range(1, len(cur)):  # insertions run left to right
            if cur[j - 1] + 1 < cur[j]:
                cur[j] = cur[j - 1] + 1
        prev = cur
    return float(prev[-1]) / len(ref)


def agreement(lines: list[tuple[float, str]], turns: list[dict], end: float, per: str = "speech") -> float:
    """Agreement of the live labels with ``turns`` (the refined pass), best one-to-one
    mapping of labels, on 10-ms frames; a frame's live label is that of the latest line
    starting at or before it (frames before the first line have none and are left out).

    ``per="speech"``: share of the speech time (frames where anyone speaks in ``turns``)
    whose live label maps to a speaker speaking there: a line shows one speaker, so in
    overlap it agrees when it shows either. ``per="speaker"``: share of the speaker time
    (an overlapped frame counts once per speaker), so overlap can never fully agree."""
    if not lines or not turns:
        return 0.0
    t = np.arange(0.0, max(end, max(x["end"] for x in turns)), 0.01)
    order = sorted(lines)
    k = np.searchsorted(np.array([a for a, _ in order]), t, side="right") - 1
    live_names = sorted({n for _, n in order})
    ref_names = sorted({x["speaker"] for x in turns})
    active = np.zeros((len(ref_names), len(t)), bool)
    for x in turns:
        active[ref_names.index(x["speaker"]), (t >= x["start"]) & (t < x["end"])] = True
    index = {n: j for j, n in enumerate(live_names)}
    shown = np.array([index[order[i][1]] if i >= 0 else -1 for i in k])
    m = np.stack([(active & (shown == j)).sum(axis=1) for j in range(len(live_names))], axis=1).astype(float)
    r, c = linear_sum_assignment(m, maximize=True)
    if per == "speaker":
        return float(m[r, c].sum() / max(1, m.sum()))
    mapped = np.full(len(live_names) + 1, -1)
    mapped[c] = r  # live label -> refined speaker (index -1: shown is -1, before any line)
    ok = np.zeros(len(t), bool)
    has = (shown >= 0) & (mapped[shown] >= 0)
    ok[has] = active[mapped[shown[has]], np.flatnonzero(has)]
    speech = active.any(axis=0) & (shown >= 0)
    return float((ok & speech).sum() / max(1, speech.sum()))


def named_live(lines: list[tuple[float, str]], rttm: Path, enrolled: dict[str, str]) -> tuple:
    """Share of the enrolled readers' reference speech (10 ms frames) whose live line (the
    latest starting at or before the frame) shows their name; and the same over the frames
    where no one else speaks (a live line is one speaker: in overlap one of two is named)."""
    if not enrolled or not lines:
        return None, None
    turns = [(float(p[3]), float(p[3]) + float(p[4]), p[7]) for p in (ln.split() for ln in rttm.open())
             if p and p[0] == "SPEAKER"]
    end = max(e for _, e, _ in turns)
    t = np.arange(0.0, end, 0.01)
    active = {who: np.zeros(len(t), bool) for who in {w for _, _, w in turns}}
    for s0, e, who in turns:
        active[who][(t >= s0) & (t < e)] = True
    busy = sum(a.astype(int) for a in active.values())
    order = sorted(lines)
    starts = np.array([a for a, _ in order])
    k = np.searchsorted(starts, t, side="right") - 1
    shown = np.array([order[i][1] if i >= 0 else "" for i in k], dtype=object)
    all_ok = all_n = one_ok = one_n = 0
    for who, name in enrolled.items():
        mine = active[who]
        ok = mine & (shown == name)
        all_ok, all_n = all_ok + ok.sum(), all_n + mine.sum()
        one_ok, one_n = one_ok + (ok & (busy == 1)).sum(), one_n + (mine & (busy == 1)).sum()
    return round(all_ok / max(1, all_n), 3), round(one_ok / max(1, one_n), 3)


def instant_on_60_minutes() -> float:
    from whispdiar.live.events import LiveUtterance
    from whispdiar.live.finalize import build_result, recluster
    from whispdiar.outputs.writers import render
    from whispdiar.records import Word

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 192))
    utts = []
    for i in range(1200):  # one utterance every 3 s for 60 minutes
        e = centres[i % 4] + rng.normal(scale=0.9, size=192)
        ws = [Word(f"w{j}", i * 3 + j * 0.3, i * 3 + j * 0.3 + 0.25, 0.9) for j in range(8)]
        utts.append(LiveUtterance(i, i * 3.0, i * 3.0 + 2.6, " ".join(w.text for w in ws), ws, f"S{i % 4}",
                                  f"Speaker {i % 4 + 1}", 2.4, e.astype(np.float32)))
    t0 = time.perf_counter()
    names = recluster(utts, {})
    result = build_result(utts, names, "live", 3600.0, "en", {})
    for fmt in ("json", "txt", "srt"):
        render(result, fmt)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny.en")
    ap.add_argument("--audio", type=Path, action="append",
                    help="a real recording (16 kHz); several are played back to back, 1 s apart")
    ap.add_argument("--rttm", type=Path, action="append", help="its reference, one per --audio")
    ap.add_argument("--minutes", type=float, default=3.0, help="synthetic meeting length (without --audio)")
    ap.add_argument("--speakers", type=int, default=3)
    ap.add_argument("--work", type=Path, default=Path("/tmp/wd-bench-live"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--enroll", type=int, default=2,
                    help="synthetic meeting: enroll this many of its readers (from utterances it does not use)")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    db = args.work / "speakers.db"
    db.unlink(missing_ok=True)
    enrolled: dict[str, str] = {}  # reference label -> enrolled name
    if args.audio is None:
        # The meeting uses each reader's first 7 utterances; the other 3 enroll them, so
        # no enrolled second is heard in the meeting.
        source, held = args.work / "source", args.work / "enroll"
        for r in sorted(p for p in LIBRISPEECH.iterdir() if p.is_dir()):
            files = sorted(r.glob("*.flac"))
            for dest, part in ((source, files[:7]), (held, files[7:])):
                (dest / r.name).mkdir(parents=True, exist_ok=True)
                for f in part:
                    link = dest / r.name / f.name
                    if not link.exists():
                        link.symlink_to(f)
        folder = args.work / f"meeting-{args.minutes:g}"
        if not list(folder.glob("*.wav")):
            subprocess.run([sys.executable, str(ROOT / "scripts/make_meetings.py"), "--out", str(folder),
                            "--source", str(source), "--long-minutes", str(args.minutes),
                            "--speakers", str(args.speakers), "--seed", "7"], check=True)
        args.audio = [next(folder.glob("*.wav"))]
        args.rttm = [args.audio[0].with_suffix(".rttm")]
        labels = sorted({who for _, _, who in reference_utterances(args.rttm[0])})
        for label in labels[: args.enroll]:
            name = f"Reader {label.removeprefix('spk')}"
            subprocess.run([sys.executable, "-m", "whispdiar", "enroll", name, *map(str, sorted(
                (held / label.removeprefix("spk")).glob("*.flac"))), "--speakers-db", str(db), "-q"],
                check=True, cwd=ROOT, env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
            enrolled[label] = name
    assert len(args.audio) == len(args.rttm), "one --rttm per --audio"
    x, clips, rttm = play_list(args.audio, args.rttm, args.work)
    sr = 16000
    out_dir = args.work / f"out-{args.model}"
    out_dir.mkdir(exist_ok=True)
    cmd = [sys.executable, "-m", "whispdiar", "live", "-", "--format", "s16le", "-m", args.model, "-f", "json",
           "-d", str(out_dir), "--save", str(args.work / "rec.wav"), "--threads", str(args.threads),
           "--speakers-db", str(db)]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=ROOT, env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    ps = psutil.Process(proc.pid)
    lines: list[tuple[float, float, str, str]] = []  # (arrival s since start, line start, name, text)
    stderr: list[tuple[float, str]] = []
    t0 = time.monotonic()

    def read_out() -> None:
        for raw in proc.stdout:
            s = raw.decode()
            if s.startswith("["):
                stamp, rest = s[1:].split("] ", 1)
                parts = [float(p) for p in stamp.split(":")]
                start = sum(p * 60 ** (len(parts) - 1 - i) for i, p in enumerate(parts))
                name, _, text = rest.rstrip("\n").partition(": ")
                lines.append((time.monotonic() - t0, start, name, text))

    def read_err() -> None:
        for raw in proc.stderr:
            stderr.append((time.monotonic() - t0, raw.decode().rstrip()))

    samples: list[tuple[float, int, float]] = []  # (t, rss, cpu seconds)

    def watch() -> None:
        while proc.poll() is None:
            try:
                c = ps.cpu_times()
                samples.append((time.monotonic() - t0, ps.memory_info().rss, c.user + c.system))
            except psutil.Error:
                return
            time.sleep(0.5)

    for f in (read_out, read_err, watch):
        threading.Thread(target=f, daemon=True).start()
    time.sleep(3.0)  # model loading before the "meeting" starts, as a user would wait for it
    t0 = time.monotonic()
    step = 1600
    for i in range(0, len(x), step):
        proc.stdin.write(x[i:i + step].tobytes())
        proc.stdin.flush()
        d = (i + step) / sr - (time.monotonic() - t0)
        if d > 0:
            time.sleep(d)
    proc.stdin.close()
    closed = time.monotonic() - t0
    proc.wait()
    time.sleep(0.5)
    duration = len(x) / sr
    refs = reference_utterances(rttm)
    lat = []
    for _s, e, _ in refs:
        cands = [ln for ln in lines if ln[1] < e]
        if cands:
            arrival = max(cands, key=lambda ln: ln[1])[0]
            if arrival >= e - 0.5:
                lat.append((e, arrival - e))
    named = named_live([(ln[1], ln[2]) for ln in lines], rttm, enrolled)
    la = np.array([v for _, v in lat])
    first = np.array([v for t, v in lat if t < 60]) if lat else la
    last = np.array([v for t, v in lat if t >= duration - 60]) if lat else la
    refined = json.loads((out_dir / "rec.json").read_text())
    batch_text = " ".join(s["text"] for s in refined["segments"])
    live_text = " ".join(ln[3] for ln in lines)
    instant_at = next((t for t, m in stderr if m.startswith("wrote")), None)
    rss = [r for _, r, _ in samples]
    rss1 = [r for t, r, _ in samples if 55 <= t <= 65] or rss[:1]
    cpu = samples[-1][2] if samples else float("nan")
    report = {
        "model": args.model, "audio": str(args.audio), "minutes": round(duration / 60, 2), "threads": args.threads,
        "lines": len(lines), "reference_utterances": len(refs), "measured": len(la),
        "latency_median": round(float(np.median(la)), 2), "latency_p95": round(float(np.percentile(la, 95)), 2),
        "latency_max": round(float(la.max()), 2),
        "latency_median_first_minute": round(float(np.median(first)), 2) if len(first) else None,
        "latency_median_last_minute": round(float(np.median(last)), 2) if len(last) else None,
        "cpu_seconds": round(cpu, 1), "cpu_share_of_one_core": round(cpu / (closed + 3.0), 2),
        "peak_rss_mb": round(max(rss) / 2**20), "rss_minute1_mb": round(max(rss1) / 2**20),
        "rss_end_of_input_mb": round(max(r for t, r, _ in samples if t <= closed) / 2**20),
        "wer_live_vs_batch": round(wer(words(batch_text), words(live_text)), 3),
        "agreement_live_vs_refined": round(agreement([(ln[1], ln[2]) for ln in lines], refined["turns"],
                                                     duration), 3),
        "agreement_per_recording": per_clip_agreement(lines, refined["turns"], clips),
        "agreement_per_recording_speaker_time": per_clip_agreement(lines, refined["turns"], clips, "speaker"),
        "enrolled": sorted(enrolled.values()),
        "enrolled_named_live": named[0], "enrolled_named_live_single_speaker": named[1],
        "instant_seconds_after_input_end": round(instant_at - closed, 2) if instant_at else None,
        "instant_finalization_60min_library_s": round(instant_on_60_minutes(), 2),
        "degraded": [m for _, m in stderr if "falling behind" in m][:3],
        "final_line": stderr[-1][1] if stderr else "",
    }
    (args.work / f"lines-{args.model}.json").write_text(json.dumps(lines))
    print(json.dumps(report, indent=2))


def play_list(audio: list[Path], rttms: list[Path], work: Path) -> tuple[np.ndarray, list, Path]:
    """The recordings back to back (16-bit, 1 s of silence after each), their spans, and one
    RTTM for all (speakers prefixed by the recording's name)."""
    parts, clips, lines, at = [], [], [], 0.0
    for wav, ref in zip(audio, rttms, strict=True):
        # float32 then 16-bit: libsndfile reads a float WAV (AMI's) as int16 without
        # scaling, i.e. as zeros
        x, sr = sf.read(wav, dtype="float32")
        x = x if x.ndim == 1 else x[:, 0]
        assert sr == 16000, f"{wav}: 16 kHz input expected"
        parts += [(np.clip(x, -1.0, 32767 / 32768) * 32768).astype(np.int16), np.zeros(sr if len(audio) > 1 else 0,
                                                                                      np.int16)]
        rows = [p for p in (ln.split() for ln in ref.open()) if p and p[0] == "SPEAKER"]
        if any(p[1] == wav.stem for p in rows):  # one RTTM for several recordings (AMI's train.rttm)
            rows = [p for p in rows if p[1] == wav.stem]
        for p in rows:
            who = p[7] if len(audio) == 1 else f"{wav.stem}-{p[7]}"
            lines.append(f"SPEAKER play 1 {at + float(p[3]):.3f} {p[4]} <NA> <NA> {who} <NA> <NA>")
        clips.append((wav.stem, at, at + len(x) / sr))
        at += len(x) / sr + (1.0 if len(audio) > 1 else 0.0)
    rttm = rttms[0] if len(audio) == 1 else work / "play.rttm"
    if len(audio) > 1:
        rttm.write_text("\n".join(lines) + "\n")
    return np.concatenate(parts), clips, rttm


def per_clip_agreement(lines: list, turns: list[dict], clips: list, per: str = "speech") -> dict:
    """Live/refined agreement inside each recording (its own best mapping), and their
    speech-weighted mean: one recording is one meeting, whatever was played after it."""
    out, num, den = {}, 0.0, 0.0
    for name, a, b in clips:
        ls = [(ln[1], ln[2]) for ln in lines if a <= ln[1] < b]
        ts = [t for t in turns if a <= t["start"] < b]
        speech = sum(t["end"] - t["start"] for t in ts)
        if not ls or not ts:
            continue
        out[name] = round(agreement(ls, ts, b, per), 3)
        num, den = num + out[name] * speech, den + speech
    return {"mean": round(num / den, 3) if den else None, "each": out}


if __name__ == "__main__":
    main()
