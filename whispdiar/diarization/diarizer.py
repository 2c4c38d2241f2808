"""Speaker diarization: who spoke when (pyannote 3.x algorithm, numpy + onnxruntime).

Stages (data moves one way):

1. analyse     stream the audio into 10 s windows every ``step`` s; segmentation-3.0
               gives up to 3 local speakers per window; per-frame speaker counts are
               averaged over the windows that cover a frame; one CAM++ embedding per
               (window, active local speaker) from that speaker's non-overlapped frames.
2. cluster     spectral clustering of the embeddings over the whole file, the count read
               from the eigengap, weak clusters merged
               (``clustering.spectral_cluster_embeddings``), then every (window, speaker) gets the
               most similar centroid, two speakers of one window never the same one.
3. reconstruct per frame, the ``count`` global speakers with the most window votes are
               active; runs of frames become turns (with overlap) and an exclusive view
               (one speaker per instant).

Only per-window results (a [589, 3] activity map and 3 embeddings per window) and a
few per-frame vectors are kept, so memory stays flat in the length of the recording.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

import numpy as np

from ..audio import read as audio
from ..cancel import AnyEvent, Cancelled, EventLike, check
from ..errors import AudioError, ModelError
from ..records import Turn
from .clustering import (
    DEFAULT_MIN_CLUSTER_SIZE,
    Clustering,
    check_hints,
    constrained_assignment,
    l2_normalize,
    spectral_cluster_embeddings,
)
from .embedding import FRAME_SHIFT as FBANK_SHIFT
from .embedding import FbankStream
from .segmentation import (
    FRAME_SIZE_SAMPLES,
    FRAME_STEP,
    FRAME_STEP_SAMPLES,
    LOCAL_SPEAKERS,
    NUM_FRAMES,
    SAMPLE_RATE,
    WINDOW_SAMPLES,
    Segmenter,
    Window,
    frame_center,
    num_global_frames,
    sliding_windows,
    step_to_samples,
)

Progress = Callable[[float, float], None]
T = TypeVar("T")
R = TypeVar("R")
Relabel = Callable[[Clustering, np.ndarray], Clustering]


@dataclass(slots=True)
class DiarizationConfig:
    """Every hyper-parameter in one place; defaults tuned in docs/diarization.md."""

    step: float = 2.5  # s between window starts (pyannote uses 1 s; embeddings dominate the cost)
    # Windows per segmentation call: ORT is ~2x faster per window batched, but each window
    # in a batch holds ~25 MB of SincNet activations; 6 keeps a 60-min peak under 400 MB.
    batch_size: int = 6
    # Embeddings see at most the central ``embed_region`` s of each window: with
    # embed_region == step every second of speech is embedded about once.
    embed_region: float = 2.5
    min_embed_seconds: float = 0.6  # speech a (window, speaker) needs for an embedding at all
    # A speaker with less clean speech than this inside the central region is embedded on
    # its clean speech in the whole window instead (short turns make weak embeddings).
    region_min_seconds: float = 1.5
    # ... and then on at most this much of it, the frames nearest the window's centre
    # (None: all of it). In a lively meeting most (window, speaker) pairs take this path
    # (70 % of CAM++ frames uncapped), and their speech far from the centre is embedded by
    # the neighbouring windows anyway: 2 s cut diarization CPU by 14 % (docs/diarization.md).
    fallback_max_seconds: float | None = 2.0
    min_cluster_seconds: float = 1.0  # clean speech for an embedding to shape the clusters
    # Above this many embeddings (about 50 min of meeting at the default step) an evenly
    # spaced subset is clustered and the others are assigned to its centroids, so memory
    # stays bounded.
    max_cluster_embeddings: int = 2000
    # Members a cluster needs before the re-check may move speech to it.
    min_cluster_size: int = DEFAULT_MIN_CLUSTER_SIZE
    # Clustering: eigengap count on a pruned cosine affinity (whispdiar.diarization.spectral),
    # then weak clusters merged and mixed ones split (docs/diarization.md).
    spectral_pval: float = 0.02  # share of each affinity row kept (nearest neighbours)
    spectral_min_keep: int = 6  # ... but at least this many
    # The global eigengap is read among the first this many + 1 eigenvalues; more speakers
    # than that come from splitting the clusters that mix voices (``coherence``): no cap.
    max_auto_speakers: int = 15
    # A speaker needs this much clean speech in all (s), else it joins its nearest.
    min_speaker_seconds: float = 1.0
    spectral_min_cluster_size: int = 1  # members a spectral cluster needs (speech decides, above)
    # Two clusters whose members are this similar on average (mean pairwise cosine, read
    # above the floor below) are one voice.
    merge_cosine: float | None = 0.45
    # merge_cosine is read above the file's similarity floor (this percentile of all pairs)
    similarity_floor_percentile: float | None = 5.0
    # Any number of speakers (docs/diarization.md, "Speaker count from 1 to 100+"): a
    # cluster whose members' mean similarity is below this share of their mean similarity
    # to their nearest neighbour mixes voices and is split again, recursively
    # (clustering._split_while_distinct). Cross-validated over sets and speaker-count buckets.
    coherence: float | None = 0.6
    # Two clusters (each of >= ratio_min_size members) as alike as each is inside
    # (clustering.linkage_ratio >= this) are one voice: a monologue stays one speaker.
    # Cross-validation chose 0.85, which left a 5-min phone monologue as 3 speakers; 0.8
    # costs 0.6 points on phone calls (one found as 1 speaker), nothing elsewhere.
    merge_ratio: float | None = 0.8
    ratio_min_size: int = 5
    # Inside a split cluster, parts at least this alike are one voice again (cross-validated;
    # crowds 18.3 -> 17.2 % against 0.8, nothing else moved).
    rejoin_ratio: float | None = 0.85
    # Which global speaker a frame gets: the windows covering it vote with their local
    # speakers' clusters. With 4 windows per frame 2-2 ties are common, and a tie used to go
    # to the lower cluster index, an accident of the clustering. A vote now weighs
    # vote_edge_weight + (1 - vote_edge_weight) * Hamming, so the window centred nearer the
    # frame settles ties (edges still count, 3 votes beat 1). 1.0: uniform votes.
    # Measured in docs/diarization.md: confusion 3.65 -> 2.28 % on dev meetings, worse on AMI.
    vote_edge_weight: float = 0.5
    # A frame has n speakers when the windows' mean count reaches n - 1 + count_threshold
    # (None: numpy's round-half-to-even, pyannote's np.rint).
    count_threshold: float | None = None
    min_duration_on: float = 0.05  # drop turns shorter than this (s): 1-2 frame flickers
    min_duration_off: float = 0.0  # fill gaps shorter than this within one speaker (s)
    # Every turn boundary moves this much later than its frame's centre. Measured: our
    # speaker changes and turn ends came early against the human AMI labels and the
    # Silero-built references alike; two frames (34 ms) lowered DER on all four data sets
    # and less or more did not do better on all of them (docs/diarization.md).
    boundary_shift: float = 2 * FRAME_STEP
    # Re-check by ear: the segmentation model sometimes keeps one local speaker running
    # across a change of voice, and then the windows around a short turn all vote it to the
    # neighbour. A one-speaker stretch whose label differs, for at least recheck_seconds,
    # from what the window centred on it assigned there is cut into ~recheck_piece s pieces;
    # each piece is embedded and moves to another speaker (one with min_cluster_size members
    # or more) when that speaker's centroid is more similar by recheck_margin. Measured
    # (docs/diarization.md): ~2-5 % of the speech re-embedded, single-speaker accuracy on
    # the voiceprint meetings 94.6 -> 96.0 %, AMI unchanged. 0 turns it off.
    recheck_seconds: float = 0.3
    recheck_piece: float = 1.5
    recheck_margin: float = 0.1
    # Also doubtful: frames of a centred window's speaker whose embedding is less similar
    # than this to the centroid it was assigned (a mixed or noisy embedding).
    recheck_similarity: float = 0.6


@dataclass(slots=True)
class Diarization:
    turns: list[Turn]  # with overlap (RTTM view)
    exclusive: list[Turn]  # one speaker per instant (for word alignment)
    centroids: dict[str, np.ndarray]  # label -> L2-normalised centroid
    embeddings: dict[str, np.ndarray]  # label -> [n_i, D] member embeddings
    duration: float

    @property
    def speakers(self) -> list[str]:
        return sorted(self.centroids)


@dataclass(slots=True)
class Analysis:
    """Per-window results of stage 1 for one file: all that later stages need."""

    num_samples: int
    start_frames: np.ndarray  # [W] window start on the global frame grid
    segmentations: np.ndarray  # [W, NUM_FRAMES, 3] uint8 local speaker activity
    embeddings: np.ndarray  # [W, 3, D] float32, NaN where none was computed
    clean_seconds: np.ndarray  # [W, 3] non-overlapped speech of each local speaker
    count_mean: np.ndarray  # [F] float32 local speaker count averaged over the windows at each frame

    @property
    def duration(self) -> float:
        return self.num_samples / SAMPLE_RATE

    @property
    def has_embedding(self) -> np.ndarray:
        return ~np.isnan(self.embeddings[..., 0])


@dataclass(slots=True)
class _Accumulator:
    """Growing per-frame sums (count votes) and per-window lists."""

    count_sum: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    windows_sum: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    starts: list[int] = field(default_factory=list)
    segs: list[np.ndarray] = field(default_factory=list)
    embs: list[np.ndarray] = field(default_factory=list)
    clean: list[np.ndarray] = field(default_factory=list)

    def add_count(self, start: int, local_count: np.ndarray, weight: np.ndarray) -> None:
        end = start + len(local_count)
        old = len(self.count_sum)
        if end > old:  # grow geometrically: amortised O(1)
            size = max(end, 2 * old)
            self.count_sum = np.concatenate([self.count_sum, np.zeros(size - old, np.float32)])
            self.windows_sum = np.concatenate([self.windows_sum, np.zeros(size - old, np.float32)])
        self.count_sum[start:end] += local_count * weight
        self.windows_sum[start:end] += weight


class Diarizer:
    """Loads both ONNX models once; call it on as many files as you like."""

    def __init__(
        self,
        segmentation_model: str | Path,
        embedding_model: str | Path,
        threads: int = 2,
        config: DiarizationConfig | None = None,
        embedding_model_id: str | None = None,
    ):
        """``embedding_model_id``: the embedding file's fingerprint when the caller already
        has it (``embedding.model_fingerprint``); else it is computed here."""
        self.config = config or DiarizationConfig()
        # With workers, a batch is segmented while the one before it is embedded (see
        # _analyse_blocks), so segmentation gets half the threads: on 2 cores, 1 + 2 threads
        # ran m10 (10 min) in 19.3-19.8 s against 21.1-22.0 s for 2 threads per stage in turn.
        self.segmenter = Segmenter(segmentation_model, max(1, threads // 2))
        self.embedder = WindowEmbedder(embedding_model, threads, embedding_model_id)
        self._closing = threading.Event()

    def close(self) -> None:
        """Stop: a running call raises Cancelled at its next batch of windows, and the
        embedding workers end after the job they run. Nothing native is freed here: an
        onnxruntime session lives as long as a running call still references it."""
        self._closing.set()
        self.embedder.close()

    def _stop(self, cancel: threading.Event | None) -> AnyEvent:
        return AnyEvent(threading.Event(), cancel, self._closing)

    # ----------------------------------------------------------------- public
    def __call__(
        self,
        audio_path: str | Path,
        *,
        num_speakers: int | None = None,
        min_speakers: int | None = None,
        max_speakers: int | None = None,
        progress: Progress | None = None,
        cancel: threading.Event | None = None,
        channel: int | None = None,
        relabel: Relabel | None = None,
    ) -> Diarization:
        """Diarize one file. ``relabel`` may rewrite the clustering (e.g. merge clusters
        that match one enrolled voiceprint) before the turns are built."""
        check_hints(num_speakers, min_speakers, max_speakers)
        cancel = self._stop(cancel)
        path = Path(audio_path)
        analysis = self.analyse(path, progress=progress, cancel=cancel, channel=channel)
        _check(cancel)
        clustering, train = self.cluster(analysis, num_speakers=num_speakers,
                                         min_speakers=min_speakers, max_speakers=max_speakers)
        if relabel is not None:
            clustering = relabel(clustering, train)
        _check(cancel)
        return self.reconstruct(analysis, clustering, max_speakers=num_speakers or max_speakers,
                                audio_span=lambda a, b: audio.load(path, channel=channel, start=a, end=b),
                                cancel=cancel)

    # ----------------------------------------------------------------- stage 1
    def analyse(
        self,
        audio_path: str | Path,
        *,
        progress: Progress | None = None,
        cancel: threading.Event | None = None,
        channel: int | None = None,
    ) -> Analysis:
        path = Path(audio_path)
        cancel = self._stop(cancel)
        total = audio.info(path).duration
        blocks = _counting(audio.stream(path, channel=channel), cancel)
        return self._analyse_blocks(blocks, total, progress, cancel)

    def analyse_array(self, samples: np.ndarray, cancel: threading.Event | None = None) -> Analysis:
        """Stage 1 on a 16 kHz mono array already in memory (tests, short clips)."""
        x = np.asarray(samples, np.float32)
        if x.ndim != 1 or len(x) == 0:
            raise AudioError("expected a non-empty 1-D array of 16 kHz samples")
        cancel = self._stop(cancel)
        return self._analyse_blocks(_counting(iter([x]), cancel), len(x) / SAMPLE_RATE, None, cancel)

    def _analyse_blocks(
        self, blocks: _CountingBlocks, total: float, progress: Progress | None,
        cancel: threading.Event | None,
    ) -> Analysis:
        cfg = self.config
        acc = _Accumulator()
        step = step_to_samples(cfg.step)
        feats = FbankStream()  # one fbank over the stream, sliced per window
        # With embedding workers, a batch's embeddings are computed while the next batch
        # is segmented (at most one batch in flight), so neither stage waits for the other.
        pending: Callable[[], None] | None = None
        for batch in _batched(sliding_windows(blocks, step), cfg.batch_size):
            done = self._process(batch, acc, cancel, feats)
            if pending is not None:
                pending()
            pending = done
            # in-flight jobs hold views of the released frames; numpy keeps those alive
            feats.drop_before((batch[-1].start_sample + step) // FBANK_SHIFT - 1)
            if progress is not None:
                progress(min(total, blocks.samples / SAMPLE_RATE), total)
        if pending is not None:
            pending()
        n = blocks.samples
        if n == 0:
            raise AudioError("no audio samples")
        if progress is not None:
            progress(total, total)
        frames = num_global_frames(n)
        count_sum = np.zeros(frames, np.float32)
        windows_sum = np.zeros(frames, np.float32)
        m = min(frames, len(acc.count_sum))
        count_sum[:m], windows_sum[:m] = acc.count_sum[:m], acc.windows_sum[:m]
        count_mean = (count_sum / np.maximum(windows_sum, 1e-6)).astype(np.float32)
        dim = self.embedder.dim
        return Analysis(
            num_samples=n,
            start_frames=np.asarray(acc.starts, np.int64),
            segmentations=np.stack(acc.segs) if acc.segs else np.zeros((0, NUM_FRAMES, 3), np.uint8),
            embeddings=np.stack(acc.embs) if acc.embs else np.zeros((0, LOCAL_SPEAKERS, dim), np.float32),
            clean_seconds=np.stack(acc.clean) if acc.clean else np.zeros((0, LOCAL_SPEAKERS)),
            count_mean=count_mean,
        )

    def _process(self, batch: list[Window], acc: _Accumulator, cancel: threading.Event | None,
                 feats: FbankStream | None = None) -> Callable[[], None]:
        """Segment ``batch`` and start embedding it; the returned call waits for the
        embeddings and stores them (call these in batch order)."""
        _check(cancel)
        cfg = self.config
        segs = self.segmenter(np.stack([w.samples for w in batch]))
        region = _region_mask(cfg.embed_region)
        min_frames = cfg.min_embed_seconds / FRAME_STEP
        region_frames = max(cfg.region_min_seconds, cfg.min_embed_seconds) / FRAME_STEP
        cap = None if cfg.fallback_max_seconds is None else round(cfg.fallback_max_seconds / FRAME_STEP)
        weight = np.ones(NUM_FRAMES, np.float32)  # every frame of a window counts the same
        jobs: list[tuple[np.ndarray, list[np.ndarray]]] = []
        who: list[list[int]] = []
        for w, seg in zip(batch, segs, strict=True):
            local_count = seg.sum(axis=1)
            acc.add_count(w.start_frame, local_count.astype(np.float32), weight)
            clean = seg * (local_count == 1)[:, None]
            chosen = [(s, _choose_frames(seg[:, s], clean[:, s], region, min_frames, region_frames, cap))
                      for s in range(LOCAL_SPEAKERS)]
            chosen = [(s, m) for s, m in chosen if m is not None]
            jobs.append((self.embedder.window_features(w, feats), [m for _, m in chosen]))
            who.append([s for s, _ in chosen])
            acc.starts.append(w.start_frame)
            acc.segs.append(seg)
            acc.clean.append(clean.sum(axis=0) * FRAME_STEP)
        _check(cancel)
        results = self.embedder.submit(lambda job: self.embedder.embed_masked(*job), jobs)

        def store() -> None:
            for speakers, vectors in zip(who, results(), strict=True):
                emb = np.full((LOCAL_SPEAKERS, self.embedder.dim), np.nan, np.float32)
                for s, v in zip(speakers, vectors, strict=True):
                    emb[s] = v
                acc.embs.append(emb)

        return store

    # ----------------------------------------------------------------- stage 2
    def cluster(
        self,
        analysis: Analysis,
        *,
        num_speakers: int | None = None,
        min_speakers: int | None = None,
        max_speakers: int | None = None,
    ) -> tuple[Clustering, np.ndarray]:
        """Cluster the embeddings with enough clean speech; returns (clustering, those embeddings)."""
        cfg = self.config
        ok = analysis.has_embedding
        train_mask = ok & (analysis.clean_seconds >= cfg.min_cluster_seconds)
        if ok.any() and train_mask.sum() < 2:
            train_mask = ok  # short file: use what there is
        train = analysis.embeddings[train_mask]
        # Clean speech each embedding stands for: a frame is in WINDOW/step windows, and
        # clean_seconds counts a speaker's clean speech in the whole window.
        seconds = analysis.clean_seconds[train_mask] * cfg.step / (WINDOW_SAMPLES / SAMPLE_RATE)
        if len(train) > cfg.max_cluster_embeddings:
            keep = np.linspace(0, len(train) - 1, cfg.max_cluster_embeddings).round().astype(np.int64)
            seconds = seconds[keep] * (len(train) / len(keep))
            train = train[keep]
        clustering = spectral_cluster_embeddings(
            train, seconds, num_speakers=num_speakers, min_speakers=min_speakers,
            max_speakers=max_speakers, pval=cfg.spectral_pval, min_keep=cfg.spectral_min_keep,
            max_auto=cfg.max_auto_speakers, min_cluster_size=cfg.spectral_min_cluster_size,
            min_speaker_seconds=cfg.min_speaker_seconds, merge_cosine=cfg.merge_cosine,
            floor_percentile=cfg.similarity_floor_percentile,
            coherence=cfg.coherence, merge_ratio=cfg.merge_ratio, ratio_min_size=cfg.ratio_min_size,
            rejoin_ratio=cfg.rejoin_ratio,
        )
        return clustering, train

    # ----------------------------------------------------------------- stage 3
    def reconstruct(
        self, analysis: Analysis, clustering: Clustering, max_speakers: int | None = None,
        audio_span: Callable[[float, float], np.ndarray] | None = None,
        cancel: threading.Event | None = None,
    ) -> Diarization:
        """Turns from the windows' votes. ``audio_span(start, end)`` (16 kHz mono samples of
        the file) enables the re-check of doubtful stretches (``recheck_seconds``)."""
        cfg = self.config
        duration = analysis.duration
        k = clustering.num_clusters
        ok = analysis.has_embedding
        if k == 0 or not ok.any():
            return Diarization([], [], {}, {}, duration)
        x = l2_normalize(np.nan_to_num(analysis.embeddings)).astype(np.float32)
        scores = x @ clustering.centroids.T  # [W, 3, K] cosine similarity
        hard = constrained_assignment(scores, ok)

        votes = _votes(analysis.start_frames, analysis.segmentations, hard, len(analysis.count_mean), k,
                       _vote_weights(cfg.vote_edge_weight))

        count = speaker_count(analysis.count_mean, cfg.count_threshold)
        if max_speakers is not None:
            count = np.minimum(count, max_speakers)
        if audio_span is not None and cfg.recheck_seconds > 0 and k > 1:
            self._recheck(analysis, clustering, scores, hard, votes, count, audio_span, cancel)
        overlap = _top_speakers(votes, count)
        exclusive = _top_speakers(votes, np.minimum(count, 1))

        turns = _turns(overlap, duration, cfg.min_duration_on, cfg.min_duration_off, cfg.boundary_shift)
        excl = _turns(exclusive, duration, cfg.min_duration_on, cfg.min_duration_off, cfg.boundary_shift)
        # Labels in order of first speech; clusters that never win a frame disappear.
        first: dict[int, float] = {}
        for t in sorted(turns, key=lambda t: t.start):
            first.setdefault(int(t.speaker), t.start)
        names = {c: f"SPEAKER_{i:02d}" for i, c in enumerate(sorted(first, key=first.__getitem__))}

        def rename(ts: list[Turn]) -> list[Turn]:
            out = [replace(t, speaker=names[int(t.speaker)]) for t in ts if int(t.speaker) in names]
            return sorted(out, key=lambda t: (t.start, t.end, t.speaker))

        centroids: dict[str, np.ndarray] = {}
        members: dict[str, np.ndarray] = {}
        for c, name in names.items():
            mine = analysis.embeddings[hard == c]
            members[name] = mine.astype(np.float32)
            centroids[name] = l2_normalize(l2_normalize(mine).mean(axis=0)).astype(np.float32)
        return Diarization(rename(turns), rename(excl), centroids, members, duration)

    def _recheck(self, analysis: Analysis, clustering: Clustering, scores: np.ndarray, hard: np.ndarray,
                 votes: np.ndarray, count: np.ndarray, audio_span: Callable[[float, float], np.ndarray],
                 cancel: threading.Event | None) -> None:
        """Re-embed doubtful one-speaker stretches piece by piece; a piece that sounds like
        another (well-populated) speaker gets that speaker's votes (``votes`` is edited).
        ``scores`` [W, 3, K] and ``hard`` [W, 3] are reconstruct's similarities and assignment."""
        cfg = self.config
        label = _top_speakers(votes, np.minimum(count, 1))
        lab = np.where(label.any(axis=1), np.argmax(label, axis=1), -1)
        fit = np.take_along_axis(scores, np.maximum(hard, 0)[..., None], axis=2)[..., 0]
        doubt = _doubtful(analysis.start_frames, analysis.segmentations, hard, lab, _region_mask(cfg.step),
                          fit < cfg.recheck_similarity)
        sizes = np.bincount(clustering.labels, minlength=clustering.num_clusters)
        eligible = sizes >= cfg.min_cluster_size
        edges = np.flatnonzero(np.diff(np.concatenate([[-2], lab, [-2]])))
        jobs: list[tuple[int, int, int, float, float]] = []  # frames [pa, pb), label, seconds
        for a, b in zip(edges[:-1], edges[1:], strict=True):
            c = int(lab[a])
            if c < 0 or doubt[a:b].sum() * FRAME_STEP < cfg.recheck_seconds:
                continue
            pieces = max(1, int(round((b - a) * FRAME_STEP / cfg.recheck_piece)))
            for i in range(pieces):
                pa, pb = a + i * (b - a) // pieces, a + (i + 1) * (b - a) // pieces
                t0 = max(0.0, float(frame_center(pa)) - FRAME_STEP / 2)
                t1 = float(frame_center(pb - 1)) + FRAME_STEP / 2
                if t1 - t0 >= cfg.min_embed_seconds:
                    jobs.append((pa, pb, c, t0, t1))

        def embed(job: tuple[int, int, int, float, float]) -> np.ndarray:
            _check(cancel)  # a few seconds of work on an hour of audio: stay responsive
            return l2_normalize(self.embedder.model.embed(audio_span(job[3], job[4])))

        for (pa, pb, c, _, _), v in zip(jobs, self.embedder.map(embed, jobs), strict=True):
            sim = np.where(eligible, clustering.centroids @ v, -np.inf)
            best = int(np.argmax(sim))
            if best != c and sim[best] - float(clustering.centroids[c] @ v) > cfg.recheck_margin:
                votes[pa:pb, [c, best]] = votes[pa:pb, [best, c]]  # swap: both views follow


# --------------------------------------------------------------------- helpers
def speaker_count(count_mean: np.ndarray, threshold: float | None = None) -> np.ndarray:
    """Speakers per frame from the mean local count over the windows covering it."""
    if threshold is None:
        return np.rint(count_mean).astype(np.int64)
    return np.maximum(0, np.floor(count_mean + 1.0 - threshold)).astype(np.int64)


def _check(cancel: EventLike | None) -> None:
    check(cancel, "diarization cancelled", Cancelled)


class _CountingBlocks:
    """Iterator over audio blocks that counts samples and honours cancellation."""

    def __init__(self, blocks: Iterator[np.ndarray], cancel: threading.Event | None):
        self._blocks = blocks
        self._cancel = cancel
        self.samples = 0

    def __iter__(self) -> _CountingBlocks:
        return self

    def __next__(self) -> np.ndarray:
        _check(self._cancel)
        block = next(self._blocks)
        self.samples += len(block)
        return block


def _batched(items: Iterator[T], size: int) -> Iterator[list[T]]:
    """Lists of ``size`` consecutive items (the last may be shorter)."""
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _counting(blocks: Iterator[np.ndarray], cancel: threading.Event | None) -> _CountingBlocks:
    return _CountingBlocks(blocks, cancel)


def _vote_weights(edge_weight: float) -> np.ndarray:
    return (edge_weight + (1.0 - edge_weight) * np.hamming(NUM_FRAMES)).astype(np.float32)


def _votes(starts: np.ndarray, segmentations: np.ndarray, assigned: np.ndarray, frames: int, k: int,
           weight: np.ndarray) -> np.ndarray:
    """[F, K] weighted votes: each window's local speakers vote for their clusters."""
    votes = np.zeros((frames, k), np.float32)
    for start, seg, a in zip(starts, segmentations, assigned, strict=True):
        end = min(frames, start + NUM_FRAMES)
        if end <= start:
            continue
        for c in np.unique(a[a >= 0]):
            votes[start:end, c] += seg[: end - start, a == c].max(axis=1) * weight[: end - start]
    return votes


def _doubtful(starts: np.ndarray, segmentations: np.ndarray, assigned: np.ndarray, label: np.ndarray,
              central: np.ndarray, weak: np.ndarray | None = None) -> np.ndarray:
    """[F] bool: frames whose one-speaker ``label`` is none of the clusters that the window
    centred on them (its ``central`` frames) assigned to its speakers active there, or
    where one of those speakers' assignment is ``weak`` ([W, 3] bool)."""
    frames = len(label)
    out = np.zeros(frames, bool)
    idx = np.flatnonzero(central)
    if weak is None:
        weak = np.zeros(assigned.shape, bool)
    for start, seg, a, w in zip(starts, segmentations, assigned, weak, strict=True):
        f = start + idx
        keep = f < frames
        f, local = f[keep], idx[keep]
        if not len(f):
            continue
        known = (seg[local] > 0) & (a >= 0)[None, :]
        mine = known & (a[None, :] == label[f, None])
        shaky = (known & w[None, :]).any(axis=1)
        out[f] |= known.any(axis=1) & (label[f] >= 0) & (~mine.any(axis=1) | shaky)
    return out


def _region_mask(embed_region: float) -> np.ndarray:
    """Frames of the central ``embed_region`` seconds of a window."""
    centers = frame_center(np.arange(NUM_FRAMES))
    half = embed_region / 2
    mid = WINDOW_SAMPLES / SAMPLE_RATE / 2
    return (centers >= mid - half) & (centers < mid + half)


def _choose_frames(
    active: np.ndarray, clean: np.ndarray, region: np.ndarray, min_frames: float,
    region_frames: float, cap: int | None = None,
) -> np.ndarray | None:
    """Frames to embed one local speaker on, or None when it spoke too little.

    Prefer non-overlapped frames inside the central region (each second of speech is
    then embedded about once), else non-overlapped frames anywhere in the window, else
    all of its frames; outside the region keep at most ``cap`` frames, nearest the centre.
    """
    for i, (mask, need) in enumerate(((clean & region, region_frames), (clean, min_frames),
                                      (active, min_frames))):
        n = int(mask.sum())
        if n >= need:
            mask = mask.astype(bool)
            if i and cap is not None and n > cap:
                idx = np.flatnonzero(mask)
                keep = idx[np.argsort(np.abs(idx - (len(mask) - 1) / 2), kind="stable")[:cap]]
                mask = np.zeros_like(mask)
                mask[keep] = True
            return mask
    return None


def _top_speakers(votes: np.ndarray, count: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """[F, K] bool: per frame, the ``count`` speakers with most votes (votes > 0 only).

    Done in chunks of frames so the int64 sort indices never cover the whole file.
    """
    f, k = votes.shape
    out = np.zeros((f, k), bool)
    for a in range(0, f, chunk):
        v, c = votes[a : a + chunk], count[a : a + chunk]
        order = np.argsort(-v, axis=1, kind="stable")
        ranks = np.empty_like(order)
        ranks[np.arange(len(v))[:, None], order] = np.arange(k)[None, :]
        out[a : a + chunk] = (ranks < c[:, None]) & (v > 0)
    return out


def _turns(active: np.ndarray, duration: float, min_on: float, min_off: float, shift: float = 0.0) -> list[Turn]:
    """Runs of active frames per speaker column -> turns labelled by column index, every
    boundary ``shift`` s later than the frames say (clipped to the recording)."""
    out: list[Turn] = []
    half = FRAME_STEP / 2
    for c in range(active.shape[1]):
        col = np.concatenate([[0], active[:, c].astype(np.int8), [0]])
        edges = np.flatnonzero(np.diff(col))
        runs: list[list[float]] = []
        for a, b in zip(edges[::2], edges[1::2], strict=True):
            start = min(duration, max(0.0, float(frame_center(a)) - half + shift))
            end = min(duration, float(frame_center(b - 1)) + half + shift)
            if runs and start - runs[-1][1] < min_off:
                runs[-1][1] = end
            else:
                runs.append([start, end])
        out.extend(Turn(s, e, str(c)) for s, e in runs if e - s >= max(min_on, 1e-6))
    return out


class WindowEmbedder:
    """CAM++ embeddings of selected frames of windows.

    The fbank of a window is computed once and sliced per local speaker, instead of
    cutting and re-featurising audio per speaker. Features and model come from
    ``whispdiar.diarization.embedding``, so diarization centroids and enrolled voiceprints live in
    the same space.

    With ``threads`` > 1 the windows of a batch are embedded in parallel, each worker
    running the one-thread session: CAM++ on a few seconds of frames parallelises
    poorly inside one run (onnxruntime releases the GIL, so the workers really overlap).
    """

    def __init__(self, model_path: str | Path, threads: int = 2, model_id: str | None = None):
        from .embedding import SpeakerEmbedder, fbank, num_frames

        path = Path(model_path)
        if not path.is_file():
            raise ModelError(f"{path}: model file not found")
        try:
            self.model = SpeakerEmbedder(path, 1, model_id=model_id)
        except Exception as e:  # onnxruntime's own exception types for corrupt files
            raise ModelError(f"{path}: cannot load ONNX model ({str(e).splitlines()[0]})") from None
        self._fbank = fbank
        self.dim = int(self.model.dim)
        self._window_frames = num_frames(WINDOW_SAMPLES)
        self._seg_index = _fbank_to_segmentation_frames(self._window_frames)
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="embed") if threads > 1 else None

    def window_features(self, window: Window, stream: FbankStream | None = None) -> np.ndarray:
        """The window's fbank: sliced from ``stream`` (fed here as windows arrive, in
        order), else computed on the window alone.

        Windows start on the segmentation grid (270-sample frames), fbank frames on a
        160-sample grid: the slice starts at the nearest fbank frame, at most 5 ms off,
        well under one 17 ms segmentation frame (the resolution of the speaker masks).
        """
        if stream is None:
            return self._fbank(window.samples)
        start = window.start_sample
        # nearest frame: at most 80 samples past the window start, so the slice's last
        # frame still ends inside the window (997 * 160 + 400 + 80 = 160000 samples)
        first = (start + FBANK_SHIFT // 2) // FBANK_SHIFT
        stream.feed(window.samples[max(0, stream.fed - start):])
        return stream.frames(first, first + self._window_frames)

    def embed_masked(self, feats: np.ndarray, masks: list[np.ndarray]) -> list[np.ndarray]:
        """One embedding per segmentation-frame mask ([NUM_FRAMES] bool) of one window's fbank."""
        if not masks:
            return []
        index = self._seg_index if len(self._seg_index) == len(feats) else _fbank_to_segmentation_frames(len(feats))
        return [self.model.embed_features(feats[m[index]]) for m in masks]

    def submit(self, fn: Callable[[T], R], items: list[T]) -> Callable[[], list[R]]:
        """Start ``fn`` over ``items`` on the embedding workers (without workers: at once);
        the returned call waits for the results, in order."""
        if self._pool is None:
            out = [fn(item) for item in items]
            return lambda: out
        try:
            futures = [self._pool.submit(fn, item) for item in items]
        except RuntimeError:  # the pool was shut down: the diarizer is closing
            raise Cancelled("diarizer closed") from None
        return lambda: _results(futures)

    def map(self, fn: Callable[[T], R], items: list[T]) -> list[R]:
        """``fn`` over ``items`` on the embedding workers (in order)."""
        return self.submit(fn, items)()

    def close(self) -> None:
        if self._pool is not None:
            # Queued jobs are dropped; a running one finishes (its session stays alive
            # while it is referenced) and its result is never read.
            self._pool.shutdown(wait=False, cancel_futures=True)


def _results(futures: list[Future[R]]) -> list[R]:
    try:
        return [f.result() for f in futures]
    except CancelledError:  # dropped by close()
        raise Cancelled("diarizer closed") from None


def _fbank_to_segmentation_frames(num_fbank: int) -> np.ndarray:
    """Segmentation frame nearest to the centre of each fbank frame (25 ms window, 10 ms hop)."""
    centers = np.arange(num_fbank) * 160 + 200  # samples
    seg = np.rint((centers - FRAME_SIZE_SAMPLES / 2) / FRAME_STEP_SAMPLES).astype(np.int64)
    return np.clip(seg, 0, NUM_FRAMES - 1)
