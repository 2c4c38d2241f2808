#!/usr/bin/env python3
"""Choose the live speaker rules (``OnlineSpeakers``) across data sets.

Live labels depend on the utterances the endpointer cuts and their CAM++ embeddings, not
on whisper. So each file is cut once, exactly as ``LiveSession`` cuts it (Silero VAD
endpointing in 0.1-s blocks, segmentation-3.0 change cuts, ``split_at_changes``), its
parts embedded (``utterance_embedding``) and cached with the batch diarizer's turns
(the refined tier's speakers). Each configuration then replays the online assignment
over the cached parts in milliseconds. Scored per file, pooled per set (speech-weighted):

- ``refined``: agreement of the live labels with the refined pass (share of the refined
  speech time whose line shows a speaker speaking there, best one-to-one mapping;
  scripts/bench_live.py), and the stricter share of its speaker time;
- ``ref``: the same against the reference RTTM (live speaker accuracy);
- ``ceiling``: ``refined`` if every line had its refined majority speaker (what the cut
  allows);
- ``count``: files whose live speaker count equals the reference's.

    python scripts/tune_live_speakers.py --set ami=/work/shared/data/ami_debug \\
        --set room=/tmp/wd-dev4/room --config default --config join=0.4

A folder holds ``*.wav`` with ``*.rttm`` beside them (or one ``*.rttm`` for all files).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_live import agreement  # noqa: E402
from tune_live import cut_stream, files_of  # noqa: E402

from whispdiar import models  # noqa: E402
from whispdiar.asr.vad import SileroVad  # noqa: E402
from whispdiar.audio.read import SAMPLE_RATE, load  # noqa: E402
from whispdiar.diarization.embedding import SpeakerEmbedder  # noqa: E402
from whispdiar.diarization.segmentation import Segmenter  # noqa: E402
from whispdiar.live.online_speakers import OnlineSpeakers  # noqa: E402
from whispdiar.live.session import utterance_embedding  # noqa: E402
from whispdiar.live.turns import change_points, split_at_changes  # noqa: E402
from whispdiar.live.utterances import EndpointConfig, Endpointer  # noqa: E402


class Engines:
    def __init__(self) -> None:
        self.vad = SileroVad(models.resolve("silero-vad"), threads=1, lanes=1)
        self.seg = Segmenter(models.resolve("segmentation-3.0"), threads=1)
        self.emb = SpeakerEmbedder(models.resolve("campplus"), threads=2)
        self._diarizer = None

    def parts(self, x: np.ndarray) -> list[dict]:
        cfg = EndpointConfig()
        ep = Endpointer(self.vad.stream(), cfg, lambda s: change_points(self.seg, s, cfg.change_min_turn))
        out = []
        for u in cut_stream(ep, x):
            for p in split_at_changes(self.seg, u):
                e = utterance_embedding(self.emb, p)
                out.append({"start": p.start, "end": p.end, "speech": p.speech_seconds,
                            "embedding": None if e is None else e.tolist()})
        return out

    def refined(self, wav: Path) -> list[dict]:
        if self._diarizer is None:
            from whispdiar.diarization.diarizer import Diarizer
            self._diarizer = Diarizer(models.resolve("segmentation-3.0"), models.resolve("campplus"), threads=2)
        r = self._diarizer(wav)
        return [{"start": t.start, "end": t.end, "speaker": t.speaker} for t in r.turns]


def cached(engines: Engines | None, cache: Path, name: str, wav: Path) -> tuple[Engines, dict]:
    f = cache / f"{name}.json"
    if f.exists():
        return engines, json.loads(f.read_text())
    engines = engines or Engines()
    x = load(wav)
    data = {"parts": engines.parts(x), "refined": engines.refined(wav), "duration": len(x) / SAMPLE_RATE}
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text(json.dumps(data))
    return engines, data


def live_labels(parts: list[dict], **kw) -> list[tuple[float, str]]:
    sp = OnlineSpeakers({}, **kw)
    out = []
    for p in parts:
        e = None if p["embedding"] is None else np.asarray(p["embedding"], np.float32)
        out.append((p["start"], sp.assign(e, p["speech"]).speaker.label))
    return out


def oracle(lines: list[tuple[float, str]], turns: list[dict], end: float) -> list[tuple[float, str]]:
    """Each line labelled with the speaker holding most of its span in ``turns``."""
    starts = [t for t, _ in lines] + [end]
    out = []
    for k, (a, _) in enumerate(lines):
        b = starts[k + 1]
        held: dict[str, float] = {}
        for t in turns:
            o = min(b, t["end"]) - max(a, t["start"])
            if o > 0:
                held[t["speaker"]] = held.get(t["speaker"], 0.0) + o
        out.append((a, max(held, key=held.get) if held else "none"))
    return out


def parse_config(text: str) -> tuple[str, dict]:
    if text == "default":
        return text, {}
    kw = {}
    for item in text.split(","):
        k, v = item.split("=")
        kw[k] = float(v)
    return text, kw


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", action="append", required=True, metavar="NAME=FOLDER")
    ap.add_argument("--config", action="append", default=[], help="default, or k=v[,k=v] of OnlineSpeakers")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/wd-live-speakers"))
    ap.add_argument("--max-minutes", type=float, default=6.0)
    ap.add_argument("--json", type=Path, help="write the per-file scores here")
    args = ap.parse_args()
    configs = [parse_config(c) for c in (args.config or ["default"])]
    engines = None
    rows = []
    for item in args.set:
        set_name, folder = item.split("=", 1)
        for name, wav, turns in files_of(Path(folder), args.max_minutes):
            engines, data = cached(engines, args.cache / set_name, name, wav)
            ref = [{"start": a, "end": b, "speaker": s} for a, b, s in turns]
            end = data["duration"]
            speech = sum(t["end"] - t["start"] for t in ref)
            for label, kw in configs:
                lines = live_labels(data["parts"], **kw)  # agreement() is 0 for no lines
                rows.append({
                    "set": set_name, "file": name, "config": label, "speech": speech,
                    "refined": agreement(lines, data["refined"], end),
                    "refined_speaker_time": agreement(lines, data["refined"], end, "speaker"),
                    "ref": agreement(lines, ref, end),
                    "ceiling": agreement(oracle(lines, data["refined"], end), data["refined"], end),
                    "live_speakers": len({s for _, s in lines}),
                    "ref_speakers": len({t["speaker"] for t in ref}),
                })
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    sets = list(dict.fromkeys(r["set"] for r in rows))
    print(f"{'config':28s}" + "".join(f"{s:>26s}" for s in sets) + f"{'pooled':>26s}")
    print(f"{'':28s}" + "".join(f"{'refined/spk/ref/count':>26s}" for _ in [*sets, 0]))
    def pooled(label: str, s: str | None, key: str) -> float:
        """Speech-weighted mean of ``key`` over one set's files (None: all sets)."""
        rs = [r for r in rows if r["config"] == label and (s is None or r["set"] == s)]
        w = np.array([r["speech"] for r in rs])
        return float(np.dot(w, [r[key] for r in rs]) / w.sum())

    for label, _ in configs:
        cells = []
        for s in [*sets, None]:
            rs = [r for r in rows if r["config"] == label and (s is None or r["set"] == s)]
            n = sum(r["live_speakers"] == r["ref_speakers"] for r in rs)
            ag, at, ac = (100 * pooled(label, s, k) for k in ("refined", "refined_speaker_time", "ref"))
            cells.append(f"{ag:6.1f} {at:5.1f} {ac:5.1f} {n:3d}/{len(rs):<3d}")
        print(f"{label:28s}" + "".join(f"{c:>26s}" for c in cells))
    ceil = [f"{100 * pooled(configs[0][0], s, 'ceiling'):6.1f}" for s in [*sets, None]]
    print(f"{'ceiling (' + configs[0][0] + ')':28s}" + "".join(f"{c:>26s}" for c in ceil))


if __name__ == "__main__":
    main()
