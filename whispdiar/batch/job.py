"""One transcription batch's options as a plain record, and a worker that runs them.

``TranscribeJob`` is what the driver sends to each Ray actor (small, picklable: model
*names*, resolved on the worker through its own model directory). ``TranscribeWorker``
loads the models once and turns audio into the rendered outputs ``{format: text}``
exactly as the ``transcribe`` command does on one machine (the same Pipeline, options
and writers: tests/test_batch_ray.py compares the bytes).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import WhispdiarError


@dataclass(frozen=True, slots=True)
class TranscribeJob:
    model: str  # a name from the registry, or a ggml file present on every worker
    diarize: bool = True
    vad: bool = True  # use silero-vad (the driver found it installed)
    beam_size: int = 1
    language: str | None = None
    num_speakers: int | None = None
    min_speakers: int | None = None
    max_speakers: int | None = None
    prompt: str | None = None
    translate: bool = False
    start: float | None = None
    end: float | None = None
    channel: int | None = None
    formats: tuple[str, ...] = ("txt",)
    words: bool = True
    max_line: int = 42
    max_lines: int = 2
    names: bool = True

    def settings(self) -> dict[str, Any]:
        """The options that change the outputs (for the manifest; formats are checked apart)."""
        d = asdict(self)
        d.pop("formats")
        return d


class TranscribeWorker:
    """The models of a job, loaded once; ``process`` per input."""

    def __init__(self, job: TranscribeJob, threads: int, namer: Any = None) -> None:
        from .. import models as registry
        from ..pipeline import Pipeline

        self.job = job
        whisper = registry.resolve(job.model, role="asr")
        seg = emb = None
        if job.diarize:
            seg, emb = registry.resolve("segmentation-3.0"), registry.resolve("campplus")
        vad = registry.resolve("silero-vad") if job.vad else None
        self.pipeline = Pipeline(whisper, seg, emb, vad, threads=threads, diarize=job.diarize,
                                 beam_size=job.beam_size)
        self.namer = namer if self.pipeline.embedding_model_id is not None and job.names else None
        self.pipeline.namer = self.namer

    def process(self, source: Path, display: str, origin: str | None = None) -> dict[str, str]:
        """``origin``: the absolute path of the file ``source`` is a copy of (recorded as the
        result's source, as a local run records the file itself)."""
        from dataclasses import replace

        from ..speakers.source import fingerprint
        from ..writers import CueLimits, render

        j = self.job
        result = self.pipeline.run(
            source, language=j.language, num_speakers=j.num_speakers, min_speakers=j.min_speakers,
            max_speakers=j.max_speakers, display_name=display, channel=j.channel,
            relabel=self.namer.relabel if self.namer is not None else None,
            prompt=j.prompt, translate=j.translate, start=j.start, end=j.end)
        if origin is not None:
            result.source = replace(fingerprint(source, j.channel), path=origin)  # same bytes, the file's name
        limits = CueLimits(max_line=j.max_line, max_lines=j.max_lines)
        return {f: render(result, f, words=j.words, cue_limits=limits) for f in j.formats}

    def process_bytes(self, data: bytes, suffix: str, display: str, origin: str | None = None) -> dict[str, str]:
        """The same from the file's bytes (shipped by the driver: inputs need not be shared)."""
        fd, tmp = tempfile.mkstemp(prefix="whispdiar-ray-", suffix=suffix)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            return self.process(Path(tmp), display, origin)
        except WhispdiarError as e:  # the message names the input as a local run does, not the copy
            raise type(e)(str(e).replace(tmp, display)) from None
        finally:
            Path(tmp).unlink(missing_ok=True)

    def close(self) -> None:
        self.pipeline.close()
