#!/usr/bin/env python3
"""Measure word timing and word-level speaker attribution against references.

References
- ``--stm``: utterances with speaker, start, end and text (pyannote's sample.stm for
  sample.wav). Every reference word belongs to one timed, attributed utterance.
- ``--librispeech DIR``: builds meetings by concatenating whole utterances of different
  readers with pauses (and, with --overlap, some overlap). Each utterance's voiced span
  comes from Silero VAD on the isolated utterance, and its reference text from whisper on
  the isolated utterance (a pseudo-reference: we score *where* and *who*, and how far the
  meeting's words drift from whisper's own words for each utterance heard alone).

Hypothesis words are matched to reference words by text (difflib on normalised words).
For matched words we report
- inside: share of words whose midpoint lies in their own utterance's span (+-0.1 s),
- onset/offset error: |first word start - utterance start|, |last word end - utterance end|,
- oracle attribution: speakers from the *reference* turns through whispdiar.alignment,
  compared with the reference speaker (what the issue measured as 51 % / 74 %),
- pipeline attribution (``--diarize``): speakers from our own diarization, with the
  best one-to-one label mapping.
For all words: ``wer`` = word edit distance / reference words. On LibriSpeech meetings the
reference is whisper's text of each utterance alone (one chunk, full context), so this is
what chunking costs, not whisper's own error rate; the MEETINGS line pools the edits.

Modes: ``before`` = whole file to whisper with its own token timestamps
(max_len=1/split_on_word, the naive pywhispercpp recipe); ``dtw`` = DTW word times on
fixed ~29 s blocks; ``nolag`` = VAD-packed chunks + DTW without lag correction/snapping;
``after`` = VAD-packed chunks + DTW + lag correction and snapping (whispdiar's default).

    python scripts/bench_words.py --whisper ggml-base.bin --vad silero_vad.onnx \\
        --wav sample.wav --stm sample.stm --rttm sample.rttm --modes before,after
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from whispdiar.alignment import AlignConfig, align  # noqa: E402
from whispdiar.asr.vad import SileroVad, speech_regions  # noqa: E402
from whispdiar.asr.whisper import Transcriber
from whispdiar.outputs.rttm import parse_rttm  # noqa: E402
from whispdiar.records import Segment, Turn, Word  # noqa: E402

SR = 16000


@dataclass
class Utt:
    speaker: str
    start: float
    end: float
    text: str


def norm(w: str) -> str:
    return re.sub(r"[^\w']", "", w.lower())


def read_stm(path: Path) -> list[Utt]:
    out = []
    for line in path.read_text().splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) < 6:
            continue
        out.append(Utt(parts[2], float(parts[3]), float(parts[4]), parts[5]))
    return out


# ----------------------------------------------------------------------------- hypotheses


def words_before(model: Path, wav: Path, threads: int) -> list[Segment]:
    """The naive recipe: whole file, whisper's token timestamps, one segment per word."""
    from pywhispercpp.model import Model

    m = Model(str(model), redirect_whispercpp_logs_to=None, n_threads=threads, print_progress=False,
              token_timestamps=True, max_len=1, split_on_word=True, language="en")
    x, sr = sf.read(str(wav), dtype="float32")
    segs = m.transcribe(x)
    words = [Word(s.text.strip(), s.t0 / 100, s.t1 / 100) for s in segs if s.text.strip()]
    return [Segment(words[0].start, words[-1].end, " ".join(w.text for w in words), None, words)] if words else []


def words_ours(tr: Transcriber, wav: Path) -> list[Segment]:
    return tr.transcribe(wav).segments


# ----------------------------------------------------------------------------- scoring


def match(hyp: list[Word], ref: list[tuple[str, int]]) -> list[tuple[int, int]]:
    a = [norm(w.text) for w in hyp]
    b = [norm(t) for t, _ in ref]
    sm = difflib.SequenceMatcher(a=a, b=b, autojunk=False)
    return [(blk.a + k, blk.b + k) for blk in sm.get_matching_blocks() for k in range(blk.size)]


def edit_distance(a: list[str], b: list[str]) -> int:
    """Word-level Levenshtein distance (substitutions + deletions + insertions)."""
    prev = np.arange(len(b) + 1)
    for i, x in enumerate(a, 1):
        cur = np.empty_like(prev)
        cur[0] = i
        sub = prev[:-1] + np.array([x != y for y in b], dtype=prev.dtype)
        for j in range(1, len(b) + 1):
            cur[j] = min(sub[j - 1], prev[j] + 1, cur[j - 1] + 1)
        prev = cur
    return int(prev[-1])


def best_mapping(pairs: list[tuple[str | None, str]]) -> dict[str, str]:
    """Hypothesis label -> reference label maximising agreement (Hungarian)."""
    from scipy.optimize import linear_sum_assignment

    hyps = sorted({h for h, _ in pairs if h is not None})
    refs = sorted({r for _, r in pairs})
    if not hyps:
        return {}
    m = np.zeros((len(hyps), len(refs)))
    for h, r in pairs:
        if h is not None:
            m[hyps.index(h), refs.index(r)] += 1
    rows, cols = linear_sum_assignment(-m)
    return {hyps[i]: refs[j] for i, j in zip(rows, cols, strict=True)}


def score(segments: list[Segment], utts: list[Utt], ref_turns: list[Turn], diar=None) -> dict:
    hyp = [w for s in segments for w in s.words]
    ref = [(t, i) for i, u in enumerate(utts) for t in u.text.split() if norm(t)]
    pairs = match(hyp, ref)
    inside, onset, offset = 0, [], []
    first_of = {}
    last_of = {}
    for j, (_, i) in enumerate(ref):
        first_of.setdefault(i, j)
        last_of[i] = j
    for hi, rj in pairs:
        w, u = hyp[hi], utts[ref[rj][1]]
        if w.start is None:
            continue
        mid = (w.start + w.end) / 2
        inside += u.start - 0.1 <= mid <= u.end + 0.1
        if first_of[ref[rj][1]] == rj:
            onset.append(abs(w.start - u.start))
        if last_of[ref[rj][1]] == rj:
            offset.append(abs(w.end - u.end))
    edits = edit_distance([n for w in hyp if (n := norm(w.text))], [norm(t) for t, _ in ref])
    out = {
        "hyp_words": len(hyp), "ref_words": len(ref), "matched": len(pairs), "edits": edits,
        "wer": edits / max(1, len(ref)),
        "inside": inside / max(1, len(pairs)),
        "onset_median": float(np.median(onset)) if onset else None,
        "onset_mean": float(np.mean(onset)) if onset else None,
        "offset_median": float(np.median(offset)) if offset else None,
        "offset_mean": float(np.mean(offset)) if offset else None,
        "onset_within_0.2": float(np.mean(np.array(onset) <= 0.2)) if onset else None,
    }
    # oracle attribution: reference turns through our alignment rules
    aligned = align(segments, ref_turns, overlapped=ref_turns)
    ahyp = [w for s in aligned for w in s.words]
    ok = sum(ahyp[hi].speaker == utts[ref[rj][1]].speaker for hi, rj in pairs)
    out["oracle_attribution"] = ok / max(1, len(pairs))
    if diar is not None:
        aligned = align(segments, diar.exclusive, overlapped=diar.turns)
        ahyp = [w for s in aligned for w in s.words]
        pr = [(ahyp[hi].speaker, utts[ref[rj][1]].speaker) for hi, rj in pairs]
        mp = best_mapping(pr)
        out["pipeline_attribution"] = sum(mp.get(h) == r for h, r in pr if h is not None) / max(1, len(pr))
        out["pipeline_unattributed"] = sum(h is None for h, _ in pr) / max(1, len(pr))
        # the same without rule 4 (smoothing), to show what smoothing does
        raw = align(segments, diar.exclusive, AlignConfig(flip_max_words=0), overlapped=diar.turns)
        rhyp = [w for s in raw for w in s.words]
        pr = [(rhyp[hi].speaker, utts[ref[rj][1]].speaker) for hi, rj in pairs]
        out["pipeline_attribution_unsmoothed"] = sum(mp.get(h) == r for h, r in pr if h is not None) / max(1, len(pr))
    return out


# ----------------------------------------------------------------------------- meetings


def build_meeting(root: Path, tr_ref: Transcriber, vad: SileroVad, seed: int, n_utts: int, out_wav: Path,
                  overlap: float, cache: dict, ref_cache: Path | None = None) -> tuple[list[Utt], list[Turn]]:
    rng = np.random.default_rng(seed)
    files = {d.name: sorted(d.glob("*.flac")) for d in sorted(root.iterdir()) if d.is_dir()}
    speakers = list(files)
    chosen = rng.choice(speakers, size=min(len(speakers), int(rng.integers(2, 5))), replace=False)
    pieces, utts, turns = [], [], []
    t = 0.5
    prev = None
    used = set()
    for _ in range(n_utts):
        spk = rng.choice([s for s in chosen if s != prev])
        cands = [f for f in files[spk] if f not in used] or files[spk]
        f = cands[int(rng.integers(len(cands)))]
        used.add(f)
        if f not in cache:
            x, _ = sf.read(str(f), dtype="float32")
            x = x / max(1e-4, float(np.sqrt(np.mean(x**2)))) * 0.05
            reg = speech_regions(vad.probabilities(x), pad=0.0)
            cache[f] = (x, reg[0].start if reg else 0.0, reg[-1].end if reg else len(x) / SR,
                        _reference_text(tr_ref, f, ref_cache))
        x, v0, v1, text = cache[f]
        if prev is not None and overlap > 0 and rng.random() < overlap:
            t -= float(rng.uniform(0.3, 1.0))  # start before the previous speaker has finished
        start = max(0.0, t)
        pieces.append((int(start * SR), x))
        utts.append(Utt(str(spk), start + v0, start + v1, text))
        turns.append(Turn(start + v0, start + v1, str(spk)))
        t = start + v1 + float(rng.uniform(0.2, 1.2)) - v0 * 0  # pause after the voiced end
        t = max(t, start + v1 + 0.1)
        prev = spk
    total = max(s + len(x) for s, x in pieces) + SR // 2
    y = np.zeros(total, np.float32)
    for s, x in pieces:
        y[s:s + len(x)] += x
    sf.write(str(out_wav), y, SR)
    return utts, turns


def _reference_text(tr: Transcriber, f: Path, ref_cache: Path | None) -> str:
    """Whisper's text of the isolated utterance (cached on disk: it is the slow part)."""
    key = ref_cache / f"{tr.name}-{f.stem}.txt" if ref_cache else None
    if key is not None and key.exists():
        return key.read_text()
    text = " ".join(s.text for s in tr.transcribe(f).segments)
    if key is not None:
        key.parent.mkdir(parents=True, exist_ok=True)
        key.write_text(text)
    return text


# ----------------------------------------------------------------------------- speed


def _clock() -> tuple[float, float]:
    import resource

    ru = resource.getrusage(resource.RUSAGE_SELF)
    return time.perf_counter(), ru.ru_utime + ru.ru_stime


def bench_speed(args: argparse.Namespace) -> dict:
    """Wall and CPU time of ASR alone, diarization alone and the parallel pipeline."""
    import os

    from whispdiar.audio.read import info
    from whispdiar.diarization.diarizer import Diarizer
    from whispdiar.pipeline import Pipeline, split_threads

    wav, dur = args.speed, info(args.speed).duration
    seg_model, emb_model = args.diarize
    asr_n, diar_n = split_threads(args.threads, True)
    out: dict = {"audio": str(wav), "duration": round(dur, 2), "threads": args.threads,
                 "split": {"asr": asr_n, "diarization": diar_n}, "loadavg_before": os.getloadavg()}

    def timed(name: str, fn) -> None:  # noqa: ANN001
        w0, c0 = _clock()
        fn()
        w1, c1 = _clock()
        out[name] = {"wall": round(w1 - w0, 2), "cpu": round(c1 - c0, 2), "rtf": round((w1 - w0) / dur, 4)}
        print(name, out[name], "load", os.getloadavg(), flush=True)

    vad = SileroVad(args.vad)
    tr = Transcriber(args.whisper, threads=asr_n, vad=vad)
    timed(f"asr_alone_{asr_n}t", lambda: tr.transcribe(wav))
    tr.close()
    diarizer = Diarizer(seg_model, emb_model, threads=diar_n)
    timed(f"diarization_alone_{diar_n}t", lambda: diarizer(wav))
    p = Pipeline(args.whisper, seg_model, emb_model, args.vad, threads=args.threads)
    res = {}
    timed("pipeline_parallel", lambda: res.setdefault("r", p.run(wav)))
    out["pipeline_timings"] = {"asr": res["r"].timings.asr, "diarization": res["r"].timings.diarization,
                               "total": res["r"].timings.total}
    slower = max(out[f"asr_alone_{asr_n}t"]["wall"], out[f"diarization_alone_{diar_n}t"]["wall"])
    out["parallel_over_slower_alone"] = round(out["pipeline_parallel"]["wall"] / slower, 3)
    out["loadavg_after"] = os.getloadavg()
    p.close()
    return out


# ----------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--whisper", type=Path, required=True)
    ap.add_argument("--vad", type=Path, required=True)
    ap.add_argument("--wav", type=Path)
    ap.add_argument("--stm", type=Path)
    ap.add_argument("--rttm", type=Path, help="reference turns for --wav (else from the stm)")
    ap.add_argument("--librispeech", type=Path)
    ap.add_argument("--meetings", type=int, default=3)
    ap.add_argument("--utts", type=int, default=12)
    ap.add_argument("--overlap", type=float, default=0.0, help="share of utterances starting in overlap")
    ap.add_argument("--modes", default="before,after")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--diarize", nargs=2, type=Path, metavar=("SEGMENTATION", "EMBEDDING"))
    ap.add_argument("--json", type=Path)
    ap.add_argument("--speed", type=Path, metavar="WAV",
                    help="only measure speed on WAV: ASR alone, diarization alone, parallel pipeline (needs --diarize)")
    ap.add_argument("--ref-cache", type=Path, help="directory caching reference transcripts of utterances")
    args = ap.parse_args()
    if args.speed:
        if not args.diarize:
            ap.error("--speed needs --diarize SEGMENTATION EMBEDDING")
        r = bench_speed(args)
        print(json.dumps(r, indent=2))
        if args.json:
            args.json.write_text(json.dumps(r, indent=2))
        return

    vad = SileroVad(args.vad)
    cases: list[tuple[str, Path, list[Utt], list[Turn]]] = []
    if args.wav and args.stm:
        utts = read_stm(args.stm)
        if args.rttm:
            turns = [t for ts in parse_rttm(args.rttm.read_text()).values() for t in ts]
            # stm speaker names vs rttm labels: map by overlap
            names = {}
            for u in utts:
                best = max(turns, key=lambda t: max(0.0, min(t.end, u.end) - max(t.start, u.start)))
                names.setdefault(u.speaker, best.speaker)
            utts = [Utt(names[u.speaker], u.start, u.end, u.text) for u in utts]
        else:
            turns = [Turn(u.start, u.end, u.speaker) for u in utts]
        cases.append((args.wav.stem, args.wav, utts, turns))
    tmp = Path(tempfile.mkdtemp(prefix="bench-words-"))
    if args.librispeech:
        ref_tr = Transcriber(args.whisper, threads=args.threads, vad=vad)
        cache: dict = {}
        for k in range(args.meetings):
            wav = tmp / f"meeting{k}.wav"
            utts, turns = build_meeting(args.librispeech, ref_tr, vad, k, args.utts, wav, args.overlap, cache,
                                        args.ref_cache)
            cases.append((wav.stem, wav, utts, turns))
        del ref_tr

    diarizer = None
    if args.diarize:
        from whispdiar.diarization.diarizer import Diarizer

        diarizer = Diarizer(args.diarize[0], args.diarize[1], threads=args.threads)

    results = {}
    for mode in args.modes.split(","):
        tr = None
        if mode == "after":
            tr = Transcriber(args.whisper, threads=args.threads, vad=vad)
        elif mode == "nolag":
            tr = Transcriber(args.whisper, threads=args.threads, vad=vad, refine=False)
        elif mode == "dtw":
            tr = Transcriber(args.whisper, threads=args.threads, vad=None)
        for name, wav, utts, turns in cases:
            t0, c0 = time.perf_counter(), time.process_time()
            segs = words_before(args.whisper, wav, args.threads) if mode == "before" else words_ours(tr, wav)
            dt, cpu = time.perf_counter() - t0, time.process_time() - c0
            diar = diarizer(wav) if diarizer is not None else None
            r = score(segs, utts, turns, diar)
            r["asr_seconds"], r["asr_cpu_seconds"] = round(dt, 2), round(cpu, 2)
            results[f"{mode}/{name}"] = r
            print(f"{mode:7s} {name:10s} " + " ".join(
                f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()), flush=True)
    # aggregate per mode over librispeech meetings
    for mode in args.modes.split(","):
        rs = [v for k, v in results.items() if k.startswith(mode + "/meeting")]
        if rs:
            agg = {k: float(np.mean([r[k] for r in rs if r.get(k) is not None]))
                   for k in rs[0] if isinstance(rs[0][k], float)}
            agg["wer_pooled"] = sum(r["edits"] for r in rs) / max(1, sum(r["ref_words"] for r in rs))
            print(f"{mode:7s} MEETINGS(mean of {len(rs)}) " + " ".join(f"{k}={v:.3f}" for k, v in agg.items()))
            results[f"{mode}/meetings-mean"] = agg
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
