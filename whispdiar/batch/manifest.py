"""The batch manifest: what a batch with ``--output-dir`` did, one JSON line per event.

The file (``whispdiar-manifest.jsonl`` in the output directory) is append-only: each
record is one whole line written with a single ``write`` on an ``O_APPEND`` descriptor and
``fsync``ed before the batch goes on. Earlier lines are never rewritten, so a process
killed (even ``kill -9``) mid-write can only leave a torn *last* line; the reader ignores
a line that is not valid JSON and the next writer first ends it with a newline. (Rewriting
the whole file and renaming it would also be atomic, but costs O(n) per file on a batch of
thousands, and loses the history of attempts.)

Records:

* ``{"kind": "run", ...}``: a batch started (time, command, the input keys planned);
* ``{"kind": "file", "status": "started" | "done" | "failed", ...}``: one input.

An input is *complete*, and skipped by a restarted batch, when its latest record is
``done`` with the same content fingerprint (size + SHA-256 of the bytes), the same
settings (a hash of the options that change outputs) and the same output formats, and
every output file it lists still exists with the recorded size and SHA-256. Outputs
that are on disk but not recorded (a run killed between writing them and the manifest,
or somebody else's files) are not trusted: the input is done again.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import OutputError, UsageError
from ..speakers.source import sha256_file

MANIFEST_NAME = "whispdiar-manifest.jsonl"
STDIN_KEY = "-"


@dataclass(frozen=True, slots=True)
class Fingerprint:
    size: int
    sha256: str


def fingerprint(path: str | os.PathLike[str]) -> Fingerprint:
    """Size and SHA-256 of a file's bytes (0.56 s per GB from the page cache here: docs/benchmarks.md)."""
    return Fingerprint(os.stat(path).st_size, sha256_file(path))


def settings_hash(settings: Mapping[str, Any]) -> str:
    """A short stable hash of the options that change the outputs."""
    text = json.dumps(settings, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def input_key(name: str) -> str:
    """How the manifest names an input: its absolute path, or ``-`` for stdin."""
    return STDIN_KEY if name == STDIN_KEY else str(Path(name).absolute())


@dataclass(slots=True)
class FileRecord:
    input: str  # input_key()
    display: str  # as the user gave it
    status: str  # started | done | failed
    size: int | None = None
    sha256: str | None = None
    settings: str = ""
    formats: list[str] = field(default_factory=list)
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)  # fmt -> {path, size, sha256}
    audio_seconds: float | None = None
    seconds: float | None = None  # wall time for this input
    error: str | None = None
    exit_code: int | None = None
    engine: str = "local"
    attempts: int = 1
    time: float = 0.0  # Unix time of the record

    def line(self) -> str:
        return json.dumps({"kind": "file", **asdict(self)}, ensure_ascii=False, separators=(",", ":")) + "\n"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FileRecord:
        names = cls.__dataclass_fields__.keys()
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass(slots=True)
class Manifest:
    directory: Path
    torn_lines: int = 0  # lines that were not valid JSON (a write cut short)

    @property
    def path(self) -> Path:
        return self.directory / MANIFEST_NAME

    def exists(self) -> bool:
        return self.path.is_file()

    def records(self) -> list[dict[str, Any]]:
        """Every valid record, in order; torn or foreign lines are counted and skipped."""
        self.torn_lines = 0
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as e:
            raise OutputError(f"cannot read {self.path}: {e.strerror}") from None
        out = []
        for line in raw.split(b"\n"):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                self.torn_lines += 1
                continue
            if isinstance(rec, dict) and rec.get("kind") in ("run", "file"):
                out.append(rec)
            else:
                self.torn_lines += 1
        return out

    def latest(self) -> dict[str, FileRecord]:
        """The last record of each input."""
        last: dict[str, FileRecord] = {}
        for rec in self.records():
            if rec["kind"] == "file":
                r = FileRecord.from_dict(rec)
                last[r.input] = r
        return last

    def append(self, record: FileRecord | Mapping[str, Any]) -> None:
        """Add one whole line and fsync it (see the module's docstring)."""
        line = record.line() if isinstance(record, FileRecord) else json.dumps(
            dict(record), ensure_ascii=False, separators=(",", ":")) + "\n"
        data = line.encode("utf-8")
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as e:
            raise OutputError(f"cannot write {self.path}: {e.strerror}") from None
        try:
            end = os.lseek(fd, 0, os.SEEK_END)
            if end:  # a torn last line (killed mid-write) is ended first, so ours stays whole
                with open(self.path, "rb") as f:
                    f.seek(end - 1)
                    if f.read(1) != b"\n":
                        data = b"\n" + data
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except OSError as e:
            raise OutputError(f"cannot write {self.path}: {e.strerror}") from None
        finally:
            os.close(fd)


def output_record(dest: Path) -> dict[str, Any]:
    fp = fingerprint(dest)
    return {"path": dest.name, "size": fp.size, "sha256": fp.sha256}


def is_complete(rec: FileRecord | None, fp: Fingerprint, settings: str,
                destinations: Mapping[str, Path | None]) -> bool:
    """True when ``rec`` proves the input's outputs for these settings are all on disk, intact."""
    if rec is None or rec.status != "done" or rec.settings != settings:
        return False
    if (rec.size, rec.sha256) != (fp.size, fp.sha256) or set(rec.outputs) != set(destinations):
        return False
    for fmt, dest in destinations.items():
        if dest is None:
            return False  # stdout: nothing to keep
        want = rec.outputs[fmt]
        if want.get("path") != dest.name:
            return False
        try:
            if dest.stat().st_size != want.get("size") or fingerprint(dest).sha256 != want.get("sha256"):
                return False
        except OSError:
            return False
    return True


def read_list(source: str, stdin_text: str | None = None) -> list[str]:
    """Input paths from a list file (``-``: standard input), one per line; blank lines skipped.

    A line is a path as it is (only the line end is removed), so names with spaces or
    ``#`` work; ``-`` in a list is refused (standard input is either the list or audio).
    """
    import sys

    try:
        if source == STDIN_KEY:
            text = stdin_text if stdin_text is not None else sys.stdin.read()
        else:
            text = Path(source).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{source}: no such list file") from None
    except IsADirectoryError:
        raise UsageError(f"{source}: is a directory, not a list file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"{source}: cannot read the list file: {getattr(e, 'strerror', None) or e}") from None
    names = [ln.rstrip("\r") for ln in text.split("\n")]
    names = [n for n in names if n.strip()]
    if STDIN_KEY in names:
        raise UsageError(f"{'standard input' if source == STDIN_KEY else source}: the list names '-'; "
                         "write ./- for a file named '-' (standard input is the list or audio, not both)")
    return names


def now() -> float:
    return round(time.time(), 3)


def unique(keys: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(keys))
