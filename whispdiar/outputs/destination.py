"""Where results go: stdout or files, decided once per run; atomic file writes."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..audio import read as audio
from ..errors import OutputError, UsageError
from .writers import EXTENSIONS

if TYPE_CHECKING:
    from ..records import Result

DIARIZE_FORMATS = ("txt", "rttm", "json", "stats", "stats-tsv")


@dataclass(slots=True)
class PlannedInput:
    source: Path  # file to read (a temp copy for stdin)
    display: str  # name shown to the user and written into outputs
    destinations: dict[str, Path | None]  # format -> file, or None for stdout
    temporary: bool = False

    def cleanup(self) -> None:
        if self.temporary:
            self.source.unlink(missing_ok=True)


@dataclass(slots=True)
class OutputPlan:
    formats: list[str]
    items: list[PlannedInput] = field(default_factory=list)

    def cleanup(self) -> None:
        """Remove temporary copies (stdin) whatever happened."""
        for item in self.items:
            item.cleanup()

    def __enter__(self) -> OutputPlan:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


def plan_outputs(
    inputs: list[str], formats: list[str], allowed: tuple[str, ...], output_dir: Path | None, output: Path | None
) -> OutputPlan:
    """Check the combination of inputs/formats/destinations; refuse ambiguous ones before any work.

    The format ``all`` stands for every format in ``allowed`` and needs ``output_dir``.
    """
    fmts = list(dict.fromkeys(f.lower() for f in formats))
    if "all" in fmts:
        if output_dir is None:
            raise UsageError("-f all writes every format and needs --output-dir DIR")
        fmts = list(allowed)
    for f in fmts:
        if f not in allowed:
            raise UsageError(f"unknown format '{f}' (choose from: {', '.join(allowed)}, all)")
    if not inputs:
        raise UsageError("no input files given")
    if inputs.count("-") > 1:
        raise UsageError("standard input (-) can be given only once")
    if output is not None and output_dir is not None:
        raise UsageError("give either --output FILE or --output-dir DIR, not both")
    single = len(inputs) == 1 and len(fmts) == 1
    if output is not None and not single:
        raise UsageError("--output FILE takes one input and one format; use --output-dir DIR for more")
    if output_dir is None and output is None and not single:
        raise UsageError("several inputs or formats need --output-dir DIR (each result goes to <stem>.<ext>)")
    if output_dir is not None:
        _check_writable_dir(output_dir)
    if output is not None:
        _check_writable_dir(output.parent if str(output.parent) else Path("."))

    plan = OutputPlan(fmts)
    seen: dict[Path, str] = {}
    for name in inputs:
        stem = "stdin" if name == "-" else Path(name).stem
        dests: dict[str, Path | None] = {}
        for f in fmts:
            if output_dir is not None:
                dest = output_dir / f"{stem}.{EXTENSIONS.get(f, f)}"
                if dest in seen:
                    raise UsageError(f"{name} and {seen[dest]} would both write {dest}")
                seen[dest] = name
                dests[f] = dest
            else:
                dests[f] = output
        plan.items.append(PlannedInput(Path(name), "stdin" if name == "-" else name, dests))
    # Read stdin only after every check passed.
    for item in plan.items:
        if str(item.source) == "-":
            item.source = audio.stdin_to_tempfile()
            item.temporary = True
    return plan


def _check_writable_dir(d: Path) -> None:
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create output directory {d}: {e.strerror}") from None
    if not d.is_dir():
        raise OutputError(f"{d} is not a directory")
    if not os.access(d, os.W_OK | os.X_OK):
        raise OutputError(f"output directory {d} is not writable")


def write_outputs(item: PlannedInput, rendered: dict[str, str],
                  then: Callable[[dict[str, Path]], None] | None = None) -> dict[str, Path]:
    """Write one input's rendered formats to their destinations (stdout or atomic files),
    all of them or none: if a write, or ``then(written)`` (e.g. the batch manifest's
    line), fails, the files already written are removed again. Signals wait until the
    set is complete. Returns format -> file written."""
    from .. import signals
    from .writers import write_atomic

    with signals.deferred():
        written: dict[str, Path] = {}
        try:
            for fmt, dest in item.destinations.items():
                if dest is None:
                    sys.stdout.write(rendered[fmt])
                    sys.stdout.flush()
                else:
                    write_atomic(dest, rendered[fmt])
                    written[fmt] = dest
            if then is not None:
                then(written)
        except BaseException:
            for dest in written.values():
                dest.unlink(missing_ok=True)
            raise
    return written


def render_turns(result: Result, fmt: str) -> str:
    """A diarization without text (the `diarize` command) in one of ``DIARIZE_FORMATS``:
    txt as turn lines, the others with their usual writer (json: no segments)."""
    from .writers import render, render_turn_lines

    return render_turn_lines(result) if fmt == "txt" else render(result, fmt)
