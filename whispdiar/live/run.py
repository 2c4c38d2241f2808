"""The ``whispdiar live`` command's flow: capture, live lines, instant tier, refined tier.

Signals: the first Ctrl-C (or SIGTERM) ends the recording as the end of the input would
(the last utterance is cut, waiting ones decoded, both tiers written); a second one
stops what is running: before the instant outputs it drops the waiting utterances,
during the refinement it stops it and keeps the instant outputs (exit 130/143).
"""

from __future__ import annotations

import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from .. import models as model_registry
from .. import signals
from ..errors import UsageError
from ..outputs.destination import OutputPlan, plan_outputs, write_outputs
from ..outputs.writers import FORMATS, render
from ..outputs.writers import clock as writers_clock
from ..progress import ProgressReporter
from .events import Degraded, Final, Finished, Partial, SpeakerUpdate
from .finalize import align_refined, build_result, changed, recluster
from .session import LiveConfig, LiveEngines, LiveSession, whisper_threads
from .sources import Capture, Recorder, open_source


@dataclass(slots=True)
class LiveOptions:
    input: str | None
    raw_format: str | None = None
    rate: int = 16000
    channels: int = 1
    device: str | None = None
    model: str = "base"
    language: str | None = None
    prompt: str | None = None
    threads: int = 2
    partial: bool = False
    formats: list[str] = field(default_factory=list)
    output_dir: Path | None = None
    output: Path | None = None
    save: Path | None = None
    refine: bool = True
    speakers_db: Path | None = None
    threshold: float | None = None
    names: bool = True
    words: bool = True
    quiet: bool = False


def clock(t: float) -> str:
    """mm:ss.s (h:mm:ss.s past an hour), the live line's time."""
    return writers_clock(t, digits=1)


def _plan(opts: LiveOptions, stem: str) -> OutputPlan | None:
    if not opts.formats and opts.output_dir is None and opts.output is None:
        return None
    if opts.output_dir is None and opts.output is None:
        raise UsageError("-f writes files and needs --output-dir DIR or -o FILE (the live lines go to stdout)")
    return plan_outputs([stem], opts.formats or ["txt"], tuple(FORMATS), opts.output_dir, opts.output)


class _Printer:
    """Live lines on stdout; on a terminal with --partial, the utterance in progress too."""

    def __init__(self, out: TextIO, partial: bool):
        self.out = out
        self.partial = partial and out.isatty()
        self._open = False

    def line(self, text: str) -> None:
        self._clear()
        self.out.write(text + "\n")
        self.out.flush()

    def progress(self, text: str) -> None:
        if self.partial:
            self.out.write("\r\x1b[2K" + text[:200])
            self.out.flush()
            self._open = True

    def _clear(self) -> None:
        if self._open:
            self.out.write("\r\x1b[2K")
            self._open = False


def _voiceprints(opts: LiveOptions, model_id: str, rep: ProgressReporter) -> dict[str, Any]:
    if not opts.names:
        return {}
    from ..paths import speakers_db_path
    from ..speakers.store import VoiceprintNamer

    kwargs = {} if opts.threshold is None else {"threshold": opts.threshold}
    namer = VoiceprintNamer(opts.speakers_db or speakers_db_path(), model_id, warn=rep.log, remember=False, **kwargs)
    return dict(namer.voiceprints)


def run_live(opts: LiveOptions, out: TextIO = sys.stdout) -> int:
    """Run the command; returns the exit code (130/143 leave through ``signals.exit_for``)."""
    from ..diarization.embedding import model_fingerprint
    from ..speakers.naming import DEFAULT_THRESHOLD

    threshold = DEFAULT_THRESHOLD if opts.threshold is None else opts.threshold
    whisper = model_registry.resolve(opts.model, role="asr")
    seg, emb = model_registry.resolve("segmentation-3.0"), model_registry.resolve("campplus")
    vad = model_registry.resolve("silero-vad")
    stem = opts.save.stem if opts.save is not None else "live"
    plan = _plan(opts, stem)
    rep = ProgressReporter(enabled=not opts.quiet)
    prints = _voiceprints(opts, model_fingerprint(emb), rep)
    source = open_source(opts.input or "", opts.raw_format, opts.rate, opts.channels, opts.device)
    temp: Path | None = None
    if opts.save is None:
        fd, name = tempfile.mkstemp(prefix="whispdiar-live-", suffix=".wav")
        import os

        os.close(fd)
        temp = Path(name)
    saved = opts.save or temp
    assert saved is not None
    try:
        recorder = Recorder(saved, source.layout)
        engines = LiveEngines.load(whisper, emb, vad, seg, threads=opts.threads, voiceprints=prints)
        config = LiveConfig(language=opts.language, prompt=opts.prompt, partials=opts.partial,
                            threads=whisper_threads(opts.threads), name_threshold=threshold)
        session = LiveSession(engines, config, own_engines=True)
        capture_error: list[BaseException | None] = []

        def ended(e: BaseException | None) -> None:
            capture_error.append(e)
            session.end()

        capture = Capture(source, recorder, session.feed, ended).start()
        stopped = _live_loop(session, capture, recorder, _Printer(out, opts.partial), rep, opts.quiet)
        recorder.close()
        session.close()
        if capture_error and capture_error[0] is not None:
            if recorder.frames == 0:
                raise capture_error[0]
            rep.log(f"whispdiar: warning: {capture_error[0]}; the recording so far is kept")
        if session.error is not None:
            raise session.error
        utts = session.utterances
        live_names = [u.name for u in utts]
        instant_names = recluster(utts, prints, threshold)
        first = changed(live_names, instant_names)
        models = {"whisper": engines.transcriber.name, "vad": vad.name, "segmentation": seg.name,
                  "embedding": emb.name}
        result = build_result(utts, instant_names, str(opts.save) if opts.save else "live",
                              recorder.frames / source.layout.rate, session.language, models, prints)
        if plan is not None:
            _write(plan, result, opts, rep)
        summary = f"whispdiar: live: {len(utts)} lines; instant tier changed the speaker of {first.changed}"
        if plan is None or not opts.refine or recorder.frames == 0:
            why = "no outputs to refine" if plan is None else "--no-refine" if not opts.refine else "no audio"
            rep.console.print(f"{summary}; refined tier skipped ({why})", markup=False)
            return 0
        if len(stopped) >= 2:
            rep.console.print(f"{summary}; refined tier skipped (stopped)", markup=False)
            signals.exit_for(stopped[-1])
        refined, sig = _refine(saved, opts, plan, utts, instant_names, whisper, seg, emb, vad, rep, threshold)
        if refined is None:
            rep.console.print(f"{summary}; refinement stopped: the instant outputs stay", markup=False)
            signals.exit_for(sig)
        rep.console.print(f"{summary}, refined tier of {changed(instant_names, refined).changed}", markup=False)
        return 0
    finally:
        if temp is not None:
            temp.unlink(missing_ok=True)


def _live_loop(session: LiveSession, capture: Capture, recorder: Recorder, printer: _Printer,
               rep: ProgressReporter, quiet: bool) -> list[BaseException]:
    """Print events until the session finishes; returns the signals that arrived meanwhile."""
    signalled: list[BaseException] = []
    while True:
        try:
            e = session.get(0.1)
            signals.raise_pending()
            if e is None:
                continue
            if isinstance(e, Final):
                u = e.utterance
                printer.line(f"[{clock(u.speech_start)}] {u.name}: {u.text}")
            elif isinstance(e, Partial):
                printer.progress(f"[{clock(e.start)}] …: {e.text}")
            elif isinstance(e, SpeakerUpdate) and not quiet:
                how = f" (enrolled, similarity {e.similarity:.2f})" if e.enrolled and e.similarity is not None else ""
                what = f"{e.previous} is {e.name}" if e.previous else f"new speaker {e.name}"
                rep.console.print(f"whispdiar: live: {what}{how}", markup=False)
            elif isinstance(e, Degraded):
                rep.console.print(f"whispdiar: live: {e.message}", markup=False)
            elif isinstance(e, Finished):
                return signalled
        except (signals.Interrupted, signals.Terminated) as sig:
            signals.clear_pending()
            signalled.append(sig)
            if len(signalled) == 1:
                capture.stop()
                recorder.close()  # complete up to here, whatever comes next
                session.end()
                rep.console.print("whispdiar: live: stopping: the last utterances are being transcribed "
                                  "(Ctrl-C again to skip them)", markup=False)
            else:
                session.close(wait=1.0)


def _write(plan: OutputPlan, result: Any, opts: LiveOptions, rep: ProgressReporter) -> None:
    from ..outputs.writers import HtmlWriter

    item = plan.items[0]
    rendered = {}
    for fmt in plan.formats:
        if fmt == "html":
            if opts.save is not None:
                from ..outputs.report import audio_reference

                dest = item.destinations.get("html")
                rendered[fmt] = HtmlWriter(audio_src=audio_reference(str(opts.save), dest)).render(result)
            else:
                rendered[fmt] = HtmlWriter(link_audio=False).render(result)
        else:
            rendered[fmt] = render(result, fmt, words=opts.words)
    for dest in write_outputs(item, rendered).values():  # one tier's files appear together or not at all
        rep.log(f"wrote {dest}")


def _refine(saved: Path, opts: LiveOptions, plan: OutputPlan, utts: list, instant: list[str], whisper: Path,
            seg: Path, emb: Path, vad: Path, rep: ProgressReporter,
            threshold: float) -> tuple[list[str] | None, BaseException | None]:
    """The refined tier: (each line's refined speaker, None), or (None, the signal that
    stopped it; the instant outputs stay)."""
    from ..pipeline import Pipeline
    from ..speakers.store import VoiceprintNamer

    box: dict[str, Any] = {}
    cancel = threading.Event()

    def work() -> None:
        try:
            with Pipeline(whisper, seg, emb, vad, threads=opts.threads) as pipeline:
                namer = None
                if opts.names and pipeline.embedding_model_id is not None:
                    from ..paths import speakers_db_path

                    namer = VoiceprintNamer(opts.speakers_db or speakers_db_path(), pipeline.embedding_model_id,
                                            threshold=threshold, warn=rep.log, remember=False)
                    pipeline.namer = namer
                tasks: dict[str, Any] = {}

                def progress(stage: str, done: float, total: float) -> None:
                    if stage not in tasks:
                        tasks[stage] = rep.task(f"refine: {stage}")
                    rep.update(tasks[stage], done, total)

                box["result"] = pipeline.run(saved, language=opts.language, progress=progress, cancel=cancel,
                                             relabel=namer.relabel if namer is not None else None,
                                             display_name=str(opts.save) if opts.save else "live",
                                             prompt=opts.prompt)
        except BaseException as e:  # handed to the main thread
            box["error"] = e

    rep.log("refining: the whole recording through the transcribe pipeline (Ctrl-C keeps the instant outputs)")
    worker = threading.Thread(target=work, name="live-refine", daemon=True)
    with rep:
        worker.start()
        try:
            while worker.is_alive():
                worker.join(0.1)
                signals.raise_pending()
        except (signals.Interrupted, signals.Terminated) as sig:
            cancel.set()
            worker.join(3.0)
            return None, sig
    if "error" in box:
        raise box["error"]
    result = box["result"]
    if opts.save is None:
        result.source = None  # a temporary file, gone after this run
        result.audio = "live"
    names = align_refined(result, utts, instant, [s.name for s in result.speakers if s.enrolled])
    _write(plan, result, opts, rep)
    return names, None

