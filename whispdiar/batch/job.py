"""One transcription batch's options as a plain record, and the worker that runs them.

``TranscribeJob`` is what the ``transcribe`` command runs, and what the driver sends to
each Ray actor (small, picklable: model *names*, resolved on the worker through its own
model directory). ``TranscribeWorker`` loads the models once and turns each recording
into its rendered outputs ``{format: text}``; the command uses it on one machine and
every Ray actor uses it too, so both give the same bytes (tests/test_batch_ray.py).
"""

from __future__ import annotations

import os
import tempfile
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import WhispdiarError

if TYPE_CHECKING:
    from ..pipeline import ProgressFn


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
    embed_audio: bool = False  # -f html: the recording inside the page instead of linked

    def settings(self) -> dict[str, Any]:
        """The options that change the outputs (for the manifest; formats are checked apart)."""
        d = asdict(self)
        d.pop("formats")
        return d


class TranscribeWorker:
    """The models of a job, loaded once; ``process`` per input. A context manager: leaving
    it on Ctrl-C does not wait for the engines (``Pipeline.__exit__``)."""

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
        self.namer: Any = None
        self.use_namer(namer)

    @property
    def embedding_model_id(self) -> str | None:
        """The speaker embedding model's fingerprint (what voiceprints are matched by)."""
        return self.pipeline.embedding_model_id

    def use_namer(self, namer: Any) -> None:
        """Name speakers with ``namer`` (a VoiceprintNamer), unless the job diarizes
        nothing or asks for no names."""
        self.namer = namer if self.pipeline.embedding_model_id is not None and self.job.names else None
        self.pipeline.namer = self.namer

    def process(self, source: Path, display: str, origin: str | None = None, *,
                progress: ProgressFn | None = None, cancel: threading.Event | None = None,
                html_dest: Path | None = None) -> dict[str, str]:
        """``display``: the input's name in the outputs; a ``source`` other than
        ``Path(display)`` is a temporary copy (standard input): no file is recorded as the
        result's source and the HTML report links no audio. ``origin``: the absolute path
        of the file ``source`` is a copy of (recorded as the source, as a local run
        records the file itself). ``html_dest``: where the HTML report goes (its audio
        link is relative to it). ``progress``/``cancel``: see ``Pipeline.run``."""
        from dataclasses import replace

        from ..speakers.source import fingerprint
        from ..writers import CueLimits, render

        j = self.job
        result = self.pipeline.run(
            source, language=j.language, num_speakers=j.num_speakers, min_speakers=j.min_speakers,
            max_speakers=j.max_speakers, progress=progress, cancel=cancel, display_name=display,
            channel=j.channel, relabel=self.namer.relabel if self.namer is not None else None,
            prompt=j.prompt, translate=j.translate, start=j.start, end=j.end)
        copy = Path(display) != source
        if origin is not None:
            result.source = replace(fingerprint(source, j.channel), path=origin)  # same bytes, the file's name
        elif copy:
            result.source = None
        limits = CueLimits(max_line=j.max_line, max_lines=j.max_lines)
        out = {f: render(result, f, words=j.words, cue_limits=limits) for f in j.formats if f != "html"}
        if "html" in j.formats:
            out["html"] = self._html(result, source, display, copy, html_dest)
        return out

    def _html(self, result: Any, source: Path, display: str, copy: bool, dest: Path | None) -> str:
        """The HTML report: the recording linked relative to where the page goes, or embedded."""
        from ..report import audio_reference, embed_audio
        from ..writers import HtmlWriter

        if self.job.embed_audio:
            return HtmlWriter(embedded=embed_audio(source, self.job.channel)).render(result)
        if copy:  # standard input: a temporary copy, gone afterwards
            return HtmlWriter(link_audio=False).render(result)
        return HtmlWriter(audio_src=audio_reference(display, dest)).render(result)

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

    def __enter__(self) -> TranscribeWorker:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        self.pipeline.__exit__(exc_type, *exc)
