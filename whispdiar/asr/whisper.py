"""Speech to text with whisper.cpp (pywhispercpp's low-level binding), with word times.

Why not hand whisper the whole file: its own segment/token clock is anchored to
30 s windows and drifts (on a call starting at 6.7 s it reported words from 0 s
in whole-second steps). Instead we

1. find speech with a VAD (or, without one, cut fixed blocks at quiet points),
2. pack speech regions into chunks of at most ~29 s (one whisper window each), joined
   by a short stretch of silence and filled to the brim (the encoder costs the same for
   a full window as for a half-empty one); whisper decodes each chunk in one pass
   (``single_segment``), and speech after its last closed segment goes back into the
   next chunk instead of costing a second encoder pass,
3. take word times from whisper.cpp's DTW over cross-attention alignment heads
   (``t_dtw``), which follows the audio, not the timestamp tokens, and
4. map packed times back to the recording, keeping every word inside speech.

This also keeps memory flat on long recordings (one chunk in memory at a time),
gives cancellation and progress points between chunks, and skips silence.
whisper_full releases the GIL, so a diarization thread runs meanwhile.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..audio.read import SAMPLE_RATE, info, load
from ..cancel import AnyEvent, Cancelled, EventLike
from ..errors import ModelError, UsageError
from ..records import Segment
from .chunks import Chunk, ChunkPlanner, energy_probabilities
from .ggml import WhisperHeader, read_header
from .vad import SileroVad, SpeechRegion, speech_regions
from .words import RawSegment, Token, chunk_segments, refine_word_times

log = logging.getLogger(__name__)

ProgressFn = Callable[[str, float, float], None]

CLOSE_WAIT = 2.0  # s close() waits for running decodes to stop (they abort within one decoder step)
MAX_BEAM = 8  # whisper.cpp's WHISPER_MAX_DECODERS: whisper_full refuses wider beams




# --------------------------------------------------------------------------- model file


def _aheads_preset(pw, header: WhisperHeader):  # noqa: ANN001 - binding enum
    """The alignment-head preset matching the model (these are OpenAI's per-model heads)."""
    presets = pw.whisper_alignment_heads_preset
    name = header.name.replace(".", "_").replace("-", "_").upper()
    preset = getattr(presets, f"WHISPER_AHEADS_{name}", None)
    # Unknown shapes: fall back to all heads of the top text layers (less sharp, still sane).
    return preset if preset is not None else presets.WHISPER_AHEADS_N_TOP_MOST


# ggml's AMX matrix kernels (compiled in by -march=native on CPUs with AMX: `make
# whisper-native` there) take these weight types, and whisper.cpp 1.8.5's crash in
# ggml_backend_amx_mul_mat (SIGSEGV at the first encoder step, 1 or 2 threads; measured
# on a Xeon with AMX: q4_0, q4_1, q4_k and q8_0 files crash, q5_0, q5_1 and f16 run).
_AMX_WEIGHTS = frozenset({"q4_0", "q4_1", "q8_0", "q4_k", "q5_k", "q6_k"})


def _check_weights_supported(pw, header: WhisperHeader, path: Path) -> None:  # noqa: ANN001 - binding
    """A clear error instead of a crash: this whisper.cpp build cannot run these weights."""
    if header.weights in _AMX_WEIGHTS and "AMX_INT8 = 1" in pw.whisper_print_system_info():
        raise ModelError(
            f"{path}: this whisper.cpp build uses AMX kernels, which crash on {header.weights} weights; "
            "use an f16 or q5_1 model (e.g. base-q5_1), or rebuild whisper.cpp without AMX "
            "(CMAKE_C_FLAGS/CMAKE_CXX_FLAGS=-mno-amx-tile -mno-amx-int8 -mno-amx-bf16)"
        )


_log_lock = threading.Lock()
_log_installed = False


def _quiet_whisper_logs() -> None:
    """Route whisper.cpp's C logging into Python logging (never stdout/stderr directly).

    The hook is process-wide by nature (whisper.cpp has one logger). It is removed at
    exit because a Python callback must not run while the interpreter shuts down.
    """
    global _log_installed  # the C library's logger is global; mirror that once
    import _pywhispercpp as pw

    with _log_lock:
        if _log_installed:
            return
        wlog = logging.getLogger("whispdiar.whispercpp")

        def forward(level: int, text: str) -> None:
            # ggml levels: 1 debug, 2 info, 3 warn, 4 error
            wlog.log(logging.WARNING if level == 3 else logging.DEBUG, "%s", text.rstrip())

        pw.whisper_log_set(forward)
        atexit.register(pw.whisper_log_set, None)
        _log_installed = True


# --------------------------------------------------------------------------- transcriber


@dataclass(slots=True)
class Transcript:
    segments: list[Segment]
    language: str | None
    duration: float
    speech: list[SpeechRegion] = field(default_factory=list)
    model: str = ""
    lag: float = 0.0  # seconds the DTW word times were shifted back (refine_word_times)
    translated: bool = False  # the text is English (``translate``); ``language`` is the spoken one


class Transcriber:
    """A loaded whisper.cpp model. Reuse one instance for many files (loading costs seconds)."""

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        threads: int = 2,
        vad: SileroVad | None = None,
        timing: str = "dtw",
        beam_size: int = 0,
        refine: bool = True,
        lanes: int = 2,
    ):
        """``timing``: "dtw" (default: alignment-head DTW word times), "tokens" (whisper's own
        token timestamps, less accurate), or "none" (no word times: segment level only).
        ``beam_size``: 0 or 1 decode greedily (the default), 2-8 with beam search of that
        width (slower; docs/benchmarks.md "2026-12-01: beam search").
        ``refine``: correct the DTW lag and snap word times onto VAD speech (needs ``vad``).
        ``lanes``: at most this many chunks decoded at once, each by its own whisper.cpp
        context (a second copy of the model, loaded when first needed), see ``transcribe``."""
        if timing not in ("dtw", "tokens", "none"):
            raise ValueError(f"timing must be dtw, tokens or none, not {timing!r}")
        check_beam_size(beam_size)
        import _pywhispercpp as pw

        self._pw = pw
        self.path = Path(model_path)
        self.header = read_header(self.path)
        _check_weights_supported(pw, self.header, self.path)
        self.threads = max(1, threads)
        self.vad = vad
        self.timing = timing
        self.beam_size = beam_size
        self.refine = refine
        self.lanes = max(1, lanes)
        _quiet_whisper_logs()
        cp = pw.whisper_context_default_params()
        cp.use_gpu = False
        cp.flash_attn = False  # DTW needs the attention weights flash attention never materialises
        if timing == "dtw":
            cp.dtw_token_timestamps = True
            cp.dtw_aheads_preset = _aheads_preset(pw, self.header)
        self._cp = cp
        # A context belongs to the lane decoding on it until _release: close() frees only
        # idle ones, and a context still busy then is freed by its lane when it returns.
        self._lock = threading.Condition()  # guards the context lists and _closed
        self._contexts: list = []  # every loaded, not yet freed context
        self._idle: list = []  # contexts not decoding right now
        self._closed = False
        self._closing = threading.Event()  # running decodes abort at their next decoder step
        ctx = self._load_context()
        self.multilingual = bool(pw.whisper_is_multilingual(ctx))
        self._eot = pw.whisper_token_eot(ctx)
        self._beg = pw.whisper_token_beg(ctx)

    @property
    def name(self) -> str:
        """``base``, ``tiny.en``, ``base-q8_0``: the model and, when quantized, its weights."""
        return self.header.label

    def close(self, wait: float = CLOSE_WAIT) -> None:
        """Stop running decodes (they abort at their next decoder step) and free the
        contexts. Waits up to ``wait`` seconds for busy contexts; one still busy then is
        freed by its lane when whisper_full returns, never under it."""
        lock = getattr(self, "_lock", None)
        if lock is None:
            return  # __init__ failed before any context existed
        self._closing.set()
        deadline = time.monotonic() + max(0.0, wait)
        with lock:
            self._closed = True
            while len(self._idle) < len(self._contexts) and (left := deadline - time.monotonic()) > 0:
                lock.wait(left)
            idle, self._idle = self._idle, []
            self._contexts = [c for c in self._contexts if not any(c is i for i in idle)]
        for ctx in idle:
            self._pw.whisper_free(ctx)

    def _load_context(self):  # noqa: ANN202 - binding handle
        try:
            ctx = self._pw.whisper_init_from_file_with_params(str(self.path), self._cp)
        except Exception as e:  # the binding raises RuntimeError/ValueError variants
            raise ModelError(f"{self.path}: whisper.cpp could not load it ({e})") from None
        if ctx is None:
            raise ModelError(f"{self.path}: whisper.cpp could not load it (corrupt or unsupported file)")
        with self._lock:
            closed = self._closed
            if not closed:
                self._contexts.append(ctx)
                self._idle.append(ctx)
        if closed:  # closed while this copy loaded: nobody else has it
            self._pw.whisper_free(ctx)
            raise Cancelled("transcriber closed")
        return ctx

    def _acquire(self):  # noqa: ANN202
        """An idle context, loading another copy of the model if none is idle."""
        while True:
            with self._lock:
                if self._closed:
                    raise Cancelled("transcriber closed")
                if self._idle:
                    return self._idle.pop()
            self._load_context()

    def _release(self, ctx) -> None:  # noqa: ANN001
        with self._lock:
            free = self._closed
            if free:
                self._contexts = [c for c in self._contexts if c is not ctx]
            else:
                self._idle.append(ctx)
            self._lock.notify_all()
        if free:  # close() came while this lane decoded: the lane frees what it held
            self._pw.whisper_free(ctx)

    def __enter__(self) -> Transcriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown: the binding may be gone
            self.close(wait=0.0)

    # -- public --------------------------------------------------------------------

    def check_language(self, language: str | None) -> str | None:
        """Normalise a language option: None/"auto" → None (detect); else a whisper code."""
        if language is None or language.lower() in ("", "auto"):
            return None if self.multilingual else "en"
        lid = self._pw.whisper_lang_id(language.lower())
        if lid < 0:
            raise UsageError(f"unknown language {language!r} (use a code such as en, de, fr, or auto)")
        code = self._pw.whisper_lang_str(lid)
        if not self.multilingual and code != "en":
            raise UsageError(f"model {self.name} is English-only; cannot transcribe language {code!r}")
        return code

    def detect_language(self, signal: np.ndarray, threads: int | None = None) -> tuple[str | None, float]:
        """(language, probability) whisper hears in the first 30 s of ``signal`` (16 kHz):
        one encoder pass, no decoding. ``(None, 0.0)`` for an English-only model or silence."""
        if not self.multilingual or not len(signal):
            return None, 0.0
        pw = self._pw
        ctx = self._acquire()
        try:
            n = max(1, threads or self.threads)
            if pw.whisper_pcm_to_mel(ctx, np.ascontiguousarray(signal, np.float32), len(signal), n) != 0:
                return None, 0.0
            probs = np.zeros(pw.whisper_lang_max_id() + 1, np.float32)
            lid = pw.whisper_lang_auto_detect(ctx, 0, n, probs)
            if lid < 0:
                return None, 0.0
            return pw.whisper_lang_str(lid), float(probs[lid])
        finally:
            self._release(ctx)

    def check_task(self, translate: bool) -> None:
        """``translate`` needs a multilingual model: an English-only one cannot translate."""
        if translate and not self.multilingual:
            raise UsageError(_cannot_translate(self.name))

    def speech_regions(self, path: str | os.PathLike[str], duration: float,
                       cancel: threading.Event | None = None,
                       channel: int | None = None) -> tuple[list[SpeechRegion], np.ndarray]:
        """Speech regions (VAD) and the frame probabilities used to cut long ones."""
        if self.vad is not None:
            probs = self.vad.file_probabilities(path, cancel=AnyEvent(self._closing, cancel), channel=channel)
            return speech_regions(probs, threshold=0.4, pad=0.2, duration=duration), probs
        # No VAD: treat everything as speech, cut into blocks at quiet points.
        return [SpeechRegion(0.0, duration)], energy_probabilities(path, channel)

    def transcribe(
        self,
        path: str | os.PathLike[str],
        language: str | None = None,
        progress: ProgressFn | None = None,
        cancel: threading.Event | None = None,
        threads: Callable[[], int] | None = None,
        regions: Sequence[SpeechRegion] | None = None,
        probs: np.ndarray | None = None,
        prompt: str | None = None,
        translate: bool = False,
        channel: int | None = None,
    ) -> Transcript:
        """Transcribe a file chunk by chunk. ``threads`` is asked before each chunk (the
        pipeline hands whisper the diarizer's core once diarization is done). ``channel``
        picks one channel of a multichannel file instead of the mix.

        ``prompt``: text whisper reads as if it came before every chunk (names, jargon,
        spelling, style). Each chunk is decoded without the previous one's text
        (``no_context``), so the prompt goes to every chunk, not only the first.
        ``translate``: English text whatever the spoken language (multilingual models
        only); ``Transcript.language`` stays the spoken language.
        """
        lang = self.check_language(language)
        self.check_task(translate)
        prompt = clean_prompt(prompt)
        duration = info(path).duration
        if regions is None:
            regions, probs = self.speech_regions(path, duration, channel=channel)
        planner = ChunkPlanner(regions, probs, delay=self.lanes)
        total = planner.speech
        done = 0.0
        if progress:
            progress("transcribe", 0.0, total)
        segments: list[Segment] = []
        stop = threading.Event()  # set on the way out: running decodes abort at their next encoder pass

        def stopped() -> bool:
            return stop.is_set() or self._closing.is_set() or (cancel is not None and cancel.is_set())
        running: dict[Future, Chunk] = {}
        completed: set[int] = set()  # chunk indices
        with ThreadPoolExecutor(self.lanes, thread_name_prefix="whisper") as pool:
            try:
                while True:
                    if stopped():
                        raise Cancelled()
                    allowed = max(1, threads() if threads is not None else self.threads)
                    # Until the language is known, one chunk at a time (the first one detects it).
                    lanes = 1 if lang is None else min(self.lanes, allowed)
                    while len(running) < lanes and planner.may_plan(completed) and (chunk := planner.next()):
                        signal = self._chunk_signal(path, chunk, channel)
                        # the only chunk left (short files, the end of long ones) gets every thread
                        alone = not running and not planner.pending
                        n_threads = allowed if alone else max(1, allowed // lanes)
                        fut = pool.submit(self._run, signal, lang, n_threads, stopped, prompt, translate)
                        running[fut] = chunk
                    if not running:
                        break
                    # A lane is free but had no thread (the diarizer held the core): look again
                    # soon, so the core it hands back is used now, not after the running chunk
                    # (~3 s of one idle core on a 10-minute meeting, docs/benchmarks.md).
                    may_grow = threads is not None and len(running) < self.lanes and planner.pending
                    finished, _ = wait(running, timeout=0.2 if may_grow else None, return_when=FIRST_COMPLETED)
                    for fut in sorted(finished, key=lambda f: running[f].pieces[0].start):
                        chunk = running.pop(fut)
                        raw, detected = fut.result()
                        completed.add(chunk.index)
                        end = chunk.length
                        closed = [r for r in raw if r.t1 is not None]
                        if closed and closed[-1].t1 < chunk.length - 1.0:
                            given = planner.give_back(chunk, closed[-1].t1)
                            if given:
                                raw, end = closed, closed[-1].t1  # the open tail is decoded again later
                                done -= given
                        if lang is None and detected is not None and raw:
                            lang = detected  # detected once on the first chunk with speech, then kept
                        segments.extend(chunk_segments(raw, chunk, end, self.timing))
                        done += chunk.speech
                        if progress:
                            progress("transcribe", done, total)
            finally:
                stop.set()  # on an error or cancel: do not wait for other lanes' full decodes
        segments.sort(key=lambda seg: seg.start)
        lag = 0.0
        if self.refine and self.timing == "dtw" and self.vad is not None and probs is not None:
            lag = refine_word_times(segments, probs)
        return Transcript(segments, lang, duration, list(regions), self.name, lag, translate)

    def decode(
        self, signal: np.ndarray, language: str | None = None, threads: int | None = None,
        cancel: EventLike | None = None, prompt: str | None = None, translate: bool = False,
        fallback: bool = True,
    ) -> tuple[list[RawSegment], str | None]:
        """Decode one chunk already in memory (16 kHz, at most ~29 s; ``chunk_segments``
        maps its output to the recording): (raw segments, detected language or None).
        For callers that cut their own chunks (live input). ``fallback=False``: one
        temperature, no re-decoding at higher ones (a bounded cost). Raises Cancelled when
        ``cancel`` is set or the transcriber is closed; safe to call from several threads
        (each decode takes its own context)."""
        lang = self.check_language(language)
        self.check_task(translate)

        def stopped() -> bool:
            return self._closing.is_set() or (cancel is not None and cancel.is_set())

        return self._run(np.asarray(signal, np.float32), lang, max(1, threads or self.threads), stopped,
                         clean_prompt(prompt), translate, fallback)

    # -- internals -----------------------------------------------------------------

    @staticmethod
    def _chunk_signal(path: str | os.PathLike[str], chunk: Chunk, channel: int | None = None) -> np.ndarray:
        out = np.zeros(int(math.ceil(chunk.length * SAMPLE_RATE)) + 1, np.float32)
        for p in chunk.pieces:
            x = load(path, start=p.start, end=p.end, channel=channel)
            i = int(round(p.packed * SAMPLE_RATE))
            x = x[: len(out) - i]
            out[i:i + len(x)] = x
        return out

    def _params(self, language: str | None, n_threads: int, prompt: str | None = None, translate: bool = False):
        pw = self._pw
        strategy = pw.WHISPER_SAMPLING_BEAM_SEARCH if self.beam_size > 1 else pw.WHISPER_SAMPLING_GREEDY
        p = pw.whisper_full_default_params(strategy)
        if self.beam_size > 1:
            p.beam_search = {"beam_size": self.beam_size, "patience": -1.0}
        p.n_threads = n_threads
        p.print_progress = False  # whisper.cpp would print to stdout/stderr
        p.print_realtime = False
        p.print_timestamps = False
        p.print_special = False
        p.no_context = True  # chunks are independent: no hallucinated carry-over
        p.single_segment = True  # one pass per chunk; an unfinished tail is given back (ChunkPlanner)
        p.token_timestamps = self.timing == "tokens"
        p.suppress_nst = True  # no "[MUSIC]"-style non-speech tokens in a transcript
        p.language = language if language is not None else "auto"
        p.translate = translate
        if prompt is not None:
            # whisper.cpp tokenizes it and puts it before the chunk as previous text (it
            # keeps the last n_text_ctx/2 = 224 tokens); no_context only drops the text of
            # earlier calls, so every chunk gets the prompt.
            p.initial_prompt = prompt
        return p

    def _run(
        self, signal: np.ndarray, language: str | None, n_threads: int, stopped: Callable[[], bool],
        prompt: str | None = None, translate: bool = False, fallback: bool = True,
    ) -> tuple[list[RawSegment], str | None]:
        """Decode one chunk on an idle context (called in a worker thread)."""
        pw = self._pw
        ctx = self._acquire()
        try:
            params = self._params(language, n_threads, prompt, translate)
            if not fallback:
                params.temperature_inc = 0.0
            # Asked before each encoder pass (False stops it) and after the encoder and
            # every decoder step (True aborts): a cancelled chunk stops within one step
            # (~10-50 ms) instead of running to its end (seconds). Each call takes the GIL
            # once: ~130 calls for 30 s of speech (counted with tiny.en and base).
            pw.assign_encoder_begin_callback(params, lambda *_: not stopped())
            pw.assign_abort_callback(params, stopped)
            status = pw.whisper_full(ctx, params, signal, len(signal))
            if stopped():
                raise Cancelled()
            if status != 0:
                raise ModelError(f"{self.path}: whisper.cpp failed to decode a chunk (whisper_full returned {status})")
            detected = None
            if language is None:
                lid = pw.whisper_full_lang_id(ctx)
                detected = pw.whisper_lang_str(lid) if lid >= 0 else None
            return self._collect(ctx), detected
        finally:
            self._release(ctx)

    def _collect(self, ctx) -> list[RawSegment]:  # noqa: ANN001 - binding handle
        """The last whisper_full's output cut into segments at its timestamp tokens.

        whisper runs with ``single_segment`` (so it never makes a second encoder pass over a
        chunk's last seconds); the timestamp tokens it still predicts mark the segments. A
        segment with no closing timestamp is left open (``t1`` None).
        """
        pw = self._pw
        out: list[RawSegment] = []
        t_open: float | None = None
        toks: list[Token] = []

        def close(t1: float | None) -> None:
            text = b"".join(t.text for t in toks).decode("utf-8", errors="replace").strip()
            if text:
                out.append(RawSegment(t_open if t_open is not None else 0.0, t1, text, list(toks)))
            toks.clear()

        for i in range(pw.whisper_full_n_segments(ctx)):
            for j in range(pw.whisper_full_n_tokens(ctx, i)):
                d = pw.whisper_full_get_token_data(ctx, i, j)
                if d.id >= self._beg:  # a timestamp token: closes the open segment or opens one
                    t = (d.id - self._beg) * 0.02
                    if toks:
                        close(t)
                    t_open = t
                    continue
                if d.id >= self._eot:
                    continue  # other special tokens
                toks.append(
                    Token(
                        pw.whisper_token_to_bytes(ctx, d.id),
                        float(d.p),
                        d.t_dtw / 100.0 if d.t_dtw >= 0 else None,
                        d.t0 / 100.0,
                        d.t1 / 100.0,
                    )
                )
        if toks:
            close(None)
        return out


def _cannot_translate(model: str) -> str:
    return f"model {model} is English-only and cannot translate; use a multilingual model such as base"


def check_translate(model_path: str | os.PathLike[str]) -> None:
    """Refuse ``translate`` with an English-only model file (reads only its header)."""
    header = read_header(model_path)
    if not header.multilingual:
        raise UsageError(_cannot_translate(header.name))


def check_beam_size(beam_size: int) -> None:
    """0 and 1 mean greedy decoding; wider beams up to whisper.cpp's limit of 8 decoders."""
    if isinstance(beam_size, bool) or not isinstance(beam_size, int) or not 0 <= beam_size <= MAX_BEAM:
        raise UsageError(f"beam size must be a whole number from 1 to {MAX_BEAM} (1 = greedy), not {beam_size!r}")


def clean_prompt(prompt: str | None) -> str | None:
    """The prompt as whisper gets it: whitespace runs as one space; empty means none."""
    if prompt is None:
        return None
    text = " ".join(prompt.split())
    return text or None


