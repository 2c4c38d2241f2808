"""The whisper.cpp ggml model file header: written by ``convert_whisper``, read by
``transcription`` (to name the model and pick its DTW alignment heads).

Layout: i32 magic ``ggml``; 10 × i32 hyper-parameters in the order of ``HParams``;
i32 ftype (1 = f16); then mel filters, vocabulary and tensors (see convert_whisper).
"""

from __future__ import annotations

import os
import struct
from dataclasses import astuple, dataclass, fields
from pathlib import Path

from .errors import ModelError

GGML_MAGIC = 0x67676D6C
GGML_F16 = 1


@dataclass(frozen=True, slots=True)
class HParams:
    n_vocab: int
    n_audio_ctx: int
    n_audio_state: int
    n_audio_head: int
    n_audio_layer: int
    n_text_ctx: int
    n_text_state: int
    n_text_head: int
    n_text_layer: int
    n_mels: int

    def values(self) -> tuple[int, ...]:
        """The ten header integers, in file order."""
        return astuple(self)[: len(fields(HParams))]

    @property
    def multilingual(self) -> bool:
        return self.n_vocab >= 51865  # whisper.cpp's own test

    @property
    def n_base_tokens(self) -> int:
        # whisper.cpp puts <|endoftext|> at 50256 (English-only) or 50257 (multilingual)
        # and names every id from there on itself; the file carries the ids below it.
        return 50257 if self.multilingual else 50256

    @property
    def size(self) -> str:
        """OpenAI model size guessed from the shape ("tiny", "base", ..., "large-v3")."""
        by_layers = {4: "tiny", 6: "base", 12: "small", 24: "medium", 32: "large"}
        name = by_layers.get(self.n_audio_layer, "custom")
        if name == "large":
            if self.n_text_layer == 4:
                return "large-v3-turbo"
            return "large-v3" if self.n_mels == 128 else "large-v2"
        return name

    @property
    def name(self) -> str:
        s = self.size
        return s if self.multilingual or s.startswith("large") or s == "custom" else f"{s}.en"


@dataclass(frozen=True, slots=True)
class WhisperHeader(HParams):
    ftype: int


def read_header(path: str | os.PathLike[str]) -> WhisperHeader:
    """Hyper-parameters from a ggml whisper file; ModelError if it is not one."""
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"{p}: whisper model not found")
    with p.open("rb") as f:
        raw = f.read(48)
    if len(raw) < 48 or struct.unpack("<i", raw[:4])[0] != GGML_MAGIC:
        raise ModelError(f"{p}: not a whisper.cpp ggml model file")
    return WhisperHeader(*struct.unpack("<11i", raw[4:48]))
