"""Enroll a speaker from a result: ``enroll Bob --from meeting.json --speaker "Speaker 2"``.

The speaker is picked by shown name ("Speaker 2", "Unknown 1") or diarization label
(SPEAKER_01). Their voiceprint is made from the stretches of their turns where nobody
else speaks, each at least ``MIN_STRETCH_SECONDS`` long (overlap and short fragments,
often boundary errors or another voice's backchannel, are left out), embedded exactly as
``enroll`` embeds a sample (``voiceprints.embed_speech``: fbank + CAM++ per ~5 s), and
stored with the same all-or-nothing rule and minimum (``VoiceprintStore.add_samples``).

A JSON result records its audio (``source``: absolute path, size, SHA-256, channel).
The audio is looked for there, then next to the JSON under its file name (the two moved
together), or where ``--audio`` says; its size and SHA-256 must match, so a moved,
edited or re-encoded file is an error and never a wrong voiceprint. An RTTM has no
fingerprint: ``--audio`` is required and trusted.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..audio import read as audio
from ..errors import InputNotFound, UsageError, VoiceprintError
from ..records import AudioSource, Turn
from .naming import is_anonymous_name
from .source import fingerprint, from_json
from .spans import seconds, solo_spans

if TYPE_CHECKING:
    from ..diarization.diarizer import Diarizer
    from .store import VoiceprintStore

MIN_STRETCH_SECONDS = 1.0  # shorter single-speaker stretches are left out


@dataclass(frozen=True, slots=True)
class ResultSpeaker:
    label: str  # SPEAKER_01
    name: str  # shown name: "Speaker 2", "Jan", "Unknown 1"
    enrolled: bool = False  # recognised from the database when the result was made


@dataclass(slots=True)
class LoadedResult:
    """A result file read back: its speakers and turns (speaker = label), and its audio."""

    path: Path
    speakers: list[ResultSpeaker]
    turns: list[Turn]
    source: AudioSource | None = None  # None for RTTM / results without a fingerprint
    kind: str = "json"

    def find(self, which: str) -> ResultSpeaker:
        w = which.strip().casefold()
        for s in self.speakers:
            if w in (s.label.casefold(), s.name.casefold()):
                return s
        listed = ", ".join(s.name if s.name == s.label else f"{s.name} ({s.label})" for s in self.speakers)
        raise VoiceprintError(f"no speaker '{which.strip()}' in {self.path} (speakers: {listed or 'none'})")


@dataclass(slots=True)
class FromResult:
    """What ``enroll_from_result`` stored."""

    name: str
    speaker: ResultSpeaker
    audio: Path
    speech_seconds: float  # clean speech used
    stretches: int
    left_out_seconds: float  # the speaker's speech left out (overlapped or in short stretches)
    embeddings: int
    stored_before: float
    warnings: list[str] = field(default_factory=list)

    @property
    def total_seconds(self) -> float:
        return self.stored_before + self.speech_seconds


def load_result(path: str | os.PathLike[str]) -> LoadedResult:
    """Read a whispdiar JSON result or an RTTM file (VoiceprintError for anything else)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputNotFound(f"{p}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise VoiceprintError(f"{p}: cannot read ({getattr(e, 'strerror', None) or e})") from None
    if p.suffix.lower() == ".rttm":
        return _load_rttm(p, text)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise VoiceprintError(f"{p}: not a JSON result ({e.msg} at line {e.lineno}); "
                              "give a `-f json` result or an .rttm file") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("speakers"), list) or "turns" not in doc:
        raise VoiceprintError(f"{p}: not a whispdiar JSON result (no 'speakers' and 'turns'; "
                              "json-compact has no turns: use -f json)")
    try:
        speakers = [ResultSpeaker(str(s["label"]), str(s["name"]), bool(s.get("enrolled", False)))
                    for s in doc["speakers"]]
        by_name = {s.name: s.label for s in speakers}
        turns = [Turn(float(t["start"]), float(t["end"]), by_name.get(t["speaker"], str(t["speaker"])))
                 for t in doc["turns"]]
        source = from_json(doc.get("source"))
    except (KeyError, TypeError, ValueError) as e:
        raise VoiceprintError(f"{p}: malformed JSON result ({e})") from None
    if not speakers or not turns:
        raise VoiceprintError(f"{p}: has no speaker turns (transcribed with --no-diarize?)")
    return LoadedResult(p, speakers, turns, source)


def _load_rttm(p: Path, text: str) -> LoadedResult:
    from ..outputs.rttm import parse_rttm

    try:
        by_uri = parse_rttm(text)
    except ValueError as e:
        raise VoiceprintError(f"{p}: {e}") from None
    if len(by_uri) != 1:
        raise VoiceprintError(f"{p}: holds {len(by_uri)} recordings (uris); enroll needs an RTTM of one")
    (turns,) = by_uri.values()
    labels = list(dict.fromkeys(t.speaker for t in turns))
    return LoadedResult(p, [ResultSpeaker(x, x) for x in labels], turns, None, "rttm")


def locate_audio(result: LoadedResult, audio_path: str | os.PathLike[str] | None) -> Path:
    """The result's audio file, checked against its fingerprint (one-line errors otherwise)."""
    src = result.source
    if audio_path is not None:
        candidate = Path(audio_path)
        if not candidate.is_file():
            raise InputNotFound(f"{candidate}: no such audio file")
    elif src is None:
        what = "an RTTM file does not say" if result.kind == "rttm" else "the result does not record it"
        raise UsageError(f"{result.path}: which audio? {what}: give it with --audio")
    else:
        recorded = Path(src.path)
        beside = result.path.parent / recorded.name  # moved together with the result
        candidate = recorded if recorded.is_file() else beside
        if not candidate.is_file():
            raise InputNotFound(f"{result.path}: its audio {recorded} is missing (moved or deleted?); "
                                "give its new place with --audio")
    changed = src is not None and (candidate.stat().st_size != src.size
                                   or fingerprint(candidate).sha256 != src.sha256)
    if changed:
        raise VoiceprintError(f"{candidate} is not the audio {result.path} was made from "
                              "(its size or SHA-256 differs: changed since?); transcribe it again")
    return candidate


def enroll_from_result(
    store: VoiceprintStore,
    name: str,
    result_path: str | os.PathLike[str],
    speaker: str,
    *,
    diarizer: Diarizer,
    audio_path: str | os.PathLike[str] | None = None,
    channel: int | None = None,
    min_stretch: float = MIN_STRETCH_SECONDS,
) -> FromResult:
    """Enroll ``name`` from ``speaker``'s clean stretches in a result: all or nothing."""
    from .store import MIN_SPEECH_SECONDS, NotEnoughSpeech, Sample, check_name, embed_speech, embedding_model_id

    name = check_name(name)
    result = load_result(result_path)
    who = result.find(speaker)
    if who.enrolled and who.name.casefold() != name.casefold():
        remembered = is_anonymous_name(who.name)
        # A remembered voice renamed or forgotten since the result was made is no obstacle.
        if not remembered or any(s.anonymous and s.name.casefold() == who.name.casefold() for s in store.speakers()):
            hint = (f"name it with: whispdiar speakers rename '{who.name}' '{name}'" if remembered
                    else "enrolling that voice as another person would mix two voices")
            raise VoiceprintError(f"'{who.name}' in {result.path} was recognised from the speaker database; {hint}")
    wav = locate_audio(result, audio_path)
    stretches, left_out = solo_spans(result.turns, who.label, min_stretch)
    clean = seconds(stretches)
    if clean <= 0:
        raise VoiceprintError(f"'{who.name}' in {result.path} has no single-speaker stretch of "
                              f"{min_stretch:g} s or more: nothing enrolled")
    if channel is None and result.source is not None:
        channel = result.source.channel
    x = audio.load(wav, channel=channel)  # any format, decoded in-process
    duration = len(x) / 16000
    if stretches[-1][1] > duration + 0.5:
        raise VoiceprintError(f"{wav} is {duration:.1f} s long but {result.path} has turns up to "
                              f"{stretches[-1][1]:.1f} s: not the audio of that result")
    try:
        emb = embed_speech(diarizer, x, stretches)
    except VoiceprintError:
        raise VoiceprintError(f"'{who.name}' in {result.path}: only {clean:.1f} s of clean speech, in pieces "
                              "too short to embed: nothing enrolled") from None
    sample = Sample(f"{wav} ({who.name})", str(wav.resolve()), clean, emb, 1)
    try:
        added = store.add_samples(name, [sample], model_id=embedding_model_id(diarizer),
                                  min_speech_seconds=MIN_SPEECH_SECONDS)
    except NotEnoughSpeech as e:
        raise NotEnoughSpeech(f"{e} ('{who.name}' has {clean:.1f} s of single-speaker speech in stretches of "
                              f"{min_stretch:g} s or more; {left_out:.1f} s overlapped or shorter left out)") from None
    return FromResult(name, who, wav, clean, len(stretches), left_out, len(emb), added.stored_before)
