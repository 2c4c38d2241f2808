"""The whole job for one recording: transcribe and diarize side by side, align, name.

``Pipeline`` holds the loaded engines, so a batch loads each model once::

    with Pipeline(whisper_model=Path("ggml-base.bin"), segmentation_model=..., embedding_model=...) as p:
        for f in files:
            result = p.run(f)

``transcribe(path, ...)`` is the one-call convenience over it.

Threads: whisper.cpp and onnxruntime both release the GIL, so diarization runs in a
worker thread while whisper decodes in the caller's thread. The cores are split
between them (whisper gets the larger half: it is the slower engine). With
``rebalance=True`` (the default) whisper, which works chunk by chunk, takes the
diarizer's cores back once diarization is finished: with 2 cores it then decodes two
chunks at once, one core each (``Transcriber(lanes=2)``: a second copy of the model,
~0.4 GB for base, for more throughput than one chunk on two threads: docs/benchmarks.md).
Files of at most ``SHORT_SECONDS`` (one or two whisper chunks) are diarized first instead:
side by side, whisper would decode them on one core while the other idles.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .alignment import AlignConfig, align
from .asr.vad import SileroVad
from .asr.whisper import Transcriber, Transcript, check_beam_size
from .audio import read as audio
from .cancel import AnyEvent
from .cancel import Cancelled as _StageCancelled
from .errors import WhispdiarError
from .records import Result, Timings
from .spans import WHOLE, Span, clip_span, make_span, shift_result, span_to_tempfile
from .speakers.naming import speakers_of
from .speakers.source import fingerprint

if TYPE_CHECKING:
    from .diarization.diarizer import Diarizer

log = logging.getLogger(__name__)

ProgressFn = Callable[[str, float, float], None]
# Recognises enrolled speakers: label -> (name, confidence) for the labels it knows.
Namer = Callable[["Diarization"], Mapping[str, tuple[str, float]]]  # noqa: F821 - lazy import


class Cancelled(_StageCancelled):
    """The run was cancelled through the cancel event, by a failing side of the run, or
    because the pipeline was closed (a ``whispdiar.Cancelled``, like every stage's)."""


OWN_NAMER: object = object()  # run(namer=...)'s default: the pipeline's own ``namer``
CLOSE_WAIT = 2.0  # s close() waits for running runs to stop (they do within a decoder step or a batch)
SHORT_SECONDS = 60.0  # files up to this long are diarized first, then transcribed


def split_threads(total: int, diarize: bool) -> tuple[int, int]:
    """(whisper threads, diarizer threads) for ``total`` cores.

    Whisper is the slower engine (base: RTF ~0.1 on one core vs diarization ~0.05), so it
    gets the larger half; with 2 cores each engine gets one.
    """
    total = max(1, total)
    if not diarize:
        return total, 0
    diar = max(1, total // 2) if total > 1 else 1
    return max(1, total - diar), diar


@dataclass(slots=True)
class _DiarOutcome:
    result: object | None = None  # Diarization
    error: BaseException | None = None
    seconds: float | None = None


class Pipeline:
    """Loaded engines for transcription (+ diarization); ``run(path)`` per recording."""

    def __init__(
        self,
        whisper_model: str | os.PathLike[str],
        segmentation_model: str | os.PathLike[str] | None = None,
        embedding_model: str | os.PathLike[str] | None = None,
        vad_model: str | os.PathLike[str] | None = None,
        *,
        threads: int | None = None,
        diarize: bool = True,
        namer: Namer | None = None,
        align_config: AlignConfig | None = None,
        timing: str = "dtw",
        beam_size: int = 0,
        rebalance: bool = True,
        lanes: int = 2,
    ):
        """Explicit model files. ``diarize=False`` loads no diarization models (then the
        segmentation/embedding paths may be None). ``vad_model`` (Silero ONNX) is optional
        but recommended: without it whisper gets fixed blocks cut at quiet points."""
        self.threads = threads or os.cpu_count() or 1
        # Give whisper the diarizer's cores once it is done. (It was off by default while
        # whisper used them as extra threads of one decode: on a busy machine ggml's spinning
        # threads made that slower; two single-thread lanes do not spin-wait on each other.)
        self.rebalance = rebalance
        self.diarize = diarize and segmentation_model is not None and embedding_model is not None
        if diarize and not self.diarize:
            raise ValueError("diarization needs segmentation_model and embedding_model (or diarize=False)")
        self.asr_threads, self.diar_threads = split_threads(self.threads, self.diarize)
        self.namer = namer
        self.align_config = align_config or AlignConfig()
        self.models: dict[str, str] = {}
        self.vad = SileroVad(vad_model, threads=1) if vad_model is not None else None
        if vad_model is None:
            log.warning("no VAD model: whisper gets fixed blocks; word times are less accurate")
        else:
            self.models["vad"] = Path(vad_model).name
        # lanes=1 saves a second copy of the whisper model (~0.4 GB for base), ~10 % slower.
        self.transcriber = Transcriber(whisper_model, threads=self.asr_threads, vad=self.vad,
                                       timing=timing, beam_size=beam_size, lanes=lanes)
        self.models["whisper"] = self.transcriber.name
        self._closing = threading.Event()  # set by close(): every run stops
        self._runs = threading.Condition()  # guards _active
        self._active = 0  # runs in progress
        self._diarizer: Future | None = None
        self.embedding_model_id: str | None = None
        if self.diarize:
            from .diarization.diarizer import DiarizationConfig, Diarizer
            from .diarization.embedding import model_fingerprint
            from .errors import ModelError

            for p in (segmentation_model, embedding_model):
                if not Path(p).is_file():
                    raise ModelError(f"{p}: model file not found")
            # The two ONNX sessions take ~0.7 s of one core to load: in a thread, that
            # overlaps with whisper's load and the VAD pass instead of delaying them.
            loader = ThreadPoolExecutor(1, thread_name_prefix="whispdiar-load")
            # Segmentation batches of 4 instead of `diarize`'s 6: onnxruntime's arena keeps
            # its peak until the process ends, and here it adds to whisper's two model
            # copies (the 4-hour run peaks near 1.5 GB); the diarizer has one core anyway.
            config = DiarizationConfig(batch_size=4)
            self.embedding_model_id = model_fingerprint(embedding_model)  # voiceprints need it up front
            self._diarizer = loader.submit(Diarizer, segmentation_model, embedding_model,
                                           threads=self.diar_threads, config=config,
                                           embedding_model_id=self.embedding_model_id)
            loader.shutdown(wait=False)
            self.models["segmentation"] = Path(segmentation_model).name
            self.models["embedding"] = Path(embedding_model).name

    @property
    def diarizer(self) -> Diarizer | None:
        """The loaded diarizer (waits for its background load; raises its load error)."""
        return None if self._diarizer is None else self._diarizer.result()

    @classmethod
    def from_names(
        cls,
        whisper: str = "base",
        segmentation: str = "segmentation-3.0",
        embedding: str = "campplus",
        vad: str | None = "silero-vad",
        *,
        diarize: bool = True,
        **kwargs,
    ) -> Pipeline:
        """Resolve model names (or paths) through whispdiar.models, then load them."""
        from . import models
        from .errors import ModelError

        vad_path = None
        if vad is not None:
            try:
                vad_path = models.resolve(vad)
            except ModelError as e:
                log.warning("%s; continuing without VAD", e)
        return cls(
            models.resolve(whisper),
            models.resolve(segmentation) if diarize else None,
            models.resolve(embedding) if diarize else None,
            vad_path,
            diarize=diarize,
            **kwargs,
        )

    def close(self, wait: float = CLOSE_WAIT) -> None:
        """Stop running runs (from any thread; they raise Cancelled), wait up to ``wait``
        seconds for them, then free the engines. Native resources still in use after that
        are freed by the thread using them when it stops, never under it."""
        self._closing.set()
        deadline = time.monotonic() + max(0.0, wait)
        with self._runs:
            while self._active and (left := deadline - time.monotonic()) > 0:
                self._runs.wait(left)
        self.transcriber.close(wait=max(0.0, deadline - time.monotonic()))
        if self._diarizer is not None:
            # still loading: close it when it is loaded (its loader thread is not waited for)
            self._diarizer.add_done_callback(_close_loaded)

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        # Ctrl-C / SIGTERM (not Exception subclasses): the process is about to leave, so
        # do not wait for the engines to stop; they keep what they use.
        interrupted = exc_type is not None and not issubclass(exc_type, Exception)
        self.close(wait=0.0 if interrupted else CLOSE_WAIT)

    # ------------------------------------------------------------------ run

    def run(
        self,
        path: str | os.PathLike[str],
        *,
        language: str | None = None,
        diarize: bool | None = None,
        num_speakers: int | None = None,
        min_speakers: int | None = None,
        max_speakers: int | None = None,
        progress: ProgressFn | None = None,
        cancel: threading.Event | None = None,
        relabel: Callable | None = None,
        display_name: str | None = None,
        prompt: str | None = None,
        translate: bool = False,
        start: float | None = None,
        end: float | None = None,
        channel: int | None = None,
        namer: Namer | None | object = OWN_NAMER,
    ) -> Result:
        """Transcribe (and diarize) one recording into a Result.

        ``channel`` uses one channel (0-based) of a multichannel file instead of the mix,
        for both whisper and the diarizer (read from the file itself: no decoded copy).

        ``progress(stage, done, total)`` is called from both threads with stage
        "vad", "transcribe" (seconds of speech) or "diarize" (seconds of audio).
        ``cancel``: set it to stop between chunks; raises Cancelled.
        ``relabel`` is passed to the diarizer (voiceprint-driven cluster merging).
        ``namer``: names the speakers of this run instead of ``self.namer`` (None: no
        names), so runs with different naming can share one pipeline (the HTTP server).
        ``prompt``, ``translate``: see ``Transcriber.transcribe``.
        ``start``/``end`` (seconds): work on that part only; the result's times stay in
        the file's time (an ``end`` past the file's end means its end).
        """
        span = make_span(start, end)  # bad spans fail before any work
        with self._runs:
            if self._closing.is_set():
                raise Cancelled("pipeline closed")
            self._active += 1
        try:
            return self._run(path, language, diarize, num_speakers, min_speakers, max_speakers, progress, cancel,
                             relabel, display_name, channel, prompt=prompt, translate=translate, span=span,
                             namer=self.namer if namer is OWN_NAMER else namer)
        finally:
            with self._runs:
                self._active -= 1
                self._runs.notify_all()

    def _run(self, path: str | os.PathLike[str], language: str | None, diarize: bool | None,
             num_speakers: int | None, min_speakers: int | None, max_speakers: int | None,
             progress: ProgressFn | None, cancel: threading.Event | None, relabel: Callable | None,
             display_name: str | None, channel: int | None = None, *, prompt: str | None = None,
             translate: bool = False, span: Span = WHOLE, namer: Namer | None = None) -> Result:
        t_start = time.perf_counter()
        src = Path(path)
        self.transcriber.check_language(language)  # bad options fail before any work
        self.transcriber.check_task(translate)
        channel_picked = channel  # the file's channel the result comes from (recorded in its source)
        part = None  # the span's own file
        try:
            work = src  # any format: audio.py decodes it in-process, no temporary copy
            duration = file_duration = audio.info(work).duration
            if not span.whole:
                span = clip_span(span, file_duration, display_name or str(path))
                part = work = span_to_tempfile(work, span, AnyEvent(threading.Event(), cancel, self._closing),
                                               channel=channel)
                channel = None  # the span's copy holds the picked channel only
                duration = audio.info(work).duration
            do_diar = self.diarize if diarize is None else (diarize and self.diarize)
            if diarize and not self.diarize:
                raise ValueError("this pipeline was built without diarization models")
            stop = threading.Event()
            either = AnyEvent(stop, cancel, self._closing)
            outcome = _DiarOutcome()
            worker = None
            if do_diar:
                worker = threading.Thread(
                    target=self._diarize_worker,
                    args=(work, outcome, either, progress, num_speakers, min_speakers, max_speakers, relabel, channel),
                    name="whispdiar-diarize", daemon=True,
                )
                worker.start()
                if duration <= SHORT_SECONDS and self.rebalance:
                    # A file of one or two whisper chunks: side by side, whisper would decode
                    # them on one core while the diarizer needs the other for a second or
                    # two; diarizing first lets whisper use every core.
                    worker.join()
            t_asr = time.perf_counter()
            try:
                transcript = self._transcribe(work, duration, language, progress, either, worker, channel,
                                              prompt=prompt, translate=translate)
            except BaseException:
                stop.set()  # tell the diarizer to stop too, then surface the first cause
                if worker is not None:
                    worker.join()
                if outcome.error is not None and not isinstance(outcome.error, _StageCancelled):
                    raise outcome.error from None  # the diarizer failed first and stopped whisper
                raise
            finally:
                asr_seconds = time.perf_counter() - t_asr
            if worker is not None:
                worker.join()
            if outcome.error is not None:
                raise outcome.error
        except _StageCancelled as e:
            raise Cancelled(str(e) or "cancelled") from None
        finally:
            if part is not None:
                part.unlink(missing_ok=True)
        result = self._assemble(display_name or str(path), transcript, outcome.result if do_diar else None, namer)
        shift_result(result, span.start)  # back to the file's time
        result.duration = file_duration
        try:
            result.source = fingerprint(src, channel_picked)  # what `enroll --from` checks the audio against
        except WhispdiarError:
            result.source = None  # gone since it was read: the result is still good
        result.timings = Timings(round(asr_seconds, 3), outcome.seconds if do_diar else None,
                                 round(time.perf_counter() - t_start, 3))
        return result

    def _transcribe(self, work: Path, duration: float, language: str | None, progress: ProgressFn | None,
                    either: AnyEvent, worker: threading.Thread | None, channel: int | None = None, *,
                    prompt: str | None = None, translate: bool = False) -> Transcript:
        if progress:
            progress("vad", 0.0, duration)
        regions, probs = self.transcriber.speech_regions(work, duration, cancel=either, channel=channel)
        if progress:
            progress("vad", duration, duration)

        def threads() -> int:
            if worker is None:
                return self.threads  # no diarization this run: every core
            if self.rebalance and not worker.is_alive():
                return self.threads  # the diarizer is done: take its cores back
            return self.asr_threads

        return self.transcriber.transcribe(work, language=language, progress=progress, cancel=either,
                                           threads=threads, regions=regions, probs=probs, channel=channel,
                                           prompt=prompt, translate=translate)

    def _diarize_worker(self, work: Path, outcome: _DiarOutcome, cancel: AnyEvent, progress: ProgressFn | None,
                        num_speakers: int | None, min_speakers: int | None, max_speakers: int | None,
                        relabel: Callable | None, channel: int | None = None) -> None:
        t0 = time.perf_counter()
        try:
            outcome.result = self.diarizer(
                work, num_speakers=num_speakers, min_speakers=min_speakers, max_speakers=max_speakers,
                progress=(lambda d, t: progress("diarize", d, t)) if progress else None,
                cancel=cancel, relabel=relabel, channel=channel,
            )
        except BaseException as e:  # handed to the caller's thread
            outcome.error = e
            cancel.set()  # no point finishing the transcript
        finally:
            outcome.seconds = round(time.perf_counter() - t0, 3)

    def _assemble(self, name: str, transcript: Transcript, diar, namer: Namer | None) -> Result:  # noqa: ANN001
        text_language = "en" if transcript.translated else transcript.language  # how words are joined
        if diar is None:
            segments = align(transcript.segments, [], language=text_language)
            return Result(name, transcript.duration, transcript.language, segments, [], [], dict(self.models))
        segments = align(transcript.segments, diar.exclusive, self.align_config, overlapped=diar.turns,
                         language=text_language)
        speakers = speakers_of(diar, namer, name, segments)
        return Result(name, transcript.duration, transcript.language, segments, speakers, list(diar.turns),
                      dict(self.models))


def _close_loaded(loading: Future) -> None:
    if loading.exception() is None:
        loading.result().close()


def transcribe(
    path: str | os.PathLike[str],
    *,
    model: str = "base",
    diarize: bool = True,
    language: str | None = None,
    num_speakers: int | None = None,
    min_speakers: int | None = None,
    max_speakers: int | None = None,
    threads: int | None = None,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
    prompt: str | None = None,
    translate: bool = False,
    beam_size: int = 1,
    start: float | None = None,
    end: float | None = None,
    channel: int | None = None,
    speakers_db: str | os.PathLike[str] | None = None,
) -> Result:
    """Transcribe one file with speakers: loads the models, runs, frees them.

    ``speakers_db``: a voiceprint database (``whispdiar enroll``'s; e.g.
    ``whispdiar.paths.speakers_db_path()``) whose enrolled voices name the speakers and
    steer the clustering, as ``whispdiar transcribe`` does; None: anonymous speakers.

    ``prompt``: names, jargon, spelling for whisper (given to every chunk); ``translate``:
    English text from any language (multilingual models); ``beam_size``: 1 greedy, 2-8 beam
    search; ``start``/``end``: seconds of the file to work on (times stay the file's).
    For many files build one ``Pipeline`` and call ``run`` per file instead.
    """
    check_beam_size(beam_size)  # before loading anything
    make_span(start, end)
    with Pipeline.from_names(whisper=model, diarize=diarize, threads=threads, beam_size=beam_size) as p:
        namer = None
        if speakers_db is not None and p.diarizer is not None:
            from .batch.job import make_namer
            from .speakers.store import embedding_model_id

            namer = make_namer(embedding_model_id(p.diarizer), Path(speakers_db), remember=False)
        return p.run(path, language=language, num_speakers=num_speakers, min_speakers=min_speakers,
                     max_speakers=max_speakers, progress=progress, cancel=cancel, channel=channel,
                     prompt=prompt, translate=translate, start=start, end=end, namer=namer,
                     relabel=namer.relabel if namer is not None else None)
