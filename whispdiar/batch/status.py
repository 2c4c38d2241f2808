"""``whispdiar batch-status DIR``: what the manifest says about a batch's inputs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UsageError
from .manifest import MANIFEST_NAME, FileRecord, Manifest

STATES = ("done", "failed", "unfinished", "not started")


@dataclass(slots=True)
class BatchStatus:
    inputs: list[str] = field(default_factory=list)  # every input any run planned, in order
    state: dict[str, str] = field(default_factory=dict)  # input -> one of STATES
    latest: dict[str, FileRecord] = field(default_factory=dict)
    torn_lines: int = 0

    def count(self, state: str) -> int:
        return sum(1 for k in self.inputs if self.state[k] == state)

    @property
    def audio_seconds(self) -> float:
        return sum(r.audio_seconds or 0.0 for k, r in self.latest.items() if self.state.get(k) == "done")

    @property
    def seconds(self) -> float:
        return sum(r.seconds or 0.0 for k, r in self.latest.items() if self.state.get(k) == "done")

    @property
    def complete(self) -> bool:
        return self.count("done") == len(self.inputs)

    def lines(self) -> list[str]:
        out = [f"inputs: {len(self.inputs)}"] + [f"{s}: {self.count(s)}" for s in STATES]
        speed = f" ({self.audio_seconds / self.seconds:.1f}x real time)" if self.seconds else ""
        out.append(f"audio: {self.audio_seconds:.1f} s in done inputs, processed in {self.seconds:.1f} s{speed}")
        for k in self.inputs:
            r = self.latest.get(k)
            if self.state[k] == "failed" and r is not None:
                out.append(f"FAILED {r.display} (exit {r.exit_code}): {r.error}")
            elif self.state[k] == "unfinished" and r is not None:
                out.append(f"UNFINISHED {r.display} (started, no result recorded: interrupted?)")
        if self.torn_lines:
            out.append(f"ignored {self.torn_lines} torn line{'s' * (self.torn_lines != 1)} (a write cut short)")
        return out


def batch_status(directory: Path) -> BatchStatus:
    m = Manifest(directory)
    if not m.exists():
        raise UsageError(f"{directory}: no batch manifest ({MANIFEST_NAME}) here")
    st = BatchStatus()
    seen: dict[str, None] = {}
    for rec in m.records():
        if rec["kind"] == "run":
            for k in rec.get("inputs", []):
                seen.setdefault(k, None)
        else:
            r = FileRecord.from_dict(rec)
            seen.setdefault(r.input, None)
            st.latest[r.input] = r
    st.inputs = list(seen)
    st.torn_lines = m.torn_lines
    for k in st.inputs:
        r = st.latest.get(k)
        st.state[k] = "not started" if r is None else {"started": "unfinished"}.get(r.status, r.status)
    return st
