"""What a batch with ``--output-dir`` records as it goes, and what it may skip.

``BatchRecorder`` wraps the ``Manifest`` for one run: it fingerprints each input, tells
whether its outputs are already complete (skip), and appends started/done/failed records.
Without an output directory (stdout, ``-o``) it records nothing and skips nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import WhispdiarError
from ..outputs.destination import PlannedInput
from .manifest import (
    STDIN_KEY,
    FileRecord,
    Fingerprint,
    Manifest,
    fingerprint,
    input_key,
    is_complete,
    now,
    output_record,
    settings_hash,
)


def item_key(item: PlannedInput) -> str:
    return STDIN_KEY if item.temporary else input_key(str(item.source))


@dataclass(slots=True)
class BatchRecorder:
    manifest: Manifest | None
    settings: str = ""
    overwrite: bool = False
    engine: str = "local"
    _latest: dict[str, FileRecord] = field(default_factory=dict)
    _prints: dict[str, Fingerprint | None] = field(default_factory=dict)

    @classmethod
    def open(cls, output_dir: Path | None, settings: Mapping[str, Any], *, overwrite: bool = False,
             engine: str = "local") -> BatchRecorder:
        if output_dir is None:
            return cls(None)
        m = Manifest(output_dir)
        return cls(m, settings_hash(settings), overwrite, engine, m.latest())

    @property
    def manifest_path(self) -> Path | None:
        return None if self.manifest is None else self.manifest.path

    def begin(self, items: Iterable[PlannedInput]) -> None:
        if self.manifest is not None:
            self.manifest.append({"kind": "run", "time": now(), "engine": self.engine,
                                  "settings": self.settings, "inputs": [item_key(i) for i in items]})

    def fingerprint(self, item: PlannedInput) -> Fingerprint | None:
        key = item_key(item)
        if key not in self._prints:
            try:
                self._prints[key] = fingerprint(item.source)
            except OSError:
                self._prints[key] = None  # missing/unreadable: the audio check reports it
        return self._prints[key]

    def complete(self, item: PlannedInput) -> bool:
        """The input's outputs for these settings are all there, as recorded: skip it."""
        if self.manifest is None or self.overwrite:
            return False
        fp = self.fingerprint(item)
        return fp is not None and is_complete(self._latest.get(item_key(item)), fp, self.settings,
                                              item.destinations)

    def _record(self, item: PlannedInput, status: str, attempts: int = 1, **kw: Any) -> None:
        if self.manifest is None:
            return
        fp = self.fingerprint(item)
        key = item_key(item)
        rec = FileRecord(key, item.display, status, fp.size if fp else None, fp.sha256 if fp else None,
                         self.settings, list(item.destinations), engine=self.engine,
                         attempts=attempts, time=now(), **kw)
        self.manifest.append(rec)

    def started(self, item: PlannedInput) -> None:
        self._record(item, "started")

    def done(self, item: PlannedInput, written: Mapping[str, Path], seconds: float,
             audio_seconds: float | None, attempts: int = 1) -> None:
        """Called with the outputs written (before they are announced); raises OutputError."""
        if self.manifest is None:
            return
        outputs = {fmt: output_record(p) for fmt, p in written.items()}
        self._record(item, "done", attempts, outputs=outputs, seconds=round(seconds, 3),
                     audio_seconds=audio_seconds)

    def failed(self, item: PlannedInput, error: WhispdiarError, seconds: float | None = None,
               attempts: int = 1) -> None:
        # A manifest that cannot be written must not hide the input's own error.
        with contextlib.suppress(WhispdiarError):
            self._record(item, "failed", attempts, error=str(error), exit_code=error.exit_code,
                         seconds=None if seconds is None else round(seconds, 3))
