"""One recording's run, shared by every front end: the options as a plain record, the
worker that runs them, and the small pieces the commands and the HTTP server all use.

``TranscribeJob`` is what the ``transcribe`` command runs, and what the driver sends to
each Ray actor (small, picklable: model *names*, resolved on the worker through its own
model directory). ``TranscribeWorker`` loads the models once and turns each recording
into its rendered outputs ``{format: text}``; the command uses it on one machine and
every Ray actor uses it too, so both give the same bytes (tests/test_batch_ray.py). The
HTTP server (whispdiar.server) keeps one worker per served model and passes each
request's own ``TranscribeJob`` and namer to ``run``/``render``, so it gives the
command's bytes too (tests/test_server_api.py). ``make_namer`` and ``diarize_file`` are the
speaker naming and the ``diarize`` command's run, for the same reason.
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
    from collections.abc import Callable

    from ..diarization.diarizer import Diarizer
    from ..pipeline import ProgressFn
    from ..records import Result
    from ..speakers.store import VoiceprintNamer

KEEP: Any = object()  # TranscribeWorker.run(namer=...)'s default: the worker's own namer


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
        result = self.run(source, display, origin, progress=progress, cancel=cancel)
        return self.render(result, source, display, html_dest=html_dest)

    def run(self, source: Path, display: str, origin: str | None = None, *,
            progress: ProgressFn | None = None, cancel: threading.Event | None = None,
            job: TranscribeJob | None = None, namer: Any = KEEP) -> Result:
        """The Result of one recording (``process`` without the rendering). ``job``: this
        run's options instead of the worker's (its model, VAD and beam size must be the
        worker's: they are loaded); ``namer``: this run's namer instead of the worker's
        (None: no names). Both are how one loaded worker serves differing requests."""
        from dataclasses import replace

        from ..speakers.source import fingerprint

        j = job or self.job
        namer = self.namer if namer is KEEP else namer
        if not j.names or not j.diarize:
            namer = None
        result = self.pipeline.run(
            source, language=j.language, diarize=j.diarize, num_speakers=j.num_speakers,
            min_speakers=j.min_speakers, max_speakers=j.max_speakers, progress=progress, cancel=cancel,
            display_name=display, channel=j.channel, relabel=namer.relabel if namer is not None else None,
            prompt=j.prompt, translate=j.translate, start=j.start, end=j.end, namer=namer)
        copy = Path(display) != source
        if origin is not None:
            result.source = replace(fingerprint(source, j.channel), path=origin)  # same bytes, the file's name
        elif copy:
            result.source = None
        return result

    def render(self, result: Result, source: Path, display: str, *, job: TranscribeJob | None = None,
               html_dest: Path | None = None, audio_url: str | None = None) -> dict[str, str]:
        """``result`` in every format of the job, ``{format: text}``. ``audio_url``: how the
        HTML report links the recording, instead of a path relative to ``html_dest``."""
        from ..outputs.writers import CueLimits, render

        j = job or self.job
        limits = CueLimits(max_line=j.max_line, max_lines=j.max_lines)
        out = {f: render(result, f, words=j.words, cue_limits=limits) for f in j.formats if f != "html"}
        if "html" in j.formats:
            out["html"] = self._html(result, source, display, Path(display) != source, html_dest, j, audio_url)
        return out

    def _html(self, result: Any, source: Path, display: str, copy: bool, dest: Path | None, job: TranscribeJob,
              audio_url: str | None) -> str:
        """The HTML report: the recording linked relative to where the page goes, or embedded."""
        from ..outputs.report import audio_reference, embed_audio
        from ..outputs.writers import HtmlWriter

        if job.embed_audio:
            return HtmlWriter(embedded=embed_audio(source, job.channel)).render(result)
        if audio_url is not None:
            return HtmlWriter(audio_src=audio_url).render(result)
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


def default_threads() -> int:
    """CPU threads a run uses unless told: the cores, at most 8 (more stopped paying off)."""
    return max(1, min(os.cpu_count() or 2, 8))


def make_namer(model_id: str, db: Path | None = None, threshold: float | None = None, *,
               warn: Callable[[str], None] | None = None, remember: bool | None = None) -> VoiceprintNamer:
    """The speaker namer of a run: the voiceprints of ``db`` (default: the user's database)
    for the embedding model ``model_id``; ``threshold`` None keeps the default; ``remember``
    None follows the database's setting; ``warn`` gets its warnings (default: stderr)."""
    from ..paths import speakers_db_path
    from ..speakers.store import VoiceprintNamer

    kwargs: dict[str, Any] = {} if threshold is None else {"threshold": threshold}
    return VoiceprintNamer(db or speakers_db_path(), model_id, warn=warn, remember=remember, **kwargs)


def diarize_file(diarizer: Diarizer, source: Path, display: str, *, models: dict[str, str], namer: Any = None,
                 num_speakers: int | None = None, min_speakers: int | None = None, max_speakers: int | None = None,
                 channel: int | None = None, origin: str | None = None,
                 progress: Callable[[float, float], None] | None = None,
                 cancel: threading.Event | None = None) -> Result:
    """What ``whispdiar diarize`` makes of one recording: its turns and named speakers as a
    Result without text. ``source``/``display``/``origin`` as for ``TranscribeWorker.process``
    (a copy, e.g. standard input, records no source file)."""
    import time
    from dataclasses import replace

    from ..speakers.naming import diarization_result
    from ..speakers.source import fingerprint

    t0 = time.perf_counter()
    diar = diarizer(source, num_speakers=num_speakers, min_speakers=min_speakers, max_speakers=max_speakers,
                    channel=channel, progress=progress, cancel=cancel,
                    relabel=namer.relabel if namer is not None else None)
    result = diarization_result(diar, display, namer, models, round(time.perf_counter() - t0, 3))
    if origin is not None:
        result.source = replace(fingerprint(source, channel), path=origin)
    elif Path(display) == source:  # standard input arrives as a temporary copy: no file to record
        result.source = fingerprint(source, channel)
    return result
