"""A request's options: read from form fields, checked before the job is queued, stored
with the job (JSON), and turned into the ``TranscribeJob`` the loaded worker runs.

The fields are the CLI's options under the names of OpenAI's endpoint where it has one
(``language``, ``prompt``) and the CLI's long option names otherwise (``num_speakers``,
``min_speakers``, ``max_speakers``, ``names``, ``diarize``, ``remember``, ``start``,
``end``, ``channel``, ``words``, ``max_line_width``, ``max_line_count``, ``embed_audio``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from ..errors import UsageError
from .errors import ApiError
from .uploads import Form

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
MAX_PROMPT_CHARS = 4000  # whisper keeps the last 224 tokens of it anyway


@dataclass(frozen=True, slots=True)
class RunOptions:
    task: str = "transcribe"  # or "diarize"
    model: str = ""  # the served whisper model that runs it (not for diarize)
    language: str | None = None  # a whisper language code; None: detect
    prompt: str | None = None
    translate: bool = False
    diarize: bool = True
    names: bool = True  # name enrolled speakers
    remember: bool | None = None  # speaker memory; None: the database's setting
    num_speakers: int | None = None
    min_speakers: int | None = None
    max_speakers: int | None = None
    start: float | None = None
    end: float | None = None
    channel: int | None = None
    words: bool = True  # words in json / json-compact
    max_line_width: int = 42
    max_line_count: int = 2
    embed_audio: bool = False  # html: the recording inside the page

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> RunOptions:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in doc.items() if k in known})

    def transcribe_job(self, formats: tuple[str, ...], vad: bool, beam_size: int) -> Any:
        """The ``TranscribeJob`` of these options (``vad``/``beam_size``: the loaded worker's)."""
        from ..batch.job import TranscribeJob

        return TranscribeJob(model=self.model, diarize=self.diarize, vad=vad, beam_size=beam_size,
                             language=self.language, num_speakers=self.num_speakers, min_speakers=self.min_speakers,
                             max_speakers=self.max_speakers, prompt=self.prompt, translate=self.translate,
                             start=self.start, end=self.end, channel=self.channel, formats=formats, words=self.words,
                             max_line=self.max_line_width, max_lines=self.max_line_count, names=self.names,
                             embed_audio=self.embed_audio)


def boolean(form: Form, name: str, default: bool | None) -> bool | None:
    value = form.get(name)
    if value is None:
        return default
    v = value.lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise ApiError(400, f"'{name}' must be true or false, not {value!r}", param=name)


def integer(form: Form, name: str, lo: int, hi: int | None = None) -> int | None:
    value = form.get(name)
    if value is None:
        return None
    try:
        n = int(value)
    except ValueError:
        n = None
    if n is None or n < lo or (hi is not None and n > hi):
        bound = f"from {lo} to {hi}" if hi is not None else f"{lo} or more"
        raise ApiError(400, f"'{name}' must be a whole number {bound}, not {value!r}", param=name)
    return n


def number(form: Form, name: str, lo: float, hi: float) -> float | None:
    value = form.get(name)
    if value is None:
        return None
    try:
        x = float(value)
    except ValueError:
        x = float("nan")
    if not lo <= x <= hi:
        raise ApiError(400, f"'{name}' must be a number from {lo:g} to {hi:g}, not {value!r}", param=name)
    return x


def read_options(form: Form, *, task: str, model: str, translate: bool = False) -> RunOptions:
    """The options of a request's form, each checked on its own (ApiError 400 naming the
    field); checks that need the loaded model are ``Service.check``'s."""
    from ..diarization.clustering import check_hints
    from ..outputs.writers import CueLimits
    from ..spans import make_span, parse_time

    def time_field(name: str) -> float | None:
        value = form.get(name)
        if value is None:
            return None
        try:
            return parse_time(value)
        except UsageError as e:
            raise ApiError(400, f"'{name}': {e}", param=name) from None

    language = form.get("language")
    prompt = form.get("prompt")
    if prompt is not None and len(prompt) > MAX_PROMPT_CHARS:
        raise ApiError(400, f"'prompt' is longer than {MAX_PROMPT_CHARS} characters", param="prompt")
    opts = RunOptions(
        task=task, model=model if task == "transcribe" else "",
        language=None if language is None or language.lower() == "auto" else language.lower(),
        prompt=prompt, translate=translate or bool(boolean(form, "translate", False)),
        diarize=task == "diarize" or bool(boolean(form, "diarize", True)),
        names=bool(boolean(form, "names", True)), remember=boolean(form, "remember", None),
        num_speakers=integer(form, "num_speakers", 1), min_speakers=integer(form, "min_speakers", 1),
        max_speakers=integer(form, "max_speakers", 1),
        start=time_field("start"), end=time_field("end"), channel=integer(form, "channel", 0, 255),
        words=bool(boolean(form, "words", True)),
        max_line_width=integer(form, "max_line_width", 1, 1000) or 42,
        max_line_count=integer(form, "max_line_count", 1, 100) or 2,
        embed_audio=bool(boolean(form, "embed_audio", False)),
    )
    try:
        check_hints(opts.num_speakers, opts.min_speakers, opts.max_speakers)
        make_span(opts.start, opts.end)
        CueLimits(max_line=opts.max_line_width, max_lines=opts.max_line_count)
    except UsageError as e:
        raise ApiError(400, str(e)) from None
    return opts
