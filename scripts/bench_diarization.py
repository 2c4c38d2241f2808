#!/usr/bin/env python3
"""Diarization benchmark: DER, speaker count, speed and peak memory, ours vs sherpa-onnx.

For each data set (a folder of WAVs with RTTM references, optional UEM) and each
system, every file is diarized in a fresh subprocess, so the reported peak RSS
(ru_maxrss of that child) belongs to one system on one file and includes model loading.
Wall time is the diarization call alone (model loading is reported separately).

Systems:
  ours            whispdiar.diarization.diarizer.Diarizer, no speaker-count hint
  ours-oracle     the same, told the true number of speakers
  sherpa          sherpa-onnx OfflineSpeakerDiarization, default clustering threshold
  sherpa-oracle   sherpa-onnx told the true number of speakers
sherpa-onnx gets the SAME two ONNX files; it needs metadata in them, which is added to
copies in a temporary folder (needs the `onnx` package: pip install onnx).

DER is pyannote.metrics' DiarizationErrorRate with overlap scored, at collar 0 and
collar 0.25 (pyannote's convention: the collar is the total width removed around each
reference boundary, i.e. +-0.125 s), per file and pooled over a data set.

    python scripts/bench_diarization.py \\
        --dataset ami=/work/shared/data/ami_debug --dataset sample=/tmp/wd-samples \\
        --dataset meetings=/tmp/wd-meetings-test --dataset long=/tmp/wd-long \\
        --systems ours,sherpa,sherpa-oracle --markdown table.md
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


# ---------------------------------------------------------------- worker side
def default_model(name: str, file: str) -> Path:
    try:
        from whispdiar import models

        return models.resolve(name)
    except Exception:
        home = os.environ.get("WHISPDIAR_HOME")
        if home and (Path(home) / "models" / file).is_file():
            return Path(home) / "models" / file
        return Path("/tmp/wd-models") / file


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def worker(args: argparse.Namespace) -> None:
    """Diarize one file with one system; print one JSON line."""
    t0 = time.perf_counter()
    if args.worker.startswith("ours"):
        from whispdiar.diarization.diarizer import DiarizationConfig, Diarizer

        cfg = DiarizationConfig(**json.loads(args.config)) if args.config else None
        d = Diarizer(args.segmentation, args.embedding, threads=args.threads, config=cfg)
        loaded = time.perf_counter()
        cpu0 = cpu_seconds()
        result = d(args.audio, num_speakers=args.num_speakers)
        turns = [(t.start, t.end, t.speaker) for t in result.turns]
    else:
        import numpy as np
        import sherpa_onnx
        import soundfile as sf

        seg_model, emb_model = args.segmentation, args.embedding
        clustering = sherpa_onnx.FastClusteringConfig(num_clusters=args.num_speakers or -1)
        config = sherpa_onnx.OfflineSpeakerDiarizationConfig(
            segmentation=sherpa_onnx.OfflineSpeakerSegmentationModelConfig(
                pyannote=sherpa_onnx.OfflineSpeakerSegmentationPyannoteModelConfig(model=str(seg_model)),
                num_threads=args.threads),
            embedding=sherpa_onnx.SpeakerEmbeddingExtractorConfig(model=str(emb_model), num_threads=args.threads),
            clustering=clustering,
        )
        if not config.validate():
            raise SystemExit("sherpa-onnx config invalid")
        sd = sherpa_onnx.OfflineSpeakerDiarization(config)
        loaded = time.perf_counter()
        cpu0 = cpu_seconds()
        x, sr = sf.read(args.audio, dtype="float32", always_2d=True)
        x = np.ascontiguousarray(x.mean(axis=1))
        if sr != sd.sample_rate:
            import soxr

            x = soxr.resample(x, sr, sd.sample_rate).astype(np.float32)
        segs = sd.process(x).sort_by_start_time()
        turns = [(s.start, s.end, f"S{s.speaker}") for s in segs]
    done = time.perf_counter()
    cpu = cpu_seconds() - cpu0
    load = os.getloadavg()[0]
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"turns": turns, "wall": done - loaded, "load": loaded - t0, "rss_mb": rss_mb,
                      "cpu": cpu, "loadavg": load}))


def sherpa_models(seg: Path, emb: Path, tmp: Path) -> tuple[Path, Path]:
    """Copies of the two models with the metadata sherpa-onnx reads."""
    import onnx

    meta = {
        seg: {"model_type": "pyannote-segmentation-3.0", "version": "1", "sample_rate": "16000",
              "window_size": "160000", "window_shift": "16000", "receptive_field_size": "991",
              "receptive_field_shift": "270", "num_speakers": "3", "powerset_max_classes": "2",
              "num_classes": "7"},
        emb: {"framework": "3d-speaker", "language": "Chinese-English", "sample_rate": "16000",
              "output_dim": "192", "normalize_samples": "1", "feature_normalize_type": "global-mean"},
    }
    out = []
    for src, kv in meta.items():
        m = onnx.load(str(src))
        del m.metadata_props[:]
        for k, v in kv.items():
            m.metadata_props.add(key=k, value=v)
        dst = tmp / src.name
        onnx.save(m, str(dst))
        out.append(dst)
    return out[0], out[1]


# ---------------------------------------------------------------- driver side
@dataclass
class FileRun:
    uri: str
    duration: float
    ref_speakers: int
    hyp_speakers: int
    der0: float
    der25: float
    wall: float
    load: float
    rss_mb: float
    cpu: float
    loadavg: float


@dataclass
class SystemResult:
    runs: list[FileRun] = field(default_factory=list)
    pooled0: float = 0.0
    pooled25: float = 0.0
    parts: tuple[float, float, float] = (0.0, 0.0, 0.0)  # miss, false alarm, confusion (c0)


def read_references(folder: Path) -> tuple[dict, dict]:
    from pyannote.core import Annotation, Segment, Timeline

    from whispdiar.outputs.rttm import parse_rttm

    refs: dict[str, Annotation] = {}
    for f in sorted(folder.glob("*.rttm")):
        for uri, turns in parse_rttm(f.read_text(encoding="utf-8")).items():
            ann = refs.setdefault(uri, Annotation(uri=uri))
            for t in turns:
                ann[Segment(t.start, t.end), len(ann)] = t.speaker
    uems: dict[str, Timeline] = {}
    for f in sorted(folder.glob("*.uem")):
        for line in f.read_text().splitlines():
            p = line.split()
            if len(p) >= 4:
                uems.setdefault(p[0], Timeline(uri=p[0])).add(Segment(float(p[2]), float(p[3])))
    return refs, uems


def run_child(system: str, audio: Path, args: argparse.Namespace, seg: Path, emb: Path,
              num_speakers: int | None) -> dict:
    cmd = [sys.executable, __file__, "--worker", system, "--audio", str(audio), "--segmentation", str(seg),
           "--embedding", str(emb), "--threads", str(args.threads)]
    if num_speakers:
        cmd += ["--num-speakers", str(num_speakers)]
    if args.config and system.startswith("ours"):
        cmd += ["--config", args.config]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{system} on {audio} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--audio", help=argparse.SUPPRESS)
    ap.add_argument("--num-speakers", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--dataset", action="append", default=[], help="NAME=FOLDER (WAVs + RTTM [+ UEM])")
    ap.add_argument("--systems", default="ours,sherpa,sherpa-oracle")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--segmentation", type=Path, default=None)
    ap.add_argument("--embedding", type=Path, default=None)
    ap.add_argument("--config", default=None, help="JSON overrides of DiarizationConfig (ours)")
    ap.add_argument("--json", type=Path, help="write all per-file results here")
    ap.add_argument("--markdown", type=Path, help="write the summary table here")
    ap.add_argument("--quiet", action="store_true", help="no per-file lines")
    args = ap.parse_args()
    args.segmentation = args.segmentation or default_model("segmentation-3.0", "segmentation-3.0.onnx")
    args.embedding = args.embedding or default_model("campplus", "campplus_cn_en_common.onnx")
    if args.worker:
        worker(args)
        return

    from pyannote.metrics.diarization import DiarizationErrorRate

    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    results: dict[tuple[str, str], SystemResult] = {}
    with tempfile.TemporaryDirectory(prefix="bench-diar-") as tmp:
        sherpa_seg = sherpa_emb = None
        if any(s.startswith("sherpa") for s in systems):
            sherpa_seg, sherpa_emb = sherpa_models(args.segmentation, args.embedding, Path(tmp))
        for spec in args.dataset:
            name, folder = spec.split("=", 1)
            refs, uems = read_references(Path(folder))
            wavs = [w for w in sorted(Path(folder).glob("*.wav")) if w.stem in refs]
            for system in systems:
                m0 = DiarizationErrorRate(collar=0.0, skip_overlap=False)
                m25 = DiarizationErrorRate(collar=0.25, skip_overlap=False)
                res = results.setdefault((name, system), SystemResult())
                for wav in wavs:
                    run = score_one(system, wav, refs, uems, args, sherpa_seg, sherpa_emb, m0, m25)
                    res.runs.append(run)
                    if not args.quiet:
                        print(f"{name:9s} {system:14s} {run.uri:12s} DER {100 * run.der0:5.1f} / "
                              f"{100 * run.der25:5.1f}  spk {run.hyp_speakers}/{run.ref_speakers}  "
                              f"RTF {run.wall / run.duration:.4f}  CPU {run.cpu / run.duration:.4f}  "
                              f"RSS {run.rss_mb:.0f} MB  load {run.loadavg:.1f}", flush=True)
                res.pooled0, res.pooled25 = abs(m0), abs(m25)
                acc = m0.accumulated_
                total = max(acc["total"], 1e-9)
                res.parts = (acc["missed detection"] / total, acc["false alarm"] / total, acc["confusion"] / total)
    table = summary(results)
    print(table)
    if args.markdown:
        args.markdown.write_text(table)
    if args.json:
        args.json.write_text(json.dumps(
            {f"{n}/{s}": {"pooled_der0": r.pooled0, "pooled_der25": r.pooled25,
                          "files": [vars(x) for x in r.runs]} for (n, s), r in results.items()}, indent=1))


def score_one(system, wav, refs, uems, args, sherpa_seg, sherpa_emb, m0, m25) -> FileRun:
    import soundfile as sf
    from pyannote.core import Annotation, Segment, Timeline

    uri = wav.stem
    ref = refs[uri]
    duration = sf.info(str(wav)).duration
    uem = uems.get(uri) or Timeline([Segment(0, duration)], uri=uri)
    ref_speakers = len(ref.crop(uem).labels())
    oracle = system.endswith("oracle")
    seg, emb = (sherpa_seg, sherpa_emb) if system.startswith("sherpa") else (args.segmentation, args.embedding)
    out = run_child(system.removesuffix("-oracle"), wav, args, seg, emb,
                    len(ref.labels()) if oracle else None)
    hyp = Annotation(uri=uri)
    for i, (s, e, spk) in enumerate(out["turns"]):
        if e > s:
            hyp[Segment(s, e), i] = spk
    d0 = m0(ref, hyp, uem=uem)
    d25 = m25(ref, hyp, uem=uem)
    return FileRun(uri, duration, ref_speakers, len(hyp.crop(uem).labels()), d0, d25,
                   out["wall"], out["load"], out["rss_mb"], out["cpu"], out["loadavg"])


def summary(results: dict[tuple[str, str], SystemResult]) -> str:
    lines = ["| data set | system | files | audio (min) | DER c0 | DER c0.25 | miss / FA / conf (c0) | "
             "count exact | within ±1 | worst ratio | RTF (wall) | CPU s / audio s | peak RSS (MB) | load avg |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for (name, system), r in results.items():
        dur = sum(x.duration for x in r.runs)
        wall = sum(x.wall for x in r.runs)
        right = sum(x.hyp_speakers == x.ref_speakers for x in r.runs)
        near = sum(abs(x.hyp_speakers - x.ref_speakers) <= 1 for x in r.runs)
        ratios = [max(1, x.hyp_speakers) / max(1, x.ref_speakers) for x in r.runs]
        worst = max(ratios, key=lambda q: max(q, 1 / q))
        miss, fa, conf = (100 * v for v in r.parts)
        cpu = sum(x.cpu for x in r.runs)
        load = sum(x.loadavg for x in r.runs) / len(r.runs)
        lines.append(f"| {name} | {system} | {len(r.runs)} | {dur / 60:.1f} | {100 * r.pooled0:.1f} % | "
                     f"{100 * r.pooled25:.1f} % | {miss:.1f} / {fa:.1f} / {conf:.1f} | {right}/{len(r.runs)} | "
                     f"{near}/{len(r.runs)} | {worst:.2f} | {wall / dur:.4f} | {cpu / dur:.4f} | "
                     f"{max(x.rss_mb for x in r.runs):.0f} | {load:.1f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
