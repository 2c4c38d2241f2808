"""OpenAI's transcription endpoint, ``POST /v1/audio/transcriptions`` (and ``translations``):
its request fields and its response shapes, with whispdiar's speakers added.

Response formats (``response_format``): ``json`` ``{"text"}``; ``text``; ``srt`` and
``vtt`` (whispdiar's subtitles: the speaker as a ``Name:`` prefix / ``<v Name>`` voice
tag); ``verbose_json`` (``task``, ``language`` as whisper's English name, ``duration``,
``text``, ``segments`` and/or ``words`` by ``timestamp_granularities[]``, each with a
``speaker``); ``diarized_json`` (OpenAI's diarized shape, the speaker being the shown
name). Fields OpenAI's whisper reports that whisper.cpp's run here does not keep are
filled as docs/api.md says (``tokens`` empty, ``no_speech_prob`` 0, ``seek`` the
segment's start in 10 ms frames, ``avg_logprob`` from the words' probabilities,
``compression_ratio`` computed as whisper does).
"""

from __future__ import annotations

import json
import math
import zlib
from typing import TYPE_CHECKING, Any

from .errors import ApiError

if TYPE_CHECKING:
    from ..records import Result, Segment

OPENAI_FORMATS = ("json", "text", "srt", "vtt", "verbose_json", "diarized_json")
GRANULARITIES = ("segment", "word")
MEDIA = {"json": "application/json", "verbose_json": "application/json", "diarized_json": "application/json",
         "text": "text/plain; charset=utf-8", "srt": "application/x-subrip; charset=utf-8",
         "vtt": "text/vtt; charset=utf-8"}

# Whisper's language names (openai/whisper tokenizer.py), as OpenAI's verbose_json reports them.
LANGUAGES = {
    "en": "english", "zh": "chinese", "de": "german", "es": "spanish", "ru": "russian", "ko": "korean",
    "fr": "french", "ja": "japanese", "pt": "portuguese", "tr": "turkish", "pl": "polish", "ca": "catalan",
    "nl": "dutch", "ar": "arabic", "sv": "swedish", "it": "italian", "id": "indonesian", "hi": "hindi",
    "fi": "finnish", "vi": "vietnamese", "he": "hebrew", "uk": "ukrainian", "el": "greek", "ms": "malay",
    "cs": "czech", "ro": "romanian", "da": "danish", "hu": "hungarian", "ta": "tamil", "no": "norwegian",
    "th": "thai", "ur": "urdu", "hr": "croatian", "bg": "bulgarian", "lt": "lithuanian", "la": "latin",
    "mi": "maori", "ml": "malayalam", "cy": "welsh", "sk": "slovak", "te": "telugu", "fa": "persian",
    "lv": "latvian", "bn": "bengali", "sr": "serbian", "az": "azerbaijani", "sl": "slovenian", "kn": "kannada",
    "et": "estonian", "mk": "macedonian", "br": "breton", "eu": "basque", "is": "icelandic", "hy": "armenian",
    "ne": "nepali", "mn": "mongolian", "bs": "bosnian", "kk": "kazakh", "sq": "albanian", "sw": "swahili",
    "gl": "galician", "mr": "marathi", "pa": "punjabi", "si": "sinhala", "km": "khmer", "sn": "shona",
    "yo": "yoruba", "so": "somali", "af": "afrikaans", "oc": "occitan", "ka": "georgian", "be": "belarusian",
    "tg": "tajik", "sd": "sindhi", "gu": "gujarati", "am": "amharic", "yi": "yiddish", "lo": "lao",
    "uz": "uzbek", "fo": "faroese", "ht": "haitian creole", "ps": "pashto", "tk": "turkmen", "nn": "nynorsk",
    "mt": "maltese", "sa": "sanskrit", "lb": "luxembourgish", "my": "myanmar", "bo": "tibetan",
    "tl": "tagalog", "mg": "malagasy", "as": "assamese", "tt": "tatar", "haw": "hawaiian", "ln": "lingala",
    "ha": "hausa", "ba": "bashkir", "jw": "javanese", "su": "sundanese", "yue": "cantonese",
}


def language_name(code: str | None) -> str:
    return LANGUAGES.get(code or "", code or "")


def transcript_text(result: Result) -> str:
    return " ".join(t for s in result.segments if (t := s.text.strip()))


def compression_ratio(text: str) -> float:
    """Whisper's: UTF-8 length over zlib-compressed length (repetitive text scores high)."""
    data = text.encode("utf-8")
    return round(len(data) / len(zlib.compress(data)), 3) if data else 0.0


def avg_logprob(segment: Segment) -> float:
    """The mean natural log of the segment's word probabilities (0 without any)."""
    probs = [w.probability for w in segment.words if w.probability is not None]
    return round(sum(math.log(max(p, 1e-10)) for p in probs) / len(probs), 4) if probs else 0.0


def verbose_json(result: Result, granularities: tuple[str, ...] = ("segment",), task: str = "transcribe",
                 temperature: float = 0.0) -> dict[str, Any]:
    name = result.speaker_name
    doc: dict[str, Any] = {"task": task, "language": language_name(result.language),
                           "duration": round(result.duration, 3), "text": transcript_text(result)}
    if "segment" in granularities:
        doc["segments"] = [
            {"id": i, "seek": int(round(s.start * 100)), "start": round(s.start, 3), "end": round(s.end, 3),
             "text": s.text.strip(), "tokens": [], "temperature": temperature, "avg_logprob": avg_logprob(s),
             "compression_ratio": compression_ratio(s.text.strip()), "no_speech_prob": 0.0,
             "speaker": name(s.speaker)}
            for i, s in enumerate(result.segments)]
    if "word" in granularities:
        doc["words"] = [
            {"word": w.text.strip(), "start": round(s.start if w.start is None else w.start, 3),
             "end": round(s.end if w.end is None else w.end, 3), "speaker": name(w.speaker),
             "probability": None if w.probability is None else round(w.probability, 3)}
            for s in result.segments for w in s.words]
    doc["usage"] = usage(result)
    doc["speakers"] = [{"name": sp.name, "label": sp.label, "enrolled": sp.enrolled,
                        "confidence": None if sp.confidence is None else round(sp.confidence, 3),
                        "speech_seconds": round(sp.speech_seconds, 3)} for sp in result.speakers]
    return doc


def diarized_json(result: Result) -> dict[str, Any]:
    name = result.speaker_name
    return {"task": "transcribe", "duration": round(result.duration, 3), "text": transcript_text(result),
            "segments": [{"type": "transcript.text.segment", "id": f"seg_{i}", "start": round(s.start, 3),
                          "end": round(s.end, 3), "text": s.text.strip(), "speaker": name(s.speaker) or ""}
                         for i, s in enumerate(result.segments)],
            "usage": usage(result)}


def usage(result: Result) -> dict[str, Any]:
    return {"type": "duration", "seconds": math.ceil(result.duration)}


def render(result: Result, fmt: str, granularities: tuple[str, ...], task: str = "transcribe",
           temperature: float = 0.0) -> tuple[str, str]:
    """``(body, media type)`` of ``result`` in an OpenAI ``response_format``."""
    from ..outputs.writers import render as render_format

    if fmt == "json":
        body = json.dumps({"text": transcript_text(result), "usage": usage(result)}, ensure_ascii=False)
    elif fmt == "text":
        body = transcript_text(result) + "\n"
    elif fmt in ("srt", "vtt"):
        body = render_format(result, fmt)
    elif fmt == "verbose_json":
        body = json.dumps(verbose_json(result, granularities, task, temperature), ensure_ascii=False)
    else:
        body = json.dumps(diarized_json(result), ensure_ascii=False)
    return body, MEDIA[fmt]


def response_format(value: str | None) -> str:
    fmt = (value or "json").strip().lower()
    if fmt not in OPENAI_FORMATS:
        raise ApiError(400, f"response_format {value!r} is not one of {', '.join(OPENAI_FORMATS)} "
                       "(every whispdiar format: the jobs API, /v1/jobs)", param="response_format")
    return fmt


def timestamp_granularities(values: list[str]) -> tuple[str, ...]:
    """``timestamp_granularities[]`` (segment, word); segment when none is given, as OpenAI does."""
    out: list[str] = []
    for v in values:
        for g in v.replace(",", " ").split():
            if g.lower() not in GRANULARITIES:
                raise ApiError(400, f"timestamp_granularities: {g!r} is not segment or word",
                               param="timestamp_granularities[]")
            out.append(g.lower())
    return tuple(dict.fromkeys(out)) or ("segment",)
