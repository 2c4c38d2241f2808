"""End-to-end diarization with the real models on real audio (slow), plus pure helpers (fast)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy.optimize import linear_sum_assignment

from whispdiar.audio import read as audio
from whispdiar.diarization.clustering import constrained_assignment, l2_normalize
from whispdiar.diarization.diarizer import (
    Cancelled,
    Diarization,
    DiarizationConfig,
    Diarizer,
    _choose_frames,
    _doubtful,
    _region_mask,
    _top_speakers,
    _turns,
    _vote_weights,
    _votes,
    speaker_count,
)
from whispdiar.diarization.segmentation import FRAME_STEP, FRAME_STEP_SAMPLES, WINDOW_SAMPLES, frame_center
from whispdiar.errors import AudioError, InputNotFound, UsageError
from whispdiar.outputs.rttm import format_rttm, parse_rttm
from whispdiar.records import Turn

# Measured on this file (collar 0, overlap scored, this frame-level DER agrees with
# pyannote.metrics within 0.5 point): whispdiar 5.9-6.8 % depending on step/threshold,
# sherpa-onnx with the same two models 14.8 % (6.3 % when told 2 speakers). Merging the
# two speakers costs 49 %, one stray extra speaker ~10 %. 15 % leaves room for numerical
# noise across thread counts and machines while any real regression fails.
SAMPLE_DER_BOUND = 0.15


def der(ref: list[Turn], hyp: list[Turn], duration: float, step: float = 0.01) -> float:
    """Frame-level DER at collar 0 with overlap scored and the optimal speaker mapping."""
    n = int(np.ceil(duration / step))

    def matrix(turns: list[Turn]) -> np.ndarray:
        labels = sorted({t.speaker for t in turns})
        m = np.zeros((n, max(1, len(labels))), bool)
        for t in turns:
            m[int(round(t.start / step)) : int(round(t.end / step)), labels.index(t.speaker)] = True
        return m

    r, h = matrix(ref), matrix(hyp)
    co = r.T.astype(np.int64) @ h.astype(np.int64)
    rows, cols = linear_sum_assignment(co, maximize=True)
    correct = np.zeros(n)
    for i, j in zip(rows, cols, strict=True):
        correct += r[:, i] & h[:, j]
    nr, nh = r.sum(1), h.sum(1)
    return float(np.sum(np.maximum(nr, nh) - correct) / max(1, nr.sum()))


# ------------------------------------------------------------------ fast helpers
def test_top_speakers_keeps_count_best_voted():
    votes = np.array([[3, 1, 0], [1, 2, 2], [0, 0, 0], [2, 0, 1]], np.float32)
    count = np.array([1, 2, 1, 3])
    assert _top_speakers(votes, count).astype(int).tolist() == [[1, 0, 0], [0, 1, 1], [0, 0, 0], [1, 0, 1]]


def test_votes_ties_go_to_the_window_centred_nearer():
    from whispdiar.diarization.segmentation import NUM_FRAMES

    # Four windows, 1/4 window apart, all hearing one local speaker everywhere: the first two
    # say cluster 0, the last two cluster 1. Frame f lies in all four.
    step = NUM_FRAMES // 4
    starts = np.arange(4) * step
    segs = np.zeros((4, NUM_FRAMES, 3), np.uint8)
    segs[:, :, 0] = 1
    assigned = np.array([[0, -1, -1], [0, -1, -1], [1, -1, -1], [1, -1, -1]])
    frames = starts[-1] + NUM_FRAMES
    uniform = _votes(starts, segs, assigned, frames, 2, _vote_weights(1.0))
    weighted = _votes(starts, segs, assigned, frames, 2, _vote_weights(0.5))
    centre = NUM_FRAMES // 2
    near_2nd, near_3rd = step + centre + 20, 2 * step + centre - 20  # nearest window 1's / 2's centre
    for f in (near_2nd, near_3rd):
        assert uniform[f, 0] == uniform[f, 1] == 2  # a tie: used to go to the lower index
    assert weighted[near_2nd].argmax() == 0 and weighted[near_3rd].argmax() == 1
    # a majority still wins against one window centred on the frame
    assigned3 = np.array([[0, -1, -1], [0, -1, -1], [1, -1, -1], [0, -1, -1]])
    w3 = _votes(starts, segs, assigned3, frames, 2, _vote_weights(0.5))
    assert w3[near_3rd].argmax() == 0


def test_choose_frames_prefers_centre_and_caps_the_fallback():
    n = 100
    region = np.zeros(n, bool)
    region[40:60] = True
    clean = np.zeros(n, bool)
    clean[45:55] = True  # 10 central frames: enough for the region rule
    assert np.array_equal(_choose_frames(clean, clean, region, 5, 8, cap=4), clean)  # never capped
    clean = np.zeros(n, bool)
    clean[:30] = clean[70:] = True  # speech only at the edges: fallback to the whole window
    assert np.array_equal(_choose_frames(clean, clean, region, 5, 8), clean)
    capped = _choose_frames(clean, clean, region, 5, 8, cap=6)
    assert capped.sum() == 6 and set(np.flatnonzero(capped)) == {27, 28, 29, 70, 71, 72}
    assert _choose_frames(clean, clean, region, 80, 90, cap=6) is None  # too little speech


def test_turns_from_frames_fill_gaps_and_drop_short():
    active = np.zeros((200, 1), bool)
    active[10:50, 0] = True
    active[52:100, 0] = True  # 2-frame gap (34 ms)
    active[150:151, 0] = True  # one frame (17 ms)
    assert len(_turns(active, 10.0, 0.0, 0.0)) == 3
    merged = _turns(active, 10.0, min_on=0.1, min_off=0.1)
    assert len(merged) == 1 and merged[0].start < merged[0].end


def test_default_drops_one_and_two_frame_flickers():
    active = np.zeros((200, 2), bool)
    active[10:50, 0] = True
    active[60:61, 1] = True  # 17 ms
    active[70:72, 1] = True  # 34 ms
    active[80:83, 1] = True  # 51 ms: kept
    turns = _turns(active, 10.0, DiarizationConfig().min_duration_on, 0.0)
    assert [(t.speaker, round(t.end - t.start, 3)) for t in turns] == [("0", 0.675), ("1", 0.051)]


def test_turn_boundaries_shift_later_and_stay_inside_the_recording():
    active = np.zeros((200, 1), bool)
    active[0:50, 0] = True
    active[150:200, 0] = True  # runs to the last frame
    duration = float(frame_center(199)) + FRAME_STEP / 2
    plain = _turns(active, duration, 0.0, 0.0)
    moved = _turns(active, duration, 0.0, 0.0, shift=2 * FRAME_STEP)
    assert moved[0].start == pytest.approx(plain[0].start + 2 * FRAME_STEP)
    assert moved[0].end == pytest.approx(plain[0].end + 2 * FRAME_STEP)
    assert moved[1].start == pytest.approx(plain[1].start + 2 * FRAME_STEP)
    assert moved[1].end == plain[1].end == pytest.approx(duration)  # clipped at the end


def test_fbank_stream_slices_equal_fbank_of_the_slice(data_dir: Path):
    from whispdiar.diarization.embedding import FbankStream, fbank

    x, _ = sf.read(data_dir / "jfk.wav", dtype="float32")
    stream = FbankStream()
    for a in range(0, len(x), 7_000):  # fed in pieces that ignore the frame grid
        stream.feed(x[a:a + 7_000])
    for first in (0, 37, 250):
        n = 300
        alone = fbank(x[first * 160:(first + n - 1) * 160 + 400])  # the same samples, computed alone
        assert np.array_equal(stream.frames(first, first + n), alone)
    stream.drop_before(250)
    with pytest.raises(IndexError):
        stream.frames(249, 260)
    assert stream.frames(250, 260).shape == (10, 80)


def test_bad_hints_raise_before_work(tmp_path: Path):
    d = object.__new__(Diarizer)  # no models needed: hints are checked first
    with pytest.raises(UsageError):
        Diarizer.__call__(d, tmp_path / "x.wav", min_speakers=3, max_speakers=2)


# ------------------------------------------------------------------ real models
@pytest.fixture(scope="module")
def diarizer(segmentation_model_path: Path, embedding_model_path: Path) -> Diarizer:
    return Diarizer(segmentation_model_path, embedding_model_path, threads=2)


@pytest.fixture(scope="module")
def sample(diarizer: Diarizer, data_dir: Path) -> Diarization:
    return diarizer(data_dir / "diar_sample.flac")


@pytest.mark.slow
def test_overlapped_stages_store_what_one_thread_computes(segmentation_model_path: Path,
                                                           embedding_model_path: Path, data_dir: Path):
    # threads=2 embeds a batch while segmenting the next; threads=1 does one thing at a time
    cfg = DiarizationConfig(batch_size=2)
    a = Diarizer(segmentation_model_path, embedding_model_path, threads=1, config=cfg).analyse(
        data_dir / "diar_sample.flac")
    b = Diarizer(segmentation_model_path, embedding_model_path, threads=2, config=cfg).analyse(
        data_dir / "diar_sample.flac")
    assert len(a.start_frames) >= 4 * cfg.batch_size  # several batches pass through
    assert np.array_equal(a.start_frames, b.start_frames)
    assert np.array_equal(a.segmentations, b.segmentations)
    assert np.allclose(a.embeddings, b.embeddings, atol=1e-5, equal_nan=True)
    # and each window's embeddings are stored in its own slot: windows 0, 4, 8 start on a
    # sample where the stream's fbank grid meets the window's, so the window analysed
    # alone gives the same numbers
    x = audio.load(data_dir / "diar_sample.flac")
    one = Diarizer(segmentation_model_path, embedding_model_path, threads=1)
    for i in (0, 4, 8):
        start = int(b.start_frames[i]) * FRAME_STEP_SAMPLES
        alone = one.analyse_array(x[start:start + WINDOW_SAMPLES])
        assert np.isfinite(alone.embeddings[0]).any()
        assert np.allclose(alone.embeddings[0], b.embeddings[i], atol=1e-4, equal_nan=True)


@pytest.mark.slow
def test_two_speakers_found_with_low_der(sample: Diarization, data_dir: Path):
    ref = parse_rttm((data_dir / "diar_sample.rttm").read_text())["diar_sample"]
    assert sample.speakers == ["SPEAKER_00", "SPEAKER_01"]
    assert der(ref, sample.turns, sample.duration) < SAMPLE_DER_BOUND
    assert sample.duration == pytest.approx(30.0, abs=0.01)


@pytest.mark.slow
def test_result_structure(sample: Diarization):
    # labels numbered in order of first speech
    firsts = {}
    for t in sorted(sample.turns, key=lambda t: t.start):
        firsts.setdefault(t.speaker, t.start)
    assert list(firsts) == sorted(firsts)
    # exclusive view: no two turns overlap, and it covers what the overlap view covers minus nothing new
    ex = sorted(sample.exclusive, key=lambda t: t.start)
    assert all(a.end <= b.start + 1e-6 for a, b in zip(ex, ex[1:], strict=False))
    assert all(0 <= t.start < t.end <= sample.duration for t in sample.turns + sample.exclusive)
    for label in sample.speakers:
        c = sample.centroids[label]
        assert c.shape == (192,) and np.linalg.norm(c) == pytest.approx(1.0, abs=1e-4)
        assert sample.embeddings[label].ndim == 2 and sample.embeddings[label].shape[1] == 192


@pytest.mark.slow
def test_rttm_output_round_trips(sample: Diarization):
    text = format_rttm(sample.turns, "diar_sample")
    back = parse_rttm(text)["diar_sample"]
    assert len(back) == len(sample.turns)
    for a, b in zip(sorted(back, key=lambda t: (t.start, t.speaker)),
                    sorted(sample.turns, key=lambda t: (t.start, t.speaker)), strict=True):
        assert a.speaker == b.speaker and a.start == pytest.approx(b.start, abs=1e-3)


def test_doubtful_frames_are_those_the_centred_window_gave_to_someone_else():
    central = _region_mask(2.5)
    seg = np.zeros((1, 589, 3), np.uint8)
    seg[0, :, 0] = 1  # local speaker 0 talks all through the window
    label = np.zeros(589, np.int64)  # the votes gave every frame to cluster 0 ...
    label[300:] = 1  # ... except these, given to cluster 1
    doubt = _doubtful(np.array([0]), seg, np.array([[0, -1, -1]]), label, central)
    assert not doubt[~central].any()  # only the centred window's own frames are judged
    assert doubt[central & (np.arange(589) >= 300)].all()
    assert not doubt[central & (np.arange(589) < 300)].any()
    # a window that assigned nobody there has no opinion
    assert not _doubtful(np.array([0]), seg, np.array([[-1, -1, -1]]), label, central).any()
    # a weak assignment (embedding far from its centroid) makes its own frames doubtful too
    weak = _doubtful(np.array([0]), seg, np.array([[0, -1, -1]]), label, central, np.array([[True, False, False]]))
    assert weak[central].all() and not weak[~central].any()


@pytest.mark.slow
def test_recheck_gives_a_stretch_voted_to_the_wrong_speaker_back(diarizer: Diarizer, data_dir: Path):
    """Real models: the windows' votes for 11-14 s (one speaker in the reference) are
    swapped to the other speaker, as when the segmentation runs a local speaker across a
    change of voice. The windows centred there still say otherwise, so the stretch is
    re-embedded and given back; untouched votes are left alone."""
    path = data_dir / "diar_sample.flac"
    a = diarizer.analyse(path)
    cl, _ = diarizer.cluster(a)
    assert cl.num_clusters == 2 and np.bincount(cl.labels).min() >= diarizer.config.min_cluster_size
    cfg = diarizer.config
    x = l2_normalize(np.nan_to_num(a.embeddings)).astype(np.float32)
    scores = x @ cl.centroids.T
    hard = constrained_assignment(scores, a.has_embedding)
    votes = _votes(a.start_frames, a.segmentations, hard, len(a.count_mean), 2,
                   _vote_weights(cfg.vote_edge_weight))
    count = speaker_count(a.count_mean, cfg.count_threshold)
    span = lambda s, e: audio.load(path, start=s, end=e)  # noqa: E731

    def top(v: np.ndarray) -> np.ndarray:
        t = _top_speakers(v, np.minimum(count, 1))
        return np.where(t.any(axis=1), np.argmax(t, axis=1), -1)

    before = top(votes)
    untouched = votes.copy()
    diarizer._recheck(a, cl, scores, hard, untouched, count, span, None)
    assert (top(untouched) == before).mean() > 0.98

    frames = np.flatnonzero((frame_center(np.arange(len(before))) > 11.0)
                            & (frame_center(np.arange(len(before))) < 14.0))
    truth = np.bincount(before[frames][before[frames] >= 0]).argmax()
    assert (before[frames] == truth).mean() > 0.9
    votes[frames] = votes[frames][:, ::-1]  # the neighbour wins every vote there
    assert (top(votes)[frames] == 1 - truth).mean() > 0.9
    diarizer._recheck(a, cl, scores, hard, votes, count, span, None)
    assert (top(votes)[frames] == truth).mean() > 0.8


@pytest.mark.slow
@pytest.mark.parametrize("k", [1, 3])
def test_num_speakers_is_honoured(diarizer: Diarizer, data_dir: Path, k: int):
    assert len(diarizer(data_dir / "diar_sample.flac", num_speakers=k).speakers) == k


@pytest.mark.slow
def test_max_speakers_is_honoured(diarizer: Diarizer, data_dir: Path):
    assert len(diarizer(data_dir / "diar_sample.flac", max_speakers=1).speakers) == 1


@pytest.mark.slow
@pytest.mark.parametrize("seconds", [0.5, 20.0])
def test_silence_gives_no_turns(diarizer: Diarizer, tmp_path: Path, seconds: float):
    path = tmp_path / "silence.wav"
    rng = np.random.default_rng(0)
    sf.write(path, (1e-4 * rng.standard_normal(int(seconds * 16000))).astype(np.float32), 16000)
    result = diarizer(path)
    assert result.turns == [] and result.exclusive == [] and result.speakers == []
    assert result.duration == pytest.approx(seconds, abs=1e-3)


@pytest.mark.slow
def test_short_input_is_padded(diarizer: Diarizer, data_dir: Path, tmp_path: Path):
    x, sr = sf.read(data_dir / "diar_sample.flac", dtype="float32")
    path = tmp_path / "short.wav"
    sf.write(path, x[int(10.6 * sr) : int(14.4 * sr)], sr)  # 3.8 s, one speaker
    result = diarizer(path)
    assert len(result.speakers) == 1
    assert all(t.end <= 3.8 + 1e-6 for t in result.turns)


@pytest.mark.slow
def test_stereo_44k_and_channel(diarizer: Diarizer, data_dir: Path, tmp_path: Path):
    import soxr

    x, sr = sf.read(data_dir / "diar_sample.flac", dtype="float32")
    y = soxr.resample(x, sr, 44100)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([y, np.zeros_like(y)], axis=1), 44100)
    assert len(diarizer(path, channel=0).speakers) == 2
    assert diarizer(path, channel=1).turns == []


@pytest.mark.slow
def test_progress_and_cancel(diarizer: Diarizer, data_dir: Path):
    seen: list[tuple[float, float]] = []
    diarizer(data_dir / "diar_sample.flac", progress=lambda d, t: seen.append((d, t)))
    assert seen and seen[-1][0] == seen[-1][1] == pytest.approx(30.0, abs=0.01)
    assert all(a[0] <= b[0] for a, b in zip(seen, seen[1:], strict=False))
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        diarizer(data_dir / "diar_sample.flac", cancel=cancel)


@pytest.mark.slow
def test_relabel_hook_can_merge_clusters(diarizer: Diarizer, data_dir: Path):
    from whispdiar.diarization.clustering import Clustering

    def merge_all(c: Clustering, emb: np.ndarray) -> Clustering:
        assert len(emb) == len(c.labels)
        centroid = c.centroids.mean(axis=0, keepdims=True)
        return Clustering(np.zeros_like(c.labels), centroid / np.linalg.norm(centroid))

    assert len(diarizer(data_dir / "diar_sample.flac", relabel=merge_all).speakers) == 1


@pytest.mark.slow
def test_bad_input_raises_audio_errors(diarizer: Diarizer, tmp_path: Path):
    with pytest.raises(InputNotFound):
        diarizer(tmp_path / "missing.wav")
    bad = tmp_path / "bad.wav"
    bad.write_text("not audio")
    with pytest.raises(AudioError):
        diarizer(bad)


@pytest.mark.slow
def test_config_is_respected(segmentation_model_path: Path, embedding_model_path: Path, data_dir: Path):
    # Another window step and embedding region, whole-window fallbacks, a longer pause rule:
    # still the sample's two voices, and no turn of one speaker closer than 0.5 s to the next.
    cfg = DiarizationConfig(step=5.0, embed_region=5.0, min_duration_off=0.5, fallback_max_seconds=None)
    d = Diarizer(segmentation_model_path, embedding_model_path, threads=1, config=cfg)
    result = d(data_dir / "diar_sample.flac")
    assert len(result.speakers) == 2
    for label in result.speakers:
        mine = sorted((t for t in result.turns if t.speaker == label), key=lambda t: t.start)
        assert all(b.start - a.end >= 0.5 for a, b in zip(mine, mine[1:], strict=False))


def reverberant(x: np.ndarray, rt60: float, seed: int, direct: float = 0.3) -> np.ndarray:
    """``x`` through a synthetic room: a direct path plus exponentially decaying noise
    (-60 dB after ``rt60`` s), i.e. a far microphone in a reverberant room."""
    rng = np.random.default_rng(seed)
    n = int(rt60 * 16000)
    tail = rng.standard_normal(n) * np.exp(-6.9 * np.arange(n) / n)
    rir = tail / np.linalg.norm(tail) * np.sqrt(1 - direct**2)
    rir[0] = direct  # most of the energy arrives late: direct-to-reverberant ratio ~ -10 dB
    return np.convolve(x, rir)[: len(x)].astype(np.float32)


@pytest.mark.slow
def test_two_speakers_in_a_reverberant_noisy_room(diarizer: Diarizer, data_dir: Path):
    # Two LibriSpeech readers (tests/data) take turns for ~40 s, each in its own place in a
    # room with RT60 0.5 s, with pink-ish noise at 15 dB SNR; the reference is where the
    # turns were placed (each utterance from its first to last sample above -35 dB).
    files = {"a": sorted(data_dir.glob("ls-1688-*.flac")), "b": sorted(data_dir.glob("ls-1998-*.flac"))}
    out = np.zeros(50 * 16000, np.float32)
    ref: list[Turn] = []
    t = 0.5
    for i in range(6):
        spk = "ab"[i % 2]
        x, sr = sf.read(files[spk][i // 2 % len(files[spk])], dtype="float32")
        x = x[: int(6.5 * sr)] / max(1e-4, float(np.sqrt(np.mean(x**2)))) * 0.05
        loud = np.flatnonzero(np.abs(x) > np.abs(x).max() * 10 ** (-35 / 20))
        a = int(t * 16000)
        if a + len(x) > len(out):
            break
        out[a : a + len(x)] += reverberant(x, 0.5, seed=ord(spk))
        ref.append(Turn(t + loud[0] / 16000, t + loud[-1] / 16000, spk))
        t += len(x) / 16000 + 0.4
    out = out[: int((t + 0.5) * 16000)]
    rng = np.random.default_rng(3)
    from scipy.signal import lfilter

    noise = lfilter([1.0], [1.0, -0.95], rng.standard_normal(len(out)))  # low-pass: fan-like
    speech_rms = float(np.sqrt(np.mean(out[out != 0] ** 2)))
    out += (noise / np.sqrt(np.mean(noise**2)) * speech_rms * 10 ** (-15 / 20)).astype(np.float32)
    a = diarizer.analyse_array(out)
    clustering, _ = diarizer.cluster(a)
    result = diarizer.reconstruct(a, clustering)
    assert len(result.speakers) == 2
    # Measured 2026-12-01: 2 speakers, DER 0.18 at collar 0 (most of it at the six turn
    # changes, where the reverberant tail of one reader runs into the next); the old
    # threshold cut found 3 here. Both readers merged into one would cost ~0.5, so 0.3
    # catches a lost speaker with room for thread-count noise.
    assert der(ref, result.turns, len(out) / 16000) < 0.3


def _concatenate(paths: list[Path], out: Path, pause: float = 0.8) -> Path:
    parts = []
    for p in paths:
        x, sr = sf.read(p, dtype="float32", always_2d=True)
        assert sr == 16000
        parts += [x[:, 0] / max(1e-3, float(np.abs(x).max())) * 0.5, np.zeros(int(pause * sr), np.float32)]
    sf.write(out, np.concatenate(parts), 16000)
    return out


@pytest.mark.slow
def test_each_voice_speaking_once_is_a_speaker_of_its_own(diarizer: Diarizer, data_dir: Path, tmp_path: Path):
    # Five voices, each heard once (a town hall's pattern): three LibriSpeech readers, JFK
    # and a German speaker. The count must not collapse to the two or three largest.
    files = [data_dir / n for n in ("ls-1688-142285-0006.flac", "jfk.wav", "ls-1998-15444-0001.flac",
                                    "de-leopard.flac", "ls-2033-164914-0000.flac")]
    result = diarizer(_concatenate(files, tmp_path / "once.wav"))
    assert len(result.speakers) == 5


@pytest.mark.slow
def test_one_reader_is_one_speaker(diarizer: Diarizer, data_dir: Path, tmp_path: Path):
    # A monologue of four utterances (~45 s): one speaker, however the windows vary.
    files = sorted(data_dir.glob("ls-1998-*.flac"))
    result = diarizer(_concatenate(files, tmp_path / "mono.wav"))
    assert len(result.speakers) == 1
