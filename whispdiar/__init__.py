"""whispdiar: who said what, when — offline transcription with named speakers.

    import whispdiar
    result = whispdiar.transcribe("meeting.wav")          # -> whispdiar.Result
    for seg in result.segments:
        print(seg.start, result.speaker_name(seg.speaker), seg.text)

For many files, build one ``whispdiar.Pipeline`` and call ``.run(path)`` per file.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .cancel import Cancelled
from .records import Result, Segment, Speaker, Turn, Word

if TYPE_CHECKING:
    from .diarization.diarizer import Diarizer
    from .pipeline import Pipeline, transcribe

__all__ = ["Cancelled", "Diarizer", "Pipeline", "Result", "Segment", "Speaker", "Turn", "Word", "transcribe"]


def __getattr__(name: str) -> Any:
    # Imported on first use: `whispdiar models ...` should not pay for loading whisper.cpp.
    if name in ("Pipeline", "transcribe"):
        from . import pipeline

        return getattr(pipeline, name)
    if name == "Diarizer":
        from .diarization.diarizer import Diarizer

        return Diarizer
    raise AttributeError(f"module 'whispdiar' has no attribute {name!r}")
