#!/usr/bin/env python3
"""Tuning harness for the clustering and reconstruction defaults (the evidence behind them).

Stage 1 (``Diarizer.analyse``: segmentation + embeddings) is the expensive part and does
not depend on any clustering or reconstruction parameter, so it is run ONCE per file and
cached as .npz; every variant of stages 2-3 is then scored from the cache in seconds.
The re-check by ear needs the audio and is not run here (its effect is measured with
scripts/bench_diarization.py).

    # cache stage 1 (one process, one file at a time) and score the defaults
    python scripts/tune_diarization.py --cache /tmp/wd-cache \\
        --dataset ami=/work/shared/data/ami_debug --dataset room=/tmp/wd-dev/room ...
    # one variant (JSON overrides of DiarizationConfig)
    python scripts/tune_diarization.py --cache /tmp/wd-cache --dataset ... --config '{"threshold": 0.9}'
    # leave-one-set-out cross-validation over a grid of variants
    python scripts/tune_diarization.py --cache /tmp/wd-cache --dataset ... \\
        --grid '{"spectral_pval": [0.01, 0.02, 0.05], "merge_cosine": [0.6, 0.7]}'

Scores: pyannote.metrics DER at collar 0 and 0.25 (overlap scored), its miss / false
alarm / confusion shares, and the speaker count (exact, within +-1, worst ratio
hyp/ref). In the cross-validation each held-out set gets the variant that is best on
the OTHER sets (mean of their pooled DER c0, each set weighing the same), so the number
reported for a set never saw that set.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from whispdiar.diarization.diarizer import Analysis, DiarizationConfig, Diarizer  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_diarization import read_references  # noqa: E402  (the same RTTM/UEM reading)


# ---------------------------------------------------------------- data and cache
@dataclass
class Item:
    set: str
    uri: str
    analysis: Analysis
    ref: object  # pyannote Annotation
    uem: object  # pyannote Timeline
    ref_speakers: int


BUCKETS = ((1, 1), (2, 2), (3, 5), (6, 10), (11, 20), (21, 50), (51, 10**6))


def bucket(speakers: int) -> str:
    """The speaker-count bucket of a file, e.g. ``spk03-05``; buckets sort in count order."""
    lo, hi = next(b for b in BUCKETS if b[0] <= speakers <= b[1])
    return f"spk{lo:02d}" + ("" if lo == hi else "+" if hi > 1000 else f"-{hi:02d}")


def save_analysis(path: Path, a: Analysis) -> None:
    np.savez_compressed(path, num_samples=a.num_samples, start_frames=a.start_frames,
                        segmentations=a.segmentations, embeddings=a.embeddings,
                        clean_seconds=a.clean_seconds, count_mean=a.count_mean)


def load_analysis(path: Path) -> Analysis:
    z = np.load(path)
    return Analysis(int(z["num_samples"]), z["start_frames"], z["segmentations"], z["embeddings"],
                    z["clean_seconds"], z["count_mean"])


def load_sets(specs: list[str], cache: Path, threads: int, analyse_config: dict | None = None,
              max_duration: float | None = None) -> list[Item]:
    from pyannote.core import Segment, Timeline

    diarizer = None
    items: list[Item] = []
    for spec in specs:
        name, folder = spec.split("=", 1)
        refs, uems = read_references(Path(folder))
        (cache / name).mkdir(parents=True, exist_ok=True)
        for wav in sorted(Path(folder).glob("*.wav")):
            if wav.stem not in refs:
                continue
            if max_duration is not None and sf.info(str(wav)).duration > max_duration:
                continue
            npz = cache / name / f"{wav.stem}.npz"
            if not npz.exists():
                if diarizer is None:
                    from whispdiar import models

                    diarizer = Diarizer(models.resolve("segmentation-3.0"), models.resolve("campplus"),
                                        threads=threads, config=make_config(analyse_config or {}))
                t0 = time.perf_counter()
                save_analysis(npz, diarizer.analyse(wav))
                print(f"cached {name}/{wav.stem} in {time.perf_counter() - t0:.1f} s", file=sys.stderr,
                      flush=True)
            a = load_analysis(npz)
            ref = refs[wav.stem]
            uem = uems.get(wav.stem) or Timeline([Segment(0, a.duration)], uri=wav.stem)
            items.append(Item(name, wav.stem, a, ref, uem, len(ref.crop(uem).labels())))
    if diarizer is not None:
        diarizer.close()
    return items


# ---------------------------------------------------------------- scoring
def offline_diarizer(config: DiarizationConfig) -> Diarizer:
    """A Diarizer without models: stages 2-3 only need the config."""
    d = Diarizer.__new__(Diarizer)
    d.config = config
    return d


def make_config(overrides: dict) -> DiarizationConfig:
    names = {f.name for f in fields(DiarizationConfig)}
    bad = set(overrides) - names
    if bad:
        raise SystemExit(f"unknown DiarizationConfig fields: {sorted(bad)}")
    return DiarizationConfig(**overrides)


def hypothesis(item: Item, config: DiarizationConfig, oracle: bool = False):
    from pyannote.core import Annotation, Segment

    d = offline_diarizer(config)
    k = item.ref_speakers if oracle else None
    clustering, _ = d.cluster(item.analysis, num_speakers=k)
    result = d.reconstruct(item.analysis, clustering, max_speakers=k)
    hyp = Annotation(uri=item.uri)
    for i, t in enumerate(result.turns):
        hyp[Segment(t.start, t.end), i] = t.speaker
    return hyp, result


def reference_frames(item: Item) -> np.ndarray:
    """[F, S] bool: which reference speakers talk at each segmentation frame."""
    from whispdiar.diarization.segmentation import frame_center

    labels = sorted(item.ref.labels())
    t = frame_center(np.arange(len(item.analysis.count_mean)))
    m = np.zeros((len(t), len(labels)), bool)
    for seg, _, lab in item.ref.itertracks(yield_label=True):
        m[(t >= seg.start) & (t < seg.end), labels.index(lab)] = True
    return m


def bound_hypothesis(item: Item, config: DiarizationConfig, count: bool):
    """What perfect clustering would give: every (window, local speaker) of the
    segmentation goes to the reference speaker it overlaps most (its embedding is not
    used), then stage 3 votes as usual; with ``count`` the per-frame speaker count is the
    reference's too. What stays wrong is the segmentation model's: speech no local
    speaker covers, and local speakers that run across a change of voice."""
    from pyannote.core import Annotation, Segment

    from whispdiar.diarization.diarizer import _top_speakers, _turns, _vote_weights, _votes, speaker_count

    a = item.analysis
    ref = reference_frames(item)
    frames = len(a.count_mean)
    hard = np.full(a.has_embedding.shape, -1, np.int64)
    for w, start in enumerate(a.start_frames):
        n = min(a.segmentations.shape[1], frames - start)
        act = a.segmentations[w, :n].astype(bool)
        cover = act.T.astype(np.int64) @ ref[start:start + n].astype(np.int64)  # [3, S]
        for j in range(3):
            if cover.shape[1] and cover[j].max() > 0:
                hard[w, j] = int(np.argmax(cover[j]))
    k = max(1, ref.shape[1])
    votes = _votes(a.start_frames, a.segmentations, hard, frames, k,
                   _vote_weights(config.vote_edge_weight))
    n_active = ref.sum(axis=1) if count else speaker_count(a.count_mean, config.count_threshold)
    active = _top_speakers(votes, n_active.astype(np.int64))
    hyp = Annotation(uri=item.uri)
    for i, t in enumerate(_turns(active, a.duration, config.min_duration_on, config.min_duration_off,
                                 config.boundary_shift)):
        hyp[Segment(t.start, t.end), i] = str(t.speaker)
    return hyp


def score(items: list[Item], config: DiarizationConfig, oracle: bool = False, bound: str | None = None) -> dict:
    """Per-file and per-set scores of one variant (``bound``: "assign" or "assign+count",
    the oracle bounds of ``bound_hypothesis`` instead of the clustering)."""
    from pyannote.metrics.diarization import DiarizationErrorRate

    sets: dict[str, dict] = {}
    for it in items:
        s = sets.setdefault(it.set, {"m0": DiarizationErrorRate(collar=0.0, skip_overlap=False),
                                     "m25": DiarizationErrorRate(collar=0.25, skip_overlap=False),
                                     "files": []})
        if bound is None:
            hyp, _ = hypothesis(it, config, oracle)
        else:
            hyp = bound_hypothesis(it, config, count=bound == "assign+count")
        d0 = s["m0"](it.ref, hyp, uem=it.uem)
        d25 = s["m25"](it.ref, hyp, uem=it.uem)
        s["files"].append({"uri": it.uri, "der0": d0, "der25": d25, "ref": it.ref_speakers,
                           "hyp": len(hyp.crop(it.uem).labels())})
    out = {}
    for name, s in sets.items():
        m0 = s["m0"]
        total = m0.accumulated_["total"]
        files = s["files"]
        ratios = [max(1, f["hyp"]) / f["ref"] for f in files]
        out[name] = {
            "der0": abs(m0), "der25": abs(s["m25"]),
            "miss": m0.accumulated_["missed detection"] / total,
            "fa": m0.accumulated_["false alarm"] / total,
            "conf": m0.accumulated_["confusion"] / total,
            "exact": sum(f["hyp"] == f["ref"] for f in files),
            "within1": sum(abs(f["hyp"] - f["ref"]) <= 1 for f in files),
            "n": len(files),
            "worst_ratio": max(ratios, key=lambda r: max(r, 1 / r)),
            "files": files,
        }
    return out


def fmt_set(name: str, r: dict) -> str:
    return (f"{name:8s} DER c0 {100 * r['der0']:5.1f}  c0.25 {100 * r['der25']:5.1f}  "
            f"(miss {100 * r['miss']:4.1f} fa {100 * r['fa']:4.1f} conf {100 * r['conf']:4.1f})  "
            f"count exact {r['exact']}/{r['n']} +-1 {r['within1']}/{r['n']} worst {r['worst_ratio']:.2f}")


def cross_validate(items: list[Item], grid: dict, base: dict, extra: set[str] = frozenset()) -> dict:
    """Leave-one-set-out: each held-out set scored with the variant best on the others
    (sets in ``extra`` are scored but take no part in choosing)."""
    keys = sorted(grid)
    combos = [dict(zip(keys, v, strict=True)) for v in itertools.product(*(grid[k] for k in keys))]
    table = []
    for c in combos:
        r = score(items, make_config({**base, **c}))
        table.append((c, r))
        print(json.dumps(c), " ".join(f"{n} {100 * x['der0']:.1f}/{x['exact']}" for n, x in r.items()),
              file=sys.stderr, flush=True)
    names = sorted({it.set for it in items} - set(extra))
    folds = {}
    for held in names:
        train = [n for n in names if n != held]
        best_c, best_r = min(table, key=lambda cr: np.mean([cr[1][n]["der0"] for n in train]))
        folds[held] = {"chosen": best_c, "held_out": {k: v for k, v in best_r[held].items() if k != "files"},
                       "train_mean_der0": float(np.mean([best_r[n]["der0"] for n in train]))}
    overall_c, overall_r = min(table, key=lambda cr: np.mean([cr[1][n]["der0"] for n in names]))
    every = names + sorted(extra)
    return {"folds": folds, "all_sets_best": overall_c,
            "all_sets": {n: {k: v for k, v in overall_r[n].items() if k != "files"} for n in every},
            "table": [(c, {n: {k: v for k, v in r[n].items() if k != "files"} for n in every})
                      for c, r in table]}


def speaker_rows(items: list[Item], config: DiarizationConfig) -> list[tuple[str, float, float, int]]:
    """(set, separation, log speech, label) per hypothesised speaker. Label 1 when the
    speaker's most-overlapping reference speaker was not already taken by a hypothesised
    speaker with more speech (speakers visited largest first), and the overlap is > 0."""
    from whispdiar.diarization.confidence import features

    rows = []
    for it in items:
        hyp, result = hypothesis(it, config)
        feats = features(result.centroids, result.turns)
        ref = it.ref.crop(it.uem)
        hyp = hyp.crop(it.uem)
        order = sorted(hyp.labels(), key=lambda lab: -hyp.label_duration(lab))
        taken: set = set()
        for lab in order:
            tl = hyp.label_timeline(lab)
            overlaps = {r: ref.label_timeline(r).crop(tl).duration() if tl else 0.0 for r in ref.labels()}
            best = max(overlaps, key=overlaps.get) if overlaps else None
            ok = best is not None and overlaps[best] > 0 and best not in taken
            if ok:
                taken.add(best)
            if lab in feats:
                rows.append((it.set, *feats[lab], int(ok)))
    return rows


def fit_confidence(rows: list, names: list[str]) -> dict:
    """Leave-one-set-out logistic fit; reliability of the held-out predictions."""
    from sklearn.linear_model import LogisticRegression

    x = np.array([[r[1], r[2]] for r in rows])
    y = np.array([r[3] for r in rows])
    sets = np.array([r[0] for r in rows])
    pred = np.zeros(len(rows))
    folds = {}
    for held in names:
        tr, te = sets != held, sets == held
        if not te.any():
            continue
        m = LogisticRegression(C=10.0).fit(x[tr], y[tr])
        pred[te] = m.predict_proba(x[te])[:, 1]
        folds[held] = {"n": int(te.sum()), "real": int(y[te].sum()),
                       "brier": float(np.mean((pred[te] - y[te]) ** 2)),
                       "coef": [*map(float, m.coef_[0]), float(m.intercept_[0])]}
    m = LogisticRegression(C=10.0).fit(x, y)
    bins = np.linspace(0, 1, 6)
    table = []
    for a, b in zip(bins[:-1], bins[1:], strict=True):
        sel = (pred >= a) & ((pred < b) | (b == 1.0))
        if sel.any():
            table.append({"bin": f"{a:.1f}-{b:.1f}", "n": int(sel.sum()), "mean_pred": float(pred[sel].mean()),
                          "real_share": float(y[sel].mean())})
    return {"folds": folds, "reliability_cv": table, "coef_all": [*map(float, m.coef_[0]), float(m.intercept_[0])],
            "base_rate": float(y.mean()), "n": len(y)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", type=Path, required=True)
    ap.add_argument("--dataset", action="append", default=[], help="NAME=FOLDER (WAVs + RTTM [+ UEM])")
    ap.add_argument("--extra", action="append", default=[],
                    help="NAME=FOLDER scored and reported, never used to choose (e.g. sets sharing readers)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--config", default="{}", help="JSON overrides of DiarizationConfig")
    ap.add_argument("--oracle", action="store_true", help="tell the clustering the true count")
    ap.add_argument("--grid", default=None, help="JSON {field: [values]}: leave-one-set-out CV")
    ap.add_argument("--files", action="store_true", help="per-file lines")
    ap.add_argument("--bound", action="store_true",
                    help="also score perfect clustering (oracle assignment, then oracle count too)")
    ap.add_argument("--confidence", action="store_true", help="fit and check the speaker confidence")
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--analyse-config", default="{}",
                    help="JSON overrides for stage 1 (e.g. step); use its own --cache; also applied to stages 2-3")
    ap.add_argument("--max-duration", type=float, default=None, help="only files up to this many seconds")
    ap.add_argument("--buckets", action="store_true",
                    help="group files by true speaker count (1, 2, 3-5, 6-10, 11-20, 21-50, 51+) instead of by "
                    "set: per-bucket scores, and leave-one-bucket-out with --grid")
    args = ap.parse_args()
    stage1 = json.loads(args.analyse_config)
    items = load_sets(args.dataset + args.extra, args.cache, args.threads, stage1, args.max_duration)
    extra = {spec.split("=", 1)[0] for spec in args.extra}
    if args.buckets:
        items = [replace(it, set=bucket(it.ref_speakers)) for it in items]
        extra = set()
    base = {**stage1, **json.loads(args.config)}
    if args.confidence:
        names = sorted({it.set for it in items} - extra)
        # The speakers of the default clustering, plus those of the old threshold cut
        # ("ahc"): the defaults leave few spurious speakers to learn from (6 %), the old
        # cut leaves many, and the confidence must recognise both kinds.
        rows = [r for cfg in (base, {**base, "clustering": "ahc"})
                for r in speaker_rows(items, make_config(cfg)) if r[0] in names]
        res = fit_confidence(rows, names)
        print(json.dumps(res, indent=1))
        if args.json:
            args.json.write_text(json.dumps(res, indent=1))
        return
    if args.grid:
        cv = cross_validate(items, json.loads(args.grid), base, extra)
        for held, f in cv["folds"].items():
            print(f"held out {fmt_set(held, f['held_out'])}  <- {json.dumps(f['chosen'])}")
        print(f"best on all sets: {json.dumps(cv['all_sets_best'])}")
        for n, r in cv["all_sets"].items():
            print("   ", fmt_set(n, r))
        if args.json:
            args.json.write_text(json.dumps(cv, indent=1))
        return
    t0 = time.perf_counter()
    runs = {"": score(items, make_config(base), args.oracle)}
    if args.bound:
        runs.update({b: score(items, make_config(base), bound=b) for b in ("assign", "assign+count")})
    for tag, res in runs.items():
        if tag:
            print(f"-- oracle {tag}")
        for name, r in res.items():
            print(fmt_set(name, r))
            if args.files:
                for f in r["files"]:
                    print(f"    {f['uri']:14s} {100 * f['der0']:5.1f} {100 * f['der25']:5.1f}  "
                          f"spk {f['hyp']}/{f['ref']}")
    res = runs[""]
    print(f"({time.perf_counter() - t0:.1f} s)", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
