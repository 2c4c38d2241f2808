#!/usr/bin/env python3
"""Named-speaker benchmark and threshold calibration on LibriSpeech.

1. Split each reader's utterances: the first ones (>= --enroll-seconds of audio) are
   enrollment samples, the others build meetings (scripts/make_meetings.py's generator),
   so no enrolled utterance occurs in a meeting.
2. Enroll every reader with ``voiceprints.enroll`` (real segmentation + CAM++).
3. Diarize each meeting once (stage 1); then, for several enrolled subsets per meeting
   (some participants enrolled, some not, plus enrolled people who are absent), cluster,
   optionally merge (the relabel hook), reconstruct and name.
4. Score by speech time on the reference's single-speaker regions (10 ms frames):
   naming accuracy = enrolled speakers' time carrying their own name; false accepts =
   non-enrolled speakers' time carrying any enrolled name.
5. Threshold sweeps: utterance trials (each meeting utterance's embedding vs each
   voiceprint) and cluster trials (each meeting cluster's centroid vs each voiceprint,
   the cluster's truth being its majority reference speaker).
6. Timing: VoiceprintNamer load + naming + relabel with 50 enrolled speakers.

``--memory``: only the speaker-memory series instead (``memory_series``): recordings
processed in order with remembering on, as ``transcribe --remember`` does (diarize with
the namer's steering, name, remember), some voices recurring and some heard once.

``--crowds DIR``: only many impostors instead (``crowd_series``): recordings of 15-100
readers (scripts/make_crowds.py) named against voiceprints of people who are NOT in the
recording (the --source readers and the train-clean-100 readers absent from it, per its
manifest.json; --crowd-enrolled N: only N of the latter), so every enrolled name is a
false accept.
Each file is clustered as shipped and told too few speakers (a quarter of its readers:
clusters that mix many voices), then named with and without the member rule
(``naming.DEFAULT_MEMBER_MEDIAN``). Stage 1 comes from --crowd-cache when cached there.

    python scripts/bench_voiceprints.py --markdown /tmp/vp.md
    python scripts/bench_voiceprints.py --memory --recordings 12 --markdown /tmp/memory.md
    python scripts/bench_voiceprints.py --crowds /tmp/whispdiar-bench/crowds/crowd \\
        --crowd-cache /tmp/wd-cache/crowd --markdown /tmp/crowds.md
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from whispdiar.audio.read import load  # noqa: E402
from whispdiar.diarization.diarizer import Diarizer  # noqa: E402
from whispdiar.errors import VoiceprintError  # noqa: E402
from whispdiar.records import Turn  # noqa: E402
from whispdiar.speakers.naming import (  # noqa: E402
    DEFAULT_MEMBER_MEDIAN,
    DEFAULT_MERGE_THRESHOLD,
    DEFAULT_THRESHOLD,
    Voiceprint,
    display_names,
    merge_clustering,
    name_speakers,
    similarities,
    steer_clustering,
)
from whispdiar.speakers.store import (  # noqa: E402
    VoiceprintNamer,
    VoiceprintStore,
    embed_speech,
    embedding_model_id,
    enroll,
)

SR = 16000
HOP = 0.01  # scoring resolution (s)


def load_make_meetings():
    spec = importlib.util.spec_from_file_location("make_meetings", ROOT / "scripts" / "make_meetings.py")
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    sys.modules["make_meetings"] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def default_model(name: str, file: str) -> Path:
    try:
        from whispdiar import models

        return models.resolve(name)
    except Exception:
        return Path("/tmp/wd-models") / file


# ----------------------------------------------------------------------------- scoring
def frames(turns: list[Turn], n: int, who: list[str]) -> np.ndarray:
    """[n, len(who)] bool activity at HOP resolution."""
    out = np.zeros((n, len(who)), bool)
    idx = {w: i for i, w in enumerate(who)}
    for t in turns:
        if t.speaker in idx:
            out[int(round(t.start / HOP)) : int(round(t.end / HOP)), idx[t.speaker]] = True
    return out


def single_speaker_frames(ref: list[Turn], hyp: list[Turn], duration: float
                          ) -> tuple[list[str], np.ndarray, list[str], np.ndarray]:
    """At HOP resolution: the reference speakers, the index of the one speaking alone per
    frame (-1: nobody or several), the hypothesis labels, and the index of the label per
    frame (-1: none; the first when several)."""
    n = int(np.ceil(duration / HOP)) + 1
    ref_spk = sorted({t.speaker for t in ref})
    r = frames(ref, n, ref_spk)
    owner = np.where(r.sum(axis=1) == 1, np.argmax(r, axis=1), -1)
    names = sorted({t.speaker for t in hyp})
    h = frames(hyp, n, names)
    return ref_spk, owner, names, np.where(h.any(axis=1), np.argmax(h, axis=1), -1)


@dataclass
class Tally:
    enrolled_time: float = 0.0
    enrolled_correct: float = 0.0
    enrolled_attributed: float = 0.0  # time the hypothesis gave to anybody
    enrolled_wrong_name: float = 0.0
    other_time: float = 0.0
    other_named: float = 0.0
    clusters: int = 0
    true_speakers: int = 0
    runs: int = 0

    def add(self, o: Tally) -> None:
        for k in self.__dataclass_fields__:
            setattr(self, k, getattr(self, k) + getattr(o, k))

    @property
    def accuracy(self) -> float:
        return self.enrolled_correct / max(self.enrolled_time, 1e-9)

    @property
    def accuracy_attributed(self) -> float:
        return self.enrolled_correct / max(self.enrolled_attributed, 1e-9)

    @property
    def false_accepts(self) -> float:
        return self.other_named / max(self.other_time, 1e-9)


def score(ref: list[Turn], hyp_named: list[Turn], enrolled: set[str], duration: float) -> Tally:
    """Reference speakers are 'spk<id>'; hypothesis turns carry shown names (<id> or Speaker N)."""
    ref_spk, owner, names, hyp_name = single_speaker_frames(ref, hyp_named, duration)
    tally = Tally(true_speakers=len(ref_spk), runs=1)
    enrolled_names = {f"spk{e}" for e in enrolled}
    for i, spk in enumerate(ref_spk):
        mine = owner == i
        secs = mine.sum() * HOP
        got = hyp_name[mine]
        counts: dict[str | None, float] = {}
        for g in np.unique(got):
            counts[names[g] if g >= 0 else None] = float((got == g).sum()) * HOP
        if spk in enrolled_names:
            tally.enrolled_time += secs
            tally.enrolled_correct += counts.get(spk[3:], 0.0)
            tally.enrolled_attributed += sum(v for g, v in counts.items() if g is not None)
            tally.enrolled_wrong_name += sum(v for g, v in counts.items() if g is not None and g in enrolled
                                             and g != spk[3:])
        else:
            tally.other_time += secs
            tally.other_named += sum(v for g, v in counts.items() if g is not None and not g.startswith("Speaker "))
    return tally


def majority_speaker(turns: list[Turn], ref: list[Turn], label: str) -> str | None:
    """Reference speaker overlapping most with the hypothesis label's turns."""
    best: dict[str, float] = {}
    for t in turns:
        if t.speaker != label:
            continue
        for r in ref:
            o = min(t.end, r.end) - max(t.start, r.start)
            if o > 0:
                best[r.speaker] = best.get(r.speaker, 0.0) + o
    return max(best, key=best.__getitem__) if best else None


# ----------------------------------------------------------------------------- sweeps
def sweep(target: np.ndarray, impostor: np.ndarray, thresholds: list[float]) -> list[tuple[float, float, float]]:
    return [(t, float(np.mean(target >= t)), float(np.mean(impostor >= t))) for t in thresholds]


def eer(target: np.ndarray, impostor: np.ndarray) -> tuple[float, float]:
    ts = np.unique(np.concatenate([target, impostor]))
    best = min(ts, key=lambda t: abs(np.mean(target < t) - np.mean(impostor >= t)))
    return float(best), float((np.mean(target < best) + np.mean(impostor >= best)) / 2)


def ami_trials(diarizer: Diarizer, folder: Path) -> tuple[list[float], list[float]]:
    """Voiceprint of each (clip, speaker) with >= 4 s of clean speech vs those of other clips.

    AMI participants recur across the clips: same id = target, other id = impostor.
    """
    from whispdiar.audio import read as audio
    from whispdiar.outputs.rttm import parse_rttm

    by_uri = parse_rttm((folder / "train.rttm").read_text())
    prints: list[tuple[str, str, np.ndarray]] = []
    for uri, turns in sorted(by_uri.items()):
        x = audio.load(folder / f"{uri}.wav")
        for spk in sorted({t.speaker for t in turns}):
            mine = [(t.start, t.end) for t in turns if t.speaker == spk]
            others = [(t.start, t.end) for t in turns if t.speaker != spk]
            clean = [(a, b) for a, b in mine if not any(min(b, d) > max(a, c) for c, d in others)]
            if sum(b - a for a, b in clean) < 4.0:
                continue
            e = embed_speech(diarizer, x, clean)
            prints.append((uri, spk, Voiceprint.from_embeddings(spk, e).centroid))
    target, impostor = [], []
    for i, (u1, s1, c1) in enumerate(prints):
        for u2, s2, c2 in prints[i + 1 :]:
            if u1 != u2:
                (target if s1 == s2 else impostor).append(float(c1 @ c2))
    return target, impostor


# ----------------------------------------------------------------------------- main
@dataclass
class Meeting:
    uri: str
    wav: Path
    ref: list[Turn]
    speakers: list[str]  # reader ids
    duration: float
    utterance_spans: list[tuple[str, float, float]] = field(default_factory=list)


def build_meetings(mm, voices, out: Path, count: int, seed: int, minutes: tuple[float, float]) -> list[Meeting]:
    rng = np.random.default_rng(seed)
    result = []
    for i in range(count):
        k = int(rng.integers(2, len(voices) + 1))
        m = float(rng.uniform(*minutes))
        x, turns = mm.meeting(voices, k, m, np.random.default_rng(rng.integers(2**32)))
        uri = f"vpmeeting{i:02d}"
        wav = out / f"{uri}.wav"
        sf.write(wav, x, SR, subtype="PCM_16")
        spk = sorted({t.speaker[3:] for t in turns})
        result.append(Meeting(uri, wav, turns, spk, len(x) / SR))
    return result


def audio_span(wav: Path):  # noqa: ANN201 - the callable Diarizer.reconstruct takes
    return lambda start, end: load(wav, start=start, end=end)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", type=Path, default=Path("/work/shared/data/librispeech"))
    ap.add_argument("--segmentation", type=Path, default=None)
    ap.add_argument("--embedding", type=Path, default=None)
    ap.add_argument("--meetings", type=int, default=8)
    ap.add_argument("--minutes", type=float, nargs=2, default=(2.0, 4.0))
    ap.add_argument("--subsets", type=int, default=3, help="enrolled subsets per meeting")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--enroll-seconds", type=float, default=12.0)
    ap.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD)
    ap.add_argument("--merge-threshold", type=float, default=DEFAULT_MERGE_THRESHOLD)
    ap.add_argument("--member-median", type=float, default=DEFAULT_MEMBER_MEDIAN,
                    help="median member-to-voiceprint similarity a named cluster needs (-1: rule off)")
    ap.add_argument("--tight-threshold", type=float, default=0.9,
                    help="the 'tight' rows' clustering cut: merge_cosine of the spectral clustering "
                         "(default 0.45), or the threshold of clustering='ahc'")
    ap.add_argument("--ami", type=Path, default=None,
                    help="folder with AMI clips + train.rttm: extra cross-recording trials with more voices")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--markdown", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--memory", action="store_true", help="run the speaker-memory series only")
    ap.add_argument("--guests", type=Path, default=Path("/work/shared/data/librispeech-train-clean-100"),
                    help="--memory, --crowds: one utterance per reader (voices heard once, impostors)")
    ap.add_argument("--recordings", type=int, default=12, help="--memory: recordings in the series")
    ap.add_argument("--series-minutes", type=float, default=1.5, help="--memory: length of each recording")
    ap.add_argument("--no-steer", action="store_true", help="--memory: no split/merge steering by voiceprints")
    ap.add_argument("--guests-enrolled", type=int, default=0,
                    help="meetings: this many absent train-clean-100 readers enrolled as well (many voiceprints)")
    ap.add_argument("--crowds", type=Path, default=None,
                    help="run the many-impostor series only, on this folder of crowd files")
    ap.add_argument("--crowd-cache", type=Path, default=None,
                    help="--crowds: stage-1 analyses <uri>.npz (scripts/tune_diarization.py format)")
    ap.add_argument("--crowd-enrolled", type=int, default=None,
                    help="--crowds: train-clean-100 readers absent from a file enrolled for it (beside the "
                         "absent --source readers; default: all of them, 90-173 per file)")
    args = ap.parse_args()
    if args.memory:
        memory_series(args)
        return
    if args.crowds:
        crowd_series(args)
        return

    seg = args.segmentation or default_model("segmentation-3.0", "segmentation-3.0.onnx")
    emb = args.embedding or default_model("campplus", "campplus_cn_en_common.onnx")
    work = args.work or Path(tempfile.mkdtemp(prefix="wd-vp-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    mm = load_make_meetings()
    diarizer = Diarizer(seg, emb, threads=args.threads)
    model_id = embedding_model_id(diarizer)

    # ---- split utterances: enrollment vs meeting material
    from whispdiar.asr.vad import SileroVad

    vad = SileroVad(mm.default_vad(), threads=1)  # the meetings' reference turns are Silero speech
    readers = sorted(p for p in args.source.iterdir() if p.is_dir())
    enroll_files: dict[str, list[Path]] = {}
    voices = []
    for d in readers:
        files = sorted(d.glob("*.flac"))
        chosen, secs = [], 0.0
        for f in files:
            if secs >= args.enroll_seconds:
                break
            d_f = sf.info(str(f)).duration
            if d_f >= 4.0:  # a user enrolls whole sentences, not 2 s snippets
                chosen.append(f)
                secs += d_f
        enroll_files[d.name] = chosen
        rest = [f for f in files if f not in chosen]
        utts, probs = [], []
        for f in rest:
            x, _ = sf.read(f, dtype="float32")
            utts.append(x / max(1e-4, float(np.sqrt(np.mean(x**2)))) * 0.05)
            probs.append(vad.probabilities(x))
        voices.append(mm.Voice(d.name, utts, probs))
    print("enrollment:", {k: [f.name for f in v] for k, v in enroll_files.items()}, file=sys.stderr)

    # ---- enroll everyone
    db = work / "speakers.db"
    db.unlink(missing_ok=True)
    t0 = time.perf_counter()
    enroll_rows = []
    with VoiceprintStore(db) as store:
        for spk, files in enroll_files.items():
            for f in files:
                r = enroll(store, spk, f, diarizer=diarizer).samples[0]
                enroll_rows.append((spk, f.name, r.speech_seconds, len(r.embeddings), r.warnings))
        # --guests-enrolled K: K more absent people (one train-clean-100 utterance each) in
        # every enrolled subset: right names when the database holds many voiceprints.
        guests = sorted(args.guests.glob("*.flac")) if args.guests_enrolled else []
        grng = np.random.default_rng(args.seed + 7)
        guest_ids = []
        for j in sorted(grng.permutation(len(guests))[: args.guests_enrolled]):
            gid = "guest-" + guests[j].stem.split("-")[0]
            try:
                enroll(store, gid, [guests[j]], diarizer=diarizer)
                guest_ids.append(gid)
            except VoiceprintError:  # too short to enroll: left out
                pass
    enroll_time = time.perf_counter() - t0
    namer = VoiceprintNamer(db, model_id, threshold=args.threshold, merge_threshold=args.merge_threshold)
    all_prints = dict(namer.voiceprints)

    # ---- utterance trials (meeting material: never enrolled)
    utt_target, utt_impostor = [], []
    for v in voices:
        for x in v.utterances:
            e = embed_speech(diarizer, x, [(0.0, len(x) / SR)])
            c = Voiceprint.from_embeddings("x", e).centroid
            s = similarities(c[None], all_prints.values())[0]
            for name, val in zip(all_prints, s, strict=True):
                (utt_target if name == v.name else utt_impostor).append(float(val))

    ami_target, ami_impostor = ami_trials(diarizer, args.ami) if args.ami else ([], [])

    # ---- meetings
    meetings = build_meetings(mm, voices, work, args.meetings, args.seed, tuple(args.minutes))
    rng = np.random.default_rng(args.seed + 100)
    variants = ["default", "default+merge", "default+steer", "tight", "tight+steer", "split", "split+merge",
                "split+steer"]
    tallies = {k: Tally() for k in variants}
    cl_target, cl_impostor = [], []
    per_meeting = []
    diar_seconds = 0.0
    all_ids = [d.name for d in readers]
    for m in meetings:
        t0 = time.perf_counter()
        analysis = diarizer.analyse(m.wav)
        span = audio_span(m.wav)  # as Diarizer.__call__ does: doubtful stretches are re-checked
        diar_seconds += time.perf_counter() - t0
        subsets = []
        for _ in range(args.subsets):
            present = list(rng.permutation(m.speakers))
            n_in = int(rng.integers(1, len(present))) if len(present) > 1 else 1
            absent = [s for s in all_ids if s not in m.speakers]
            extra = [s for s in absent if rng.random() < 0.5]
            subsets.append(set(present[:n_in]) | set(extra) | set(guest_ids))
        for variant in variants:
            # "split": clustering told one speaker too many (e.g. a wrong --num-speakers or
            # --min-speakers hint), so one person is split in two: what the merge rule is for.
            hint = len(m.speakers) + 1 if variant.startswith("split") else None
            cfg = diarizer.config
            knob = "merge_cosine"
            saved = getattr(cfg, knob)
            if variant.startswith("tight"):  # a stricter clustering cut than the shipped default
                setattr(cfg, knob, args.tight_threshold)
            try:
                base, train = diarizer.cluster(analysis, num_speakers=hint)
            finally:
                setattr(cfg, knob, saved)
            for sub in subsets:
                prints = {k: v for k, v in all_prints.items() if k in sub}
                clustering = base
                if variant.endswith("+merge"):
                    clustering = merge_clustering(base, train, prints, args.merge_threshold)
                elif variant.endswith("+steer"):
                    clustering = steer_clustering(base, train, prints, args.threshold, args.merge_threshold)
                diar = diarizer.reconstruct(analysis, clustering, audio_span=span)
                matches = name_speakers(diar.centroids, prints, args.threshold, members=diar.embeddings,
                                        member_median=args.member_median)
                shown = display_names(diar.turns, matches, prints)
                hyp = [Turn(t.start, t.end, shown[t.speaker]) for t in diar.exclusive]
                tally = score(m.ref, hyp, sub & set(m.speakers), m.duration)
                tally.clusters = len(diar.speakers)
                tallies[variant].add(tally)
                if variant == "default+steer":
                    per_meeting.append((m.uri, len(m.speakers), ",".join(sorted(sub & set(m.speakers))),
                                        len(diar.speakers), tally))
                    for label in diar.speakers:
                        truth = majority_speaker(diar.exclusive, m.ref, label)
                        s = similarities(diar.centroids[label][None], prints.values())[0]
                        for name, val in zip(prints, s, strict=True):
                            (cl_target if truth == f"spk{name}" else cl_impostor).append(float(val))

    # ---- timing with 50 enrolled speakers
    big = work / "speakers50.db"
    big.unlink(missing_ok=True)
    g = np.random.default_rng(0)
    with VoiceprintStore(big) as store:
        for i in range(50):
            for _ in range(3):
                store.add_sample(f"Person {chr(65 + i % 26)}{i}", g.standard_normal((3, 192)).astype(np.float32),
                                 model_id=model_id, source="synthetic", speech_seconds=15)
    m = meetings[0]
    analysis = diarizer.analyse(m.wav)
    span = audio_span(m.wav)
    base, train = diarizer.cluster(analysis)
    t_plain = []
    t_named = []
    for _ in range(5):
        t0 = time.perf_counter()
        diarizer.reconstruct(analysis, base, audio_span=span)
        t_plain.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        n50 = VoiceprintNamer(big, model_id)
        cl = n50.relabel(base, train)
        d = diarizer.reconstruct(analysis, cl, audio_span=span)
        n50(d)
        display_names(d.turns, n50(d), n50.names)
        t_named.append(time.perf_counter() - t0)
    added_50 = float(np.median(t_named) - np.median(t_plain))

    thresholds = [round(x, 2) for x in np.arange(0.30, 0.81, 0.05)]
    out = {
        "model_id": model_id,
        "threshold": args.threshold,
        "member_median": args.member_median,
        "merge_threshold": args.merge_threshold,
        "cluster_threshold": diarizer.config.merge_cosine,
        "tight_threshold": args.tight_threshold,
        "enroll": enroll_rows,
        "enroll_seconds_total": enroll_time,
        "meetings": [(m.uri, m.speakers, round(m.duration, 1)) for m in meetings],
        "variants": {k: {"accuracy": t.accuracy, "accuracy_attributed": t.accuracy_attributed,
                         "false_accepts": t.false_accepts, "enrolled_time": t.enrolled_time,
                         "other_time": t.other_time, "wrong_name": t.enrolled_wrong_name,
                         "clusters": t.clusters, "true_speakers": t.true_speakers, "runs": t.runs}
                     for k, t in tallies.items()},
        "utterance_sweep": sweep(np.array(utt_target), np.array(utt_impostor), thresholds),
        "cluster_sweep": sweep(np.array(cl_target), np.array(cl_impostor), thresholds),
        "utterance_eer": eer(np.array(utt_target), np.array(utt_impostor)),
        "cluster_eer": eer(np.array(cl_target), np.array(cl_impostor)) if cl_target and cl_impostor else None,
        "ami_sweep": sweep(np.array(ami_target), np.array(ami_impostor), thresholds) if ami_target else None,
        "ami_eer": eer(np.array(ami_target), np.array(ami_impostor)) if ami_target else None,
        "ami_trials": (len(ami_target), len(ami_impostor)),
        "trials": {"utt_target": len(utt_target), "utt_impostor": len(utt_impostor),
                   "cl_target": len(cl_target), "cl_impostor": len(cl_impostor)},
        "scores": {"utt_target_min": min(utt_target), "utt_impostor_max": max(utt_impostor),
                   "cl_target_min": min(cl_target) if cl_target else None,
                   "cl_impostor_max": max(cl_impostor) if cl_impostor else None},
        "diarization_seconds": diar_seconds,
        "audio_seconds": sum(m.duration for m in meetings),
        "added_seconds_50_speakers": added_50,
        "namer_50_median_seconds": float(np.median(t_named)),
    }
    md = markdown(out, per_meeting)
    print(md)
    if args.markdown:
        args.markdown.write_text(md)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=str))


# ----------------------------------------------------------------------------- many impostors
def enrollment_files(folder: Path, seconds: float) -> list[Path]:
    """A reader's first utterances of >= 4 s until they add up to ``seconds`` (as main() enrolls)."""
    chosen, secs = [], 0.0
    for f in sorted(folder.glob("*.flac")):
        if secs >= seconds:
            break
        d = sf.info(str(f)).duration
        if d >= 4.0:
            chosen.append(f)
            secs += d
    return chosen


def crowd_series(args: argparse.Namespace) -> None:
    """Speech of unenrolled people that gets an enrolled name, on many-speaker recordings.

    Per crowd file: the --source readers not in it (its manifest.json lists its readers,
    call-in hosts included: reader 2414 hosts the call-in files) and the train-clean-100
    readers not in it (one utterance each; all of them, or --crowd-enrolled drawn per file
    from the seed) are enrolled, so nobody enrolled speaks.
    The file is clustered as shipped ("default") and told a quarter of its readers as the
    speaker count ("too few": clusters that mix many voices, what the member rule is for),
    steered by the voiceprints as the namer does, then named with the member rule
    (--member-median) and without it. Scored on the reference's single-speaker time.
    """
    from whispdiar.outputs.rttm import parse_rttm

    spec = importlib.util.spec_from_file_location("tune_diarization", ROOT / "scripts" / "tune_diarization.py")
    tune = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    sys.modules["tune_diarization"] = tune
    spec.loader.exec_module(tune)  # its save_analysis / load_analysis: the cache format

    seg = args.segmentation or default_model("segmentation-3.0", "segmentation-3.0.onnx")
    emb = args.embedding or default_model("campplus", "campplus_cn_en_common.onnx")
    work = args.work or Path(tempfile.mkdtemp(prefix="wd-crowd-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    diarizer = Diarizer(seg, emb, threads=args.threads)
    model_id = embedding_model_id(diarizer)
    manifest = json.loads((args.crowds / "manifest.json").read_text())
    sources = {d.name: d for d in sorted(args.source.iterdir()) if d.is_dir()}
    guests = {f.stem.split("-")[0]: f for f in sorted(args.guests.glob("*.flac"))}
    guests = {r: f for r, f in guests.items() if r not in sources}
    plans = []
    for i, fm in enumerate(manifest["files"]):
        here = {r["reader"] for r in fm["readers"]}
        absent = sorted(set(guests) - here)
        rng = np.random.default_rng(args.seed + 1000 + i)
        pick = [absent[j] for j in sorted(rng.permutation(len(absent))[: args.crowd_enrolled])]  # None: all
        plans.append((fm, here, [r for r in sources if r not in here] + pick))
    db = work / "crowd-speakers.db"
    db.unlink(missing_ok=True)
    skipped = []
    with VoiceprintStore(db) as store:
        for r in sorted({r for _, _, names in plans for r in names}):
            files = enrollment_files(sources[r], args.enroll_seconds) if r in sources else [guests[r]]
            try:
                enroll(store, r, files, diarizer=diarizer)
            except VoiceprintError as e:  # a 2-s utterance is too short to enroll: left out
                skipped.append(f"{r}: {e}")
        prints_all = store.voiceprints(model_id).voiceprints
    rules = {"with": args.member_median, "without": -1.0}
    variants = ("default", "too few")
    tallies = {(v, r): Tally() for v in variants for r in rules}
    rows = []
    for fm, here, names in plans:
        uri = fm["uri"]
        prints = {r: prints_all[r] for r in names if r in prints_all}
        wav = args.crowds / f"{uri}.wav"
        npz = args.crowd_cache / f"{uri}.npz" if args.crowd_cache else None
        if npz is not None and npz.exists():
            analysis = tune.load_analysis(npz)
        else:
            analysis = diarizer.analyse(wav)
            if npz is not None:
                npz.parent.mkdir(parents=True, exist_ok=True)
                tune.save_analysis(npz, analysis)
        ref = parse_rttm((args.crowds / f"{uri}.rttm").read_text())[uri]
        row = {"uri": uri, "readers": len(here), "enrolled": len(prints), "minutes": analysis.duration / 60}
        for variant in variants:
            hint = max(2, len(here) // 4) if variant == "too few" else None
            base, train = diarizer.cluster(analysis, num_speakers=hint)
            clustering = steer_clustering(base, train, prints, args.threshold, args.merge_threshold)
            diar = diarizer.reconstruct(analysis, clustering, audio_span=audio_span(wav))
            row[f"{variant} clusters"] = len(diar.speakers)
            for rule, floor in rules.items():
                matches = name_speakers(diar.centroids, prints, args.threshold, members=diar.embeddings,
                                        member_median=floor)
                shown = display_names(diar.turns, matches, prints)
                hyp = [Turn(t.start, t.end, shown[t.speaker]) for t in diar.exclusive]
                tally = score(ref, hyp, set(), diar.duration)
                tallies[(variant, rule)].add(tally)
                row[f"{variant} {rule}"] = (tally.false_accepts, len(matches))
        rows.append(row)
        print(f"{uri}: {row}", file=sys.stderr)
    out = {"model_id": model_id, "threshold": args.threshold, "member_median": args.member_median,
           "crowd_enrolled": args.crowd_enrolled, "seed": args.seed, "skipped_enrollments": skipped,
           "rows": rows, "pooled": {f"{v} {r}": (t.false_accepts, t.other_time) for (v, r), t in tallies.items()},
           "seconds": time.perf_counter() - t_start}
    write_report(out, crowd_markdown(out), args)


def write_report(out: dict, md: str, args: argparse.Namespace) -> None:
    """The markdown table to stdout (and --markdown), the full results to --json."""
    print(md)
    if args.markdown:
        args.markdown.write_text(md)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=str))


def crowd_markdown(o: dict) -> str:
    def cell(v: tuple[float, int]) -> str:
        return f"{100 * v[0]:.2f} % ({v[1]})"

    lines = [
        f"Embedding model `{o['model_id']}`, naming threshold {o['threshold']}, member median {o['member_median']}; "
        f"per file the absent --source readers + "
        f"{'all' if o['crowd_enrolled'] is None else o['crowd_enrolled']} absent train-clean-100 readers enrolled "
        f"(seed {o['seed']}); nobody enrolled speaks, so every enrolled name is a false accept. Share of the "
        f"reference's single-speaker time carrying an enrolled name (named clusters); machine time "
        f"{o['seconds']:.0f} s.",
        "",
        "| file | readers | enrolled | min | clusters | false accepts, rule off | with member rule "
        "| told too few: clusters | rule off | with member rule |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in o["rows"]:
        lines.append(f"| {r['uri']} | {r['readers']} | {r['enrolled']} | {r['minutes']:.1f} | {r['default clusters']} "
                     f"| {cell(r['default without'])} | {cell(r['default with'])} | {r['too few clusters']} "
                     f"| {cell(r['too few without'])} | {cell(r['too few with'])} |")
    p = o["pooled"]
    lines.append(f"| **pooled** | | | {p['default with'][1] / 60:.1f} min | "
                 f"| **{100 * p['default without'][0]:.2f} %** | **{100 * p['default with'][0]:.2f} %** "
                 f"| | **{100 * p['too few without'][0]:.2f} %** | **{100 * p['too few with'][0]:.2f} %** |")
    if o["skipped_enrollments"]:
        lines += ["", f"Not enrolled (too little speech): {len(o['skipped_enrollments'])} readers."]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- speaker memory
def _load_voice(mm, vad, name: str, files: list[Path]):  # noqa: ANN001, ANN202
    utts, probs = [], []
    for f in files:
        x, _ = sf.read(f, dtype="float32")
        utts.append(x / max(1e-4, float(np.sqrt(np.mean(x**2)))) * 0.05)
        probs.append(vad.probabilities(x))
    return mm.Voice(name, utts, probs)


def memory_series(args: argparse.Namespace) -> None:
    """Recordings in order, remembering on: do recurring voices get their stored label,
    and do voices heard once stay clear of existing labels?

    Regulars: the readers of --source (10 utterances each); each recording has 2-3 of
    them, each with 3 of its utterances (taken in turn, so consecutive appearances use
    different ones), plus 1 guest from --guests (one utterance, a reader never heard
    again). A voice's stored label is the entry created from the cluster whose
    reference majority it is, the first time that happens; scored on its speech in the
    later recordings (reference single-speaker time, 10 ms frames).
    """
    from whispdiar.asr.vad import SileroVad
    from whispdiar.diarization.confidence import speaker_confidence
    from whispdiar.speakers import memory

    seg = args.segmentation or default_model("segmentation-3.0", "segmentation-3.0.onnx")
    emb = args.embedding or default_model("campplus", "campplus_cn_en_common.onnx")
    work = args.work or Path(tempfile.mkdtemp(prefix="wd-memory-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    mm = load_make_meetings()
    t_start = time.perf_counter()
    diarizer = Diarizer(seg, emb, threads=args.threads)
    model_id = embedding_model_id(diarizer)
    vad = SileroVad(mm.default_vad(), threads=1)
    rng = np.random.default_rng(args.seed)
    regulars = {d.name: sorted(d.glob("*.flac")) for d in sorted(args.source.iterdir()) if d.is_dir()}
    guest_files = sorted(args.guests.glob("*.flac"))
    guest_files = [guest_files[i] for i in rng.permutation(len(guest_files))[: args.recordings]]
    used = dict.fromkeys(regulars, 0)
    db = work / "speakers.db"
    db.unlink(missing_ok=True)
    stored: dict[str, str] = {}  # voice -> its entry's name
    tally = {"recurring_time": 0.0, "recurring_own": 0.0, "recurring_other": 0.0, "recurring_unlabelled": 0.0,
             "once_time": 0.0, "once_existing": 0.0, "once_confused": 0.0, "duplicates": 0, "entries": 0,
             "guest_entries": 0}
    target: list[float] = []
    impostor: list[float] = []
    new_conf: list[float] = []
    rows = []
    diar_seconds = 0.0
    for i in range(args.recordings):
        k = int(rng.integers(2, 4))
        names = [str(n) for n in rng.choice(sorted(regulars), size=k, replace=False)]
        voices = []
        for n in names:
            files = [regulars[n][(used[n] + j) % len(regulars[n])] for j in range(3)]
            used[n] += 3
            voices.append(_load_voice(mm, vad, n, files))
        guest = f"g{guest_files[i].stem.split('-')[0]}"
        voices.append(_load_voice(mm, vad, guest, [guest_files[i]]))
        x, ref = mm.meeting(voices, len(voices), args.series_minutes, np.random.default_rng(rng.integers(2**32)))
        wav = work / f"rec{i:02d}.wav"
        sf.write(wav, x, SR, subtype="PCM_16")
        duration = len(x) / SR

        t0 = time.perf_counter()
        namer = VoiceprintNamer(db, model_id, threshold=args.threshold, warn=lambda m: None, remember=True,
                                steer=not args.no_steer, member_median=args.member_median)
        before = set(namer.voiceprints)
        diar = diarizer(wav, relabel=namer.relabel)
        matches = dict(namer(diar))
        conf = speaker_confidence(diar.centroids, diar.turns)
        # similarity of each cluster to each remembered entry, by the truth of both
        owner = {name: v for v, name in stored.items()}
        for label in diar.speakers:
            truth = majority_speaker(diar.exclusive, ref, label)
            for name, vp in namer.voiceprints.items():
                if name in owner:
                    sim = float(similarities(diar.centroids[label][None], [vp])[0, 0])
                    (target if truth == f"spk{owner[name]}" else impostor).append(sim)
        new = namer.remember(diar, matches, conf, str(wav))
        diar_seconds += time.perf_counter() - t0
        matches.update(new)
        for label, (name, _) in new.items():
            truth = majority_speaker(diar.exclusive, ref, label)
            new_conf.append(conf[label])
            tally["entries"] += 1
            if truth is None:
                continue
            v = truth[3:]
            if v.startswith("g"):
                tally["guest_entries"] += 1
            if v in stored:
                tally["duplicates"] += 1  # a recurring voice not recognised: a second entry
            else:
                stored.setdefault(v, name)
        shown = display_names(diar.turns, matches, namer.names)
        hyp = [Turn(t.start, t.end, shown[t.speaker]) for t in diar.exclusive]
        majority = {shown[label]: majority_speaker(diar.exclusive, ref, label) for label in diar.speakers}
        # score: reference single-speaker frames
        ref_spk, who, hyp_names, got = single_speaker_frames(ref, hyp, duration)
        row = {"rec": wav.stem, "voices": ",".join(v.name for v in voices), "minutes": duration / 60, "new": [],
               "recurring": [0.0, 0.0], "once": [0.0, 0.0]}
        for j, spk in enumerate(ref_spk):
            v = spk[3:]
            mine = got[who == j]
            secs = len(mine) * HOP
            labels = [hyp_names[g] if g >= 0 else None for g in mine]
            if v.startswith("g"):
                existing = sum(1 for lab in labels if lab in before) * HOP
                # diarization confusion: in a cluster that is mostly somebody else, whatever its label
                tally["once_confused"] += sum(1 for lab in labels if lab is not None and majority[lab] != spk) * HOP
                tally["once_time"] += secs
                tally["once_existing"] += existing
                row["once"][0] += secs
                row["once"][1] += existing
            elif v in stored and stored[v] in before:  # its entry existed before this recording
                own = sum(1 for lab in labels if lab == stored[v]) * HOP
                other = sum(1 for lab in labels if lab in before and lab != stored[v]) * HOP
                tally["recurring_time"] += secs
                tally["recurring_own"] += own
                tally["recurring_other"] += other
                tally["recurring_unlabelled"] += secs - own - other
                row["recurring"][0] += secs
                row["recurring"][1] += own
        row["new"] = sorted(f"{name}={majority_speaker(diar.exclusive, ref, label)}" for label, (name, _) in
                            new.items())
        rows.append(row)
        print(f"{wav.stem}: {row}", file=sys.stderr)
    with VoiceprintStore(db) as store:
        infos = store.speakers()
    out = {
        "model_id": model_id, "threshold": args.threshold, "min_seconds": memory.MIN_SECONDS,
        "min_confidence": memory.MIN_CONFIDENCE, "update_similarity": memory.UPDATE_SIMILARITY,
        "recordings": args.recordings, "audio_minutes": sum(r["minutes"] for r in rows),
        "tally": tally, "rows": rows, "entries_in_db": len(infos),
        "sweep": sweep(np.array(target), np.array(impostor), [round(t, 2) for t in np.arange(0.3, 0.81, 0.05)])
        if target and impostor else [],
        "trials": (len(target), len(impostor)),
        "target_min": min(target) if target else None, "impostor_max": max(impostor) if impostor else None,
        "new_confidence_min": min(new_conf) if new_conf else None,
        "seconds": time.perf_counter() - t_start, "diarize_name_remember_seconds": diar_seconds,
    }
    write_report(out, memory_markdown(out), args)


def memory_markdown(o: dict) -> str:
    t = o["tally"]
    rec = t["recurring_own"] / max(t["recurring_time"], 1e-9)
    once = t["once_existing"] / max(t["once_time"], 1e-9)
    rt = max(t["recurring_time"], 1e-9)
    lines = [
        f"Embedding model `{o['model_id']}`, naming threshold {o['threshold']}; remembered when >= "
        f"{o['min_seconds']:g} s of single-speaker speech and confidence >= {o['min_confidence']}; "
        f"{o['recordings']} recordings, {o['audio_minutes']:.1f} min of audio; machine time {o['seconds']:.0f} s "
        f"(diarize + name + remember {o['diarize_name_remember_seconds']:.0f} s).",
        "",
        "| measure | value |",
        "|---|---|",
        f"| recurring voices: speech with their stored label | **{100 * rec:.1f} %** of "
        f"{t['recurring_time'] / 60:.1f} min |",
        f"| recurring voices: speech with another stored label | {100 * t['recurring_other'] / rt:.1f} % |",
        f"| recurring voices: speech with no stored label | {100 * t['recurring_unlabelled'] / rt:.1f} % |",
        f"| voices heard once: speech with an existing label | **{100 * once:.2f} %** of "
        f"{t['once_time'] / 60:.1f} min |",
        f"| voices heard once: speech in a cluster that is mostly another voice (diarization confusion, "
        f"whatever the label) | {100 * t['once_confused'] / max(t['once_time'], 1e-9):.2f} % |",
        f"| entries created (of them guests, heard once) | {t['entries']} ({t['guest_entries']}) |",
        f"| duplicate entries (a recurring voice not recognised) | {t['duplicates']} |",
        f"| lowest confidence of a new entry | {o['new_confidence_min'] or 0:.3f} |",
        "",
        f"Cluster vs remembered entry: {o['trials'][0]} target / {o['trials'][1]} impostor trials; lowest target "
        f"{o['target_min']}, highest impostor {o['impostor_max']}.",
        "",
        "| threshold | target accept | impostor accept |",
        "|---|---|---|",
    ]
    lines += [f"| {th:.2f} | {100 * a:.1f} % | {100 * b:.1f} % |" for th, a, b in o["sweep"]]
    lines += ["", "| recording | voices (g = heard once) | min | new entries (= majority voice) "
              "| recurring: own label | once: existing label |", "|---|---|---|---|---|---|"]
    for r in o["rows"]:
        a, b = r["recurring"]
        rc = f"{100 * b / a:.0f} % of {a:.0f} s" if a else "-"
        on = f"{100 * r['once'][1] / r['once'][0]:.1f} % of {r['once'][0]:.0f} s" if r["once"][0] else "-"
        new = ", ".join(r["new"]) or "-"
        lines.append(f"| {r['rec']} | {r['voices']} | {r['minutes']:.1f} | {new} | {rc} | {on} |")
    return "\n".join(lines) + "\n"


def markdown(o: dict, per_meeting: list) -> str:
    lines = [
        f"Embedding model `{o['model_id']}`, naming threshold {o['threshold']}, member median "
        f"{o['member_median']}, merge threshold {o['merge_threshold']}; {len(o['meetings'])} meetings, "
        f"{o['audio_seconds'] / 60:.1f} min of audio, "
        f"{o['variants']['default']['runs']} (meeting, enrolled subset) runs.",
        "",
        "| clustering | enrollment steering | naming accuracy | accuracy on attributed speech | wrong enrolled name "
        "| false accepts | clusters / true speakers |",
        "|---|---|---|---|---|---|---|",
    ]
    for k, v in o["variants"].items():
        clus = k.split("+")[0]
        merge = {"merge": "merge only", "steer": "split + merge"}.get(k.split("+")[1], "") if "+" in k else "no"
        knob = "threshold" if o.get("clustering") == "ahc" else "merge"
        clus = {"default": f"default ({knob} {o['cluster_threshold']})", "tight": f"{knob} {o['tight_threshold']}",
                "split": "over-split (told 1 speaker too many)"}[clus]
        lines.append(
            f"| {clus} | {merge} | {100 * v['accuracy']:.1f} % of {v['enrolled_time'] / 60:.1f} min "
            f"| {100 * v['accuracy_attributed']:.1f} % | {100 * v['wrong_name'] / max(v['enrolled_time'], 1e-9):.2f} % "
            f"| {100 * v['false_accepts']:.2f} % of {v['other_time'] / 60:.1f} min "
            f"| {v['clusters']} / {v['true_speakers']} |"
        )
    lines += ["", "Threshold sweep (TAR = true accept rate, FAR = false accept rate):", "",
              "| threshold | utterance TAR | utterance FAR | cluster TAR | cluster FAR |", "|---|---|---|---|---|"]
    for (t, a, b), (_, c, d) in zip(o["utterance_sweep"], o["cluster_sweep"], strict=True):
        lines.append(f"| {t:.2f} | {100 * a:.1f} % | {100 * b:.1f} % | {100 * c:.1f} % | {100 * d:.1f} % |")
    if o.get("ami_sweep"):
        lines += ["", "AMI cross-recording trials (real meetings, more voices):", "",
                  "| threshold | TAR | FAR |", "|---|---|---|"]
        lines += [f"| {t:.2f} | {100 * a:.1f} % | {100 * b:.1f} % |" for t, a, b in o["ami_sweep"]]
        lines.append(f"\n{o['ami_trials'][0]} target / {o['ami_trials'][1]} impostor trials, EER "
                     f"{100 * o['ami_eer'][1]:.1f} % at {o['ami_eer'][0]:.2f}.")
    tr = o["trials"]
    lines += [
        "",
        f"Trials: utterances {tr['utt_target']} target / {tr['utt_impostor']} impostor (EER "
        f"{100 * o['utterance_eer'][1]:.1f} % at {o['utterance_eer'][0]:.2f}); clusters {tr['cl_target']} target / "
        f"{tr['cl_impostor']} impostor"
        + (f" (EER {100 * o['cluster_eer'][1]:.1f} % at {o['cluster_eer'][0]:.2f})" if o["cluster_eer"] else "")
        + ".",
        f"Scores: lowest target utterance {o['scores']['utt_target_min']:.3f}, highest impostor utterance "
        f"{o['scores']['utt_impostor_max']:.3f}; lowest target cluster {o['scores']['cl_target_min']:.3f}, "
        f"highest impostor cluster {o['scores']['cl_impostor_max']:.3f}.",
        f"Cost: naming with 50 enrolled speakers (open db, load voiceprints, steering, naming) adds "
        f"{1000 * o['added_seconds_50_speakers']:.1f} ms per run; enrolling "
        f"{len(o['enroll'])} samples took {o['enroll_seconds_total']:.1f} s.",
        "",
        "Per run (default clustering, split + merge steering):",
        "",
        "| meeting | speakers | enrolled present | clusters | naming accuracy | false accepts |",
        "|---|---|---|---|---|---|",
    ]
    for uri, k, sub, nclus, t in per_meeting:
        fa = f"{100 * t.false_accepts:.1f} %" if t.other_time > 0 else "-"
        lines.append(f"| {uri} | {k} | {sub} | {nclus} | {100 * t.accuracy:.1f} % | {fa} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
