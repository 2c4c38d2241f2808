"""``LiveSession``: feed samples as they arrive, read events as utterances finish.

    with LiveSession(LiveEngines.load("tiny.en")) as s:
        s.feed(block)            # any thread; never blocks
        ...
        s.end()                  # the input is over
        for event in s.events():  # Partial, SpeakerUpdate, Final, Degraded, ..., Finished
            ...

Two threads of its own: the endpointer (Silero VAD over every block, cheap) cuts
utterances; the decoder embeds each one (CAM++), assigns its speaker online and has
whisper transcribe it. Whisper gets every thread (``threads``): the VAD and embedding
cost a few percent of a core.

Keeping up (``Degraded`` events): the decoder always takes the oldest waiting utterance.
When an utterance ended ``behind`` seconds or more ago and has not been decoded yet,
partial lines stop (level 1); at ``merge_behind`` s the waiting utterances are decoded
together, packed into one whisper window of up to 29 s (level 2: whisper's encoder
costs the same for a full window as for a short one, so this is the lever that buys
throughput); when more than ``max_backlog`` s of speech wait, the oldest utterances
are shown without text (level 3), so latency stays bounded on any machine. The saved
recording is complete whatever happens: the refined tier transcribes it all.

Native resources: ``close()`` stops the threads and closes the transcriber, which frees
only idle whisper contexts (a decode still running frees its own when whisper returns);
the onnxruntime sessions are freed by Python when the last thread using them drops them.
"""

from __future__ import annotations

import contextlib
import logging
import math
import queue
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..alignment import NO_SPACE_LANGUAGES
from ..asr.chunks import JOIN_SILENCE, LEAD_IN, MAX_CHUNK_SECONDS, Chunk, Piece
from ..asr.vad import FRAME_SECONDS, SileroVad
from ..asr.whisper import Transcriber
from ..asr.words import chunk_segments
from ..audio.read import SAMPLE_RATE
from ..cancel import Cancelled
from ..diarization.embedding import SpeakerEmbedder, fbank
from ..diarization.segmentation import Segmenter
from ..records import Word
from ..speakers.naming import DEFAULT_THRESHOLD, Voiceprint
from .events import Degraded, Event, Final, Finished, LiveUtterance, Partial, SpeakerUpdate
from .online_speakers import DEFAULT_JOIN, OnlineSpeakers
from .turns import change_points, split_at_changes
from .utterances import EndpointConfig, Endpointer, Utterance

log = logging.getLogger(__name__)

MIN_EMBED_FRAMES = 50  # fbank frames (0.5 s) of speech for an utterance's embedding
# Language detection (multilingual model, no --language): whisper's guess on one short
# far-field utterance is often wrong (AMI trn00's first 3 s: Welsh, p 0.51; its next
# 1.4 s: German), and a session that kept it transcribed everything after in Welsh, each
# decode in fallback loops (8.8 s instead of 2.5 s, base). So each utterance is decoded
# in the language whisper hears in all the speech so far (up to 30 s, one encoder pass),
# and that language is kept once it is sure or enough speech has been heard.
LANGUAGE_SURE = 0.9  # probability that keeps the language at once (JFK's 11 s: 0.96)
LANGUAGE_HEARD = 20.0  # s of speech after which the language is kept whatever its probability
CLOSE_WAIT = 2.0


@dataclass(frozen=True, slots=True)
class LiveConfig:
    language: str | None = None  # None: detected on the first utterance, then kept
    prompt: str | None = None
    translate: bool = False
    partials: bool = False  # decode the utterance in progress when the decoder is idle
    partial_every: float = 1.0  # s of new audio between two partial decodes
    threads: int = 1  # whisper's threads (whisper_threads)
    endpoint: EndpointConfig = field(default_factory=EndpointConfig)
    join: float = DEFAULT_JOIN  # online clustering: similarity to join a speaker
    name_threshold: float = DEFAULT_THRESHOLD  # similarity to name an enrolled speaker
    behind: float = 2.0  # s: an utterance waiting this long after its end turns partials off
    merge_behind: float = 4.0  # s: ... and this long packs waiting utterances into one chunk
    max_backlog: float = 60.0  # s of waiting speech beyond which the oldest lose their text
    recover_after: int = 3  # utterances decoded on time in a row before degradation ends


@dataclass(slots=True)
class LiveEngines:
    """The loaded models a session uses (``close`` frees them)."""

    transcriber: Transcriber
    embedder: SpeakerEmbedder
    vad: SileroVad
    segmenter: Segmenter | None = None  # speaker changes inside utterances (None: one speaker each)
    voiceprints: dict[str, Voiceprint] = field(default_factory=dict)

    @classmethod
    def load(cls, whisper: str | Path = "base", embedding: str | Path = "campplus", vad: str | Path = "silero-vad",
             segmentation: str | Path | None = "segmentation-3.0", threads: int = 2,
             voiceprints: dict[str, Voiceprint] | None = None) -> LiveEngines:
        """Load the models by name or path. ``threads``: cores in all; whisper gets all but
        one (at least one): with two threads on a 2-core machine that something else also
        uses, ggml's spinning threads made a 3 s decode take 30 s (docs/live.md)."""
        from .. import models

        # one context (lanes=1): one utterance at a time, in order
        transcriber = Transcriber(models.resolve(str(whisper)), threads=whisper_threads(threads), lanes=1)
        try:
            emb = SpeakerEmbedder(models.resolve(str(embedding)), threads=1)
            silero = SileroVad(models.resolve(str(vad)), threads=1, lanes=1)
            seg = Segmenter(models.resolve(str(segmentation)), threads=1) if segmentation is not None else None
        except BaseException:
            transcriber.close()
            raise
        return cls(transcriber, emb, silero, seg, dict(voiceprints or {}))

    @property
    def embedding_model_id(self) -> str:
        return self.embedder.model_id

    def close(self, wait: float = CLOSE_WAIT) -> None:
        self.transcriber.close(wait=wait)


def whisper_threads(total: int) -> int:
    """Whisper's share of ``total`` threads: all but one for the VAD, embeddings and capture."""
    return max(1, total - 1)


class LiveSession:
    def __init__(self, engines: LiveEngines, config: LiveConfig | None = None, own_engines: bool = False):
        self.engines = engines
        self.config = config or LiveConfig()
        # the language of the text: given, or whisper's guess over the speech so far, kept
        # for good once sure (see LANGUAGE_SURE)
        self.language = engines.transcriber.check_language(self.config.language)
        self._detecting = self.language is None and engines.transcriber.multilingual
        self._heard: list[np.ndarray] = []  # speech for the detection (up to 30 s)
        self._heard_seconds = 0.0
        engines.transcriber.check_task(self.config.translate)
        self.speakers = OnlineSpeakers(engines.voiceprints, join=self.config.join,
                                       name_threshold=self.config.name_threshold)
        self.utterances: list[LiveUtterance] = []  # finished, in order
        self._own = own_engines
        seg = engines.segmenter
        self._endpointer = Endpointer(engines.vad.stream(), self.config.endpoint,
                                      None if seg is None else
                                      lambda x: change_points(seg, x, self.config.endpoint.change_min_turn))
        self._cv = threading.Condition()
        self._inbox: deque[np.ndarray] = deque()
        self._waiting: deque[Utterance] = deque()
        self._current: Utterance | None = None  # snapshot for a partial line
        self._partial_at = 0.0  # end of the audio the last partial covered
        self._ended = False  # no more input
        self._cut_done = False  # the endpointer flushed its last utterance
        self._cancel = threading.Event()  # close(): stop now
        self._events: queue.SimpleQueue[Event] = queue.SimpleQueue()
        self._finished = False
        self.level = 0
        self._on_time = 0
        self.fed_seconds = 0.0
        self.error: BaseException | None = None
        self._next_index = 0
        self._lags: deque[float] = deque(maxlen=25)
        self._now = 0.0  # stream seconds the endpointer has seen (under _cv)
        self._busy = 0  # threads working on what they took from _inbox / _waiting (under _cv)
        self.decoding = threading.Event()  # set while whisper runs (tests provoke races with it)
        self._vad = threading.Thread(target=self._guard, args=(self._cut_loop,), name="live-vad", daemon=True)
        self._dec = threading.Thread(target=self._guard, args=(self._decode_loop,), name="live-decode", daemon=True)
        self._vad.start()
        self._dec.start()

    # -- input
    def feed(self, samples: np.ndarray) -> None:
        """16 kHz mono float32 samples, in order. Never blocks; ignored after ``end``."""
        x = np.asarray(samples, np.float32).ravel()
        with self._cv:
            if self._ended or self._cancel.is_set() or not len(x):
                return
            self._inbox.append(x)
            self.fed_seconds += len(x) / SAMPLE_RATE
            self._cv.notify_all()

    def end(self) -> None:
        """The input is over: the last utterance is cut, everything waiting is decoded,
        then ``Finished``."""
        with self._cv:
            self._ended = True
            self._cv.notify_all()

    def close(self, wait: float = CLOSE_WAIT) -> None:
        """Stop now (from any thread): a running decode aborts within a decoder step,
        waiting utterances are dropped, ``Finished(aborted=True)`` unless already finished.
        Frees the engines if the session loaded them."""
        self._cancel.set()
        with self._cv:
            self._ended = True
            self._cv.notify_all()
        for t in (self._vad, self._dec):
            if t is not threading.current_thread():
                t.join(wait)
        if self._own:
            self.engines.close(wait=wait)

    def __enter__(self) -> LiveSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- output
    def get(self, timeout: float | None = None) -> Event | None:
        """The next event, or None after ``timeout`` seconds without one."""
        try:
            return self._events.get(timeout=timeout)
        except queue.Empty:
            return None

    def events(self) -> Iterator[Event]:
        """Events until (and including) ``Finished``."""
        while True:
            e = self._events.get()
            yield e
            if isinstance(e, Finished):
                return

    @property
    def finished(self) -> bool:
        return self._finished

    @property
    def idle(self) -> bool:
        """Everything fed so far has been cut and decoded (its lines are out)."""
        with self._cv:
            return not (self._inbox or self._waiting or self._busy)

    # -- threads
    def _guard(self, loop) -> None:  # noqa: ANN001
        try:
            loop()
        except Cancelled:
            pass
        except BaseException as e:  # handed to the reader through Finished; the other thread stops too
            log.exception("live session thread failed")
            self.error = e
            self._cancel.set()
            with self._cv:
                self._cv.notify_all()
        finally:
            if threading.current_thread() is self._dec:
                self._finish()

    def _finish(self) -> None:
        with self._cv:
            if self._finished:
                return
            self._finished = True
        self._events.put(Finished(len(self.utterances), self._endpointer.seconds,
                                  self._cancel.is_set() or self.error is not None))

    def _cut_loop(self) -> None:
        ep = self._endpointer
        while True:
            with self._cv:
                while not self._inbox and not self._ended:
                    self._cv.wait()
                if self._cancel.is_set():
                    return
                blocks = list(self._inbox)
                self._inbox.clear()
                ended = self._ended
                self._busy += 1
            done: list[Utterance] = []
            for b in blocks:
                done += ep.feed(b)
            if ended:
                last = ep.flush()
                if last is not None:
                    done.append(last)
            current = ep.current() if self.config.partials and not ended else None
            with self._cv:
                self._waiting.extend(done)
                self._now = ep.seconds
                if current is None or current.end - self._partial_at >= self.config.partial_every:
                    self._current = current
                if ended:
                    self._cut_done = True
                self._busy -= 1
                self._cv.notify_all()
            if ended:
                return

    def _decode_loop(self) -> None:
        while True:
            with self._cv:
                while not (self._waiting or self._cut_done or self._cancel.is_set()
                           or (self._current is not None and self.level == 0)):
                    self._cv.wait()
                if self._cancel.is_set():
                    return
                skipped: list[Utterance] = []
                batch: list[Utterance] = []
                partial = None
                if self._waiting:
                    skipped, batch = self._take()
                elif self._cut_done:
                    return
                else:
                    partial, self._current = self._current, None
                self._busy += 1
            try:
                self._skip(skipped)
                if partial is not None:
                    self._partial(partial)
                elif batch:
                    self._decode(batch)
            finally:
                with self._cv:
                    self._busy -= 1

    def _take(self) -> tuple[list[Utterance], list[Utterance]]:
        """(utterances to show without text, utterances to decode next), after updating the
        level (called under _cv; the work is done outside it, so ``feed`` never waits)."""
        cfg = self.config
        behind = self._now - self._waiting[0].end
        waiting = sum(u.duration for u in self._waiting)
        level = 0
        if behind >= cfg.behind:
            level = 1
        if behind >= cfg.merge_behind and len(self._waiting) > 1:
            level = 2
        if waiting > cfg.max_backlog:
            level = 3
        if level == 0 and self.level > 0:
            self._on_time += 1
            level = self.level if self._on_time < cfg.recover_after else 0
        elif level > 0:
            self._on_time = 0
        if level != self.level:
            self._events.put(Degraded(level, round(behind, 1), _level_message(level, behind, waiting)))
            self.level = level
        if level >= 1:
            self._current = None  # partial lines are the first thing to go
        skipped = []
        if level == 3:
            while len(self._waiting) > 1 and sum(u.duration for u in self._waiting) > cfg.max_backlog / 2:
                skipped.append(self._waiting.popleft())
        batch = [self._waiting.popleft()]
        if level >= 2:
            length = LEAD_IN + batch[0].duration
            while self._waiting and length + JOIN_SILENCE + self._waiting[0].duration <= MAX_CHUNK_SECONDS:
                length += JOIN_SILENCE + self._waiting[0].duration
                batch.append(self._waiting.popleft())
        return skipped, batch

    def _skip(self, utts: list[Utterance]) -> None:
        """Too far behind: these go out with their speaker but without text."""
        for u in utts:
            live = self._assign(u)
            live.transcribed = False
            live.text = "[...]"
            self._emit(live)

    def _assign(self, u: Utterance) -> LiveUtterance:
        emb = utterance_embedding(self.engines.embedder, u)
        a = self.speakers.assign(emb, u.speech_seconds)
        if a.new or a.renamed_from is not None:
            sim = a.speaker.similarity if a.renamed_from is not None else a.similarity
            self._events.put(SpeakerUpdate(a.speaker.label, a.speaker.name, a.speaker.enrolled,
                                           None if sim is None else round(sim, 3), a.renamed_from))
        self._next_index += 1
        return LiveUtterance(self._next_index - 1, round(u.start, 3), round(u.end, 3), "", [], a.speaker.label,
                             a.speaker.name, round(u.speech_seconds, 3), emb)

    def _emit(self, live: LiveUtterance) -> None:
        self.utterances.append(live)
        self._events.put(Final(live))

    def _chunk(self, utts: list[Utterance]) -> tuple[Chunk, np.ndarray]:
        pieces: list[Piece] = []
        at = LEAD_IN
        for u in utts:
            pieces.append(Piece(u.start, u.end, at))
            at += u.duration + JOIN_SILENCE
        chunk = Chunk(pieces)
        signal = np.zeros(int(math.ceil(chunk.length * SAMPLE_RATE)) + 1, np.float32)
        for p, u in zip(pieces, utts, strict=True):
            i = int(round(p.packed * SAMPLE_RATE))
            x = u.samples[: len(signal) - i]
            signal[i:i + len(x)] = x
        return chunk, signal

    def _detect_language(self, utts: list[Utterance]) -> None:
        """Update the language guess with these (final) utterances; keep it once sure."""
        for u in utts:
            if self._heard_seconds < MAX_CHUNK_SECONDS:
                self._heard.append(u.samples)
            self._heard_seconds += u.speech_seconds
        code, p = self.engines.transcriber.detect_language(np.concatenate(self._heard)[: 30 * SAMPLE_RATE],
                                                           self.config.threads)
        if code is not None:
            self.language = code
        if p >= LANGUAGE_SURE or self._heard_seconds >= LANGUAGE_HEARD:
            self._detecting = False
            self._heard = []

    def _whisper(self, utts: list[Utterance], final: bool = True) -> list[list[Word]]:
        """Words per utterance (stream times), one whisper pass for all of them."""
        chunk, signal = self._chunk(utts)
        self.decoding.set()
        try:
            if self._detecting and final:
                self._detect_language(utts)
            unsure = self._detecting
            # in a language whisper is not yet sure of, one temperature: trn00's first
            # lines, decoded in Welsh, re-decoded at higher temperatures for 5-11 s each
            raw, detected = self.engines.transcriber.decode(signal, self.language, self.config.threads,
                                                            self._cancel, self.config.prompt, self.config.translate,
                                                            fallback=not unsure)
        finally:
            self.decoding.clear()
        if self.language is None and detected is not None and raw:
            self.language = detected  # a partial line before any final one: whisper's own guess
        words = [w for seg in chunk_segments(raw, chunk, chunk.length, "dtw") for w in seg.words]
        self._unlag(words, utts)
        out: list[list[Word]] = [[] for _ in utts]
        k = 0
        for w in words:
            if w.start is not None:
                while k + 1 < len(utts) and w.start >= utts[k + 1].start - JOIN_SILENCE / 2:
                    k += 1
            out[k].append(w)
        return out

    def _unlag(self, words: list[Word], utts: list[Utterance]) -> None:
        """Shift DTW word times back by their lag behind the audio (0.1-0.5 s depending on
        the model), or words at a speaker change land in the wrong part. The lag is the
        running median of (first word start - speech onset) over the session's utterances,
        as ``refine_word_times`` estimates it per file."""
        timed = [w for w in words if w.start is not None]
        if not timed:
            return
        onset = utts[0].start + self.config.endpoint.pad
        if utts[0].start > 0 and timed[0].start - onset < 1.0:
            self._lags.append(max(0.0, timed[0].start - onset))
        lag = float(np.median(self._lags)) if self._lags else 0.0
        floor = utts[0].start
        for w in timed:
            w.start = round(max(floor, w.start - lag), 3)
            w.end = round(max(w.start, (w.end if w.end is not None else w.start) - lag), 3)
            floor = w.start

    def _decode(self, utts: list[Utterance]) -> None:
        seg = self.engines.segmenter
        parts = [p for u in utts for p in (split_at_changes(seg, u) if seg is not None else [u])]
        lives = [self._assign(u) for u in parts]
        group: list[int] = []
        length = LEAD_IN
        for k, u in enumerate(parts):  # one whisper window per group
            if group and length + JOIN_SILENCE + u.duration > MAX_CHUNK_SECONDS:
                self._text([parts[i] for i in group], [lives[i] for i in group])
                group, length = [], LEAD_IN
            length += u.duration + (JOIN_SILENCE if group else 0.0)
            group.append(k)
        self._text([parts[i] for i in group], [lives[i] for i in group])

    def _text(self, parts: list[Utterance], lives: list[LiveUtterance]) -> None:
        for live, words in zip(lives, self._whisper(parts), strict=True):
            live.words = words
            live.text = _join(words, self.language)
            self._emit(live)

    def _partial(self, u: Utterance) -> None:
        self._partial_at = u.end
        with contextlib.suppress(Cancelled):
            words = self._whisper([u], final=False)[0]
            self._events.put(Partial(round(u.start, 3), round(u.end, 3), _join(words, self.language)))
        if self._cancel.is_set():
            raise Cancelled()


def utterance_embedding(embedder: SpeakerEmbedder, u: Utterance) -> np.ndarray | None:
    """One CAM++ embedding of the speech frames of ``u`` (None: under 0.5 s to embed)."""
    feats = fbank(u.samples)
    if len(feats) < MIN_EMBED_FRAMES:
        return None
    # fbank frame i is centred at 10 i + 12.5 ms; keep the frames in VAD speech
    frame_of = np.minimum(((np.arange(len(feats)) * 0.01 + 0.0125) / FRAME_SECONDS).astype(np.int64),
                          max(0, len(u.probs) - 1))
    mask = u.probs[frame_of] >= 0.5 if len(u.probs) else np.ones(len(feats), bool)
    if mask.sum() < MIN_EMBED_FRAMES:
        mask = np.ones(len(feats), bool) if len(feats) >= MIN_EMBED_FRAMES else mask
    if mask.sum() < MIN_EMBED_FRAMES:
        return None
    return embedder.embed_features(feats[mask]).astype(np.float32)


def _join(words: list[Word], language: str | None) -> str:
    sep = "" if language in NO_SPACE_LANGUAGES else " "
    return sep.join(w.text for w in words).strip()


def _level_message(level: int, behind: float, waiting: float) -> str:
    if level == 0:
        return "caught up"
    head = f"falling behind ({behind:.1f} s late, {waiting:.1f} s of speech waiting)"
    return head + {1: ": partial lines off",
                   2: ": partial lines off, several utterances per whisper chunk",
                   3: ": the oldest utterances are shown without text (the refined pass transcribes them)"}[level]
