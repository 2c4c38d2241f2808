#!/usr/bin/env python3
"""Choose the live endpointing defaults (``EndpointConfig``) across data sets.

Every file of every set goes through a real ``LiveSession`` (Silero VAD endpointing,
segmentation-3.0 change cuts, CAM++ online speakers, whisper) for each configuration,
fed block by block as fast as the session keeps up: after each 0.1-s block the script
waits until the session is idle, so it knows the stream time at which each line's
utterance was cut and how long its decode took. Real-time latency is then replayed as
one decoder serving lines in order (a line waits for the decode before it), which is
what ``whispdiar live`` does on a machine that keeps up (the VAD and change checks run
beside it). Scored per file, pooled per set:

- latency from the end of each reference utterance (one speaker's RTTM turns joined
  across gaps < 0.5 s) to the line holding it (the last line whose shown time, its
  first word, is before that end), as scripts/bench_live.py measures it: median and p95;
- WER of the live text against the batch transcript of the same file (same model);
- line purity: share of the reference speech inside lines that belongs to each line's
  main speaker (what any labelling of the lines could get right at best).

    python scripts/tune_live.py --set ami=/work/shared/data/ami_debug \\
        --set sample=/tmp/wd-sample --set room=/tmp/wd-dev4/room --max-minutes 1.5 \\
        --config default --config change_every=0.5 --config min_silence=0.4

A folder holds ``*.wav`` with ``*.rttm`` beside them (or one ``*.rttm`` for all files).
A default changes only when its gain shows on every set (docs/live.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_live import join_turns, wer, words  # noqa: E402

from whispdiar.live.events import Final, Finished  # noqa: E402
from whispdiar.live.session import LiveConfig, LiveEngines, LiveSession  # noqa: E402
from whispdiar.live.utterances import EndpointConfig, Endpointer, Utterance  # noqa: E402

BLOCK = 1600


def read_turns(folder: Path) -> dict[str, list[tuple[float, float, str]]]:
    turns: dict[str, list[tuple[float, float, str]]] = {}
    for rttm in sorted(folder.glob("*.rttm")):
        for line in rttm.open():
            p = line.split()
            if p and p[0] == "SPEAKER":
                turns.setdefault(p[1], []).append((float(p[3]), float(p[3]) + float(p[4]), p[7]))
    return turns


def files_of(folder: Path, max_minutes: float) -> list[tuple[str, Path, list]]:
    turns = read_turns(folder)
    out = []
    for wav in sorted(folder.glob("*.wav")):
        uri = wav.stem if wav.stem in turns else next((k for k in turns if wav.stem.endswith(k)), None)
        if uri is None or sf.info(wav).duration > max_minutes * 60:
            continue
        out.append((wav.stem, wav, sorted(turns[uri])))
    return out


def cut_stream(ep: Endpointer, x: np.ndarray) -> list[Utterance]:
    """``x`` cut as a session cuts it: fed in 0.1-s blocks, then flushed."""
    utts = []
    for i in range(0, len(x), BLOCK):
        utts += ep.feed(x[i:i + BLOCK])
    last = ep.flush()
    return utts + ([last] if last is not None else [])


def run_live(engines: LiveEngines, x: np.ndarray, config: LiveConfig) -> list[dict]:
    """Lines with their cut time (stream s) and decode time (wall s)."""
    session = LiveSession(engines, config)
    lines: list[dict] = []
    marks: list[tuple[float, float]] = []  # (stream time when the block went in, wall time)
    done = threading.Event()

    def drain() -> None:
        while True:
            e = session.get(0.5)
            if isinstance(e, Final):
                u = e.utterance
                lines.append({"start": u.start, "end": u.end, "shown": u.speech_start, "label": u.label,
                              "text": u.text, "wall": time.monotonic()})
            elif isinstance(e, Finished):
                done.set()
                return

    threading.Thread(target=drain, daemon=True).start()
    try:
        for i in range(0, len(x), BLOCK):
            t = time.monotonic()
            marks.append(((i + BLOCK) / 16000, t))
            session.feed(x[i:i + BLOCK])
            while not session.idle:
                time.sleep(0.002)
        session.end()
        done.wait()
    finally:
        session.close()
    # each line belongs to the last block fed before it came out; its service time runs
    # from that block's feed to the line (lines of one decode share it)
    walls = np.array([w for _, w in marks])
    for ln in lines:
        k = max(0, int(np.searchsorted(walls, ln["wall"])) - 1)
        ln["cut"] = min(marks[k][0], len(x) / 16000)
        ln["service"] = ln["wall"] - marks[k][1]
    return replay(lines)


def replay(lines: list[dict]) -> list[dict]:
    """Arrival times at real-time pace: one decoder, lines of one cut decoded together."""
    free = 0.0
    groups: dict[float, list[dict]] = {}
    for ln in lines:
        groups.setdefault(ln["cut"], []).append(ln)
    for cut in sorted(groups):
        g = groups[cut]
        start = max(cut, free)
        for ln in g:
            ln["arrival"] = start + ln["service"]
        free = start + max(ln["service"] for ln in g)
    return lines


def latencies(lines: list[dict], turns: list) -> list[float]:
    refs = join_turns(turns)
    out = []
    for _s, e, _ in refs:
        cands = [ln for ln in lines if ln["shown"] < e]  # the time its line shows
        if cands:
            arrival = max(cands, key=lambda ln: ln["shown"])["arrival"]
            if arrival >= e - 0.5:
                out.append(arrival - e)
    return out


def purity(lines: list[dict], turns: list, duration: float) -> tuple[float, float]:
    """(speech of each line's main speaker, reference speech inside lines) in seconds."""
    n = int(duration * 100) + 1
    names = sorted({w for _, _, w in turns})
    ref = np.zeros((len(names), n), bool)
    for s, e, w in turns:
        ref[names.index(w), int(s * 100):int(e * 100)] = True
    main = inside = 0.0
    for ln in lines:
        a, b = int(ln["start"] * 100), int(ln["end"] * 100)
        per = ref[:, a:b].sum(axis=1)
        main += per.max(initial=0) / 100
        inside += per.sum() / 100
    return main, inside


def parse_config(text: str) -> tuple[str, LiveConfig]:
    """'default', or k=v[,k=v] of EndpointConfig or LiveConfig (whisper gets one thread)."""
    if text == "default":
        return text, LiveConfig(threads=1)
    endpoint, live = {}, {}
    for part in text.split(","):
        k, v = part.split("=")
        (endpoint if k in EndpointConfig.__dataclass_fields__ else live)[k] = float(v)
    return text, LiveConfig(**{"threads": 1, **live}, endpoint=EndpointConfig(**endpoint))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", action="append", required=True, help="NAME=FOLDER")
    ap.add_argument("--config", action="append", default=[], help="'default' or k=v[,k=v] of EndpointConfig/LiveConfig")
    ap.add_argument("--model", default="tiny.en")
    ap.add_argument("--max-minutes", type=float, default=5.0, help="skip longer files")
    ap.add_argument("--max-files", type=int, default=10)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/wd-tune-live"))
    args = ap.parse_args()
    configs = [parse_config(c) for c in (args.config or ["default"])]
    args.cache.mkdir(parents=True, exist_ok=True)
    import whispdiar

    engines = LiveEngines.load(args.model, threads=2)
    rows = []
    try:
        for spec in args.set:
            name, folder = spec.split("=", 1)
            for stem, wav, turns in files_of(Path(folder), args.max_minutes)[: args.max_files]:
                x, sr = sf.read(wav, dtype="float32")
                x = x if x.ndim == 1 else x[:, 0]
                assert sr == 16000, wav
                ref_text = args.cache / f"{name}-{stem}-{args.model}.txt"
                if not ref_text.exists():
                    r = whispdiar.transcribe(wav, model=args.model, diarize=False, threads=2)
                    ref_text.write_text(" ".join(s.text for s in r.segments))
                batch_words = words(ref_text.read_text())
                for label, cfg in configs:
                    lines = run_live(engines, x, cfg)
                    lat = latencies(lines, turns)
                    main_s, inside = purity(lines, turns, len(x) / sr)
                    hyp = words(" ".join(ln["text"] for ln in lines))
                    row = {"set": name, "file": stem, "config": label, "lat": lat, "main": main_s,
                           "inside": inside, "ref_words": len(batch_words),
                           "errors": wer(batch_words, hyp) * len(batch_words), "lines": len(lines)}
                    rows.append(row)
                    print(json.dumps({k: (round(float(np.median(v)), 2) if k == "lat" and v else v)
                                      for k, v in row.items()}), file=sys.stderr, flush=True)
    finally:
        engines.close()
    report(rows, [c for c, _ in configs])
    (args.cache / "rows.json").write_text(json.dumps(rows))


def report(rows: list[dict], configs: list[str]) -> None:
    sets = list(dict.fromkeys(r["set"] for r in rows))
    print("| config | " + " | ".join(f"{s}: median / p95 latency, WER, purity" for s in sets) + " |")
    print("|---|" + "---|" * len(sets))
    for c in configs:
        cells = []
        for s in sets:
            rs = [r for r in rows if r["set"] == s and r["config"] == c]
            lat = np.array([v for r in rs for v in r["lat"]])
            w = sum(r["errors"] for r in rs) / max(1, sum(r["ref_words"] for r in rs))
            p = sum(r["main"] for r in rs) / max(1e-9, sum(r["inside"] for r in rs))
            cells.append(f"{np.median(lat):.2f} / {np.percentile(lat, 95):.2f} s, {100 * w:.1f} %, {100 * p:.1f} %"
                         if len(lat) else "—")
        print(f"| {c} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
