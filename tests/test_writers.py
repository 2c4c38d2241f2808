"""Writers: syntax of every format, rendered from one hand-made Result."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from whispdiar.errors import OutputError, UsageError
from whispdiar.outputs.rttm import parse_rttm
from whispdiar.outputs.writers import FORMATS, CueLimits, get_writer, make_cues, render, write_atomic
from whispdiar.records import Result, Segment, Speaker, Timings, Turn, Word

SRT_TIME = r"\d{2}:\d{2}:\d{2},\d{3}"
VTT_TIME = r"\d{2}:\d{2}:\d{2}\.\d{3}"


def words_of(text: str, start: float, step: float = 0.3, speaker: str | None = None) -> list[Word]:
    return [Word(t, start + i * step, start + i * step + step * 0.8, 0.9, speaker) for i, t in enumerate(text.split())]


def make_result() -> Result:
    long = ("this is a rather long monologue that goes on and on so that the subtitle writer "
            "has to split it into several readable cues of limited length")
    segs = [
        Segment(5.2, 6.4, "Hello there, Anna.", "SPEAKER_01",
                words_of("Hello there, Anna.", 5.2, speaker="SPEAKER_01")),
        Segment(7.0, 7.9, "Hi <Jan> & co.", "SPEAKER_00", words_of("Hi <Jan> & co.", 7.0, speaker="SPEAKER_00")),
        Segment(8.0, 8.0 + 0.3 * len(long.split()), long, "SPEAKER_01", words_of(long, 8.0, speaker="SPEAKER_01")),
        Segment(40.0, 42.0, "no word times here", None, []),
    ]
    return Result(
        audio="/data/meeting one.wav",
        duration=3723.4567,
        language="en",
        segments=segs,
        speakers=[
            Speaker("SPEAKER_01", "Speaker 1", 0.81234, 20.5),
            Speaker("SPEAKER_00", "Jan Novák", 0.734, 1.2, enrolled=True),
        ],
        turns=[Turn(5.1, 6.5, "SPEAKER_01"), Turn(6.9, 8.0, "SPEAKER_00"), Turn(7.9, 25.0, "SPEAKER_01")],
        models={"whisper": "base", "segmentation": "segmentation-3.0.onnx"},
        timings=Timings(asr=1.23456, diarization=0.5, total=1.9),
    )


def parse_ts(s: str) -> float:
    h, m, rest = s.replace(",", ".").split(":")
    return int(h) * 3600 + int(m) * 60 + float(rest)


def test_formats_registry():
    assert set(FORMATS) == {"txt", "json", "json-compact", "srt", "vtt", "rttm", "tsv", "stats", "stats-tsv", "html"}
    with pytest.raises(UsageError):
        get_writer("docx")


def test_txt_one_line_per_turn_with_clock_and_name():
    lines = render(make_result(), "txt").splitlines()
    assert lines[0] == "# speakers: Speaker 1 0.81, Jan Novák 0.73"  # each speaker's confidence
    assert lines[1] == "# talk time: Speaker 1 18.5 s (94 %), Jan Novák 1.1 s (6 %); overlap 0.1 s"  # stats.py
    lines = lines[2:]
    assert lines[0] == "[00:05.20] Speaker 1: Hello there, Anna."
    assert lines[1] == "[00:07.00] Jan Novák: Hi <Jan> & co."
    assert lines[3] == "[00:40.00] no word times here"  # unknown speaker: no name
    assert all(re.match(r"^\[\d{2}:\d{2}\.\d{2}\] ", line) for line in lines)


def test_txt_hours():
    r = make_result()
    r.segments = [Segment(3725.5, 3726.0, "late", None, [])]
    assert render(r, "txt").splitlines()[2:] == ["[1:02:05.50] late"]
    r.speakers = []  # no diarization: no speakers line
    assert render(r, "txt") == "[1:02:05.50] late\n"


def test_json_schema():
    doc = json.loads(render(make_result(), "json"))
    assert set(doc) == {"version", "audio", "source", "duration", "language", "models", "timings", "speakers",
                        "segments", "turns"}
    assert doc["source"] is None  # no file behind this result (tests/test_speakers.py checks a real one)
    assert doc["duration"] == 3723.457 and doc["language"] == "en"
    assert doc["timings"] == {"asr": 1.235, "diarization": 0.5, "total": 1.9}
    sp = doc["speakers"][0]
    assert {k: v for k, v in sp.items() if k in ("label", "name", "confidence", "speech_seconds", "enrolled")} == {
        "label": "SPEAKER_01", "name": "Speaker 1", "confidence": 0.812, "speech_seconds": 20.5, "enrolled": False}
    assert set(sp) - {"label", "name", "confidence", "speech_seconds", "enrolled"} == {  # talk time (test_stats.py)
        "speech_share", "turns", "longest_turn_seconds", "words", "words_per_minute", "overlap_seconds"}
    seg = doc["segments"][0]
    assert set(seg) == {"start", "end", "speaker", "text", "words"}
    assert seg["speaker"] == "Speaker 1"
    w = seg["words"][0]
    assert set(w) == {"text", "start", "end", "speaker", "probability"}
    assert doc["segments"][3]["speaker"] is None and doc["segments"][3]["words"] == []
    assert doc["turns"][1] == {"start": 6.9, "end": 8.0, "speaker": "Jan Novák"}
    # every time is a number with at most 3 decimals
    for s in doc["segments"]:
        for x in [s["start"], s["end"], *[v for w in s["words"] for v in (w["start"], w["end"])]]:
            assert isinstance(x, float | int) and round(x, 3) == x


def test_json_compact_schema_rounding_and_roster():
    r = make_result()
    r.segments[1].words[0].speaker = "SPEAKER_01"  # a word attributed across the overlap
    text = render(r, "json-compact")
    assert "\n" not in text.rstrip("\n") and ": " not in text.replace('": "', "")  # one line, no padding
    doc = json.loads(text)
    assert list(doc) == ["format", "version", "audio", "language", "duration", "speakers", "segments"]
    assert (doc["format"], doc["version"], doc["duration"]) == ("whispdiar-compact", 1, 3723.46)
    # The roster once, in the order of first appearance; short keys in the segments.
    assert doc["speakers"] == {"S1": {"name": "Speaker 1", "confidence": 0.81},
                               "S2": {"name": "Jan Novák", "confidence": 0.73}}
    first, second, _, bare = doc["segments"]
    assert first["t"] == [5.2, 6.4] and first["s"] == "S1" and first["text"] == "Hello there, Anna."
    assert first["w"][1] == {"t": [5.5, 5.74], "text": "there,"}  # 5.2 + 0.3 .. + 0.24
    assert second["s"] == "S2" and second["w"][0]["s"] == "S1" and "s" not in second["w"][1]
    assert bare == {"t": [40.0, 42.0], "text": "no word times here"}  # no speaker, no words: no keys
    for seg in doc["segments"]:
        for x in [*seg["t"], *[v for w in seg.get("w", []) for v in w["t"]]]:
            assert round(x, 2) == x
    # --no-words: no "w" at all (and no "words" in the full JSON); nothing else changes.
    lean = json.loads(render(r, "json-compact", words=False))
    assert all("w" not in seg for seg in lean["segments"])
    assert [dict(seg, w=None) for seg in lean["segments"]] == [
        dict({k: v for k, v in seg.items() if k != "w"}, w=None) for seg in doc["segments"]]
    assert all("words" not in seg for seg in json.loads(render(r, "json", words=False))["segments"])
    assert len(text) < len(render(r, "json")) / 2


def test_srt_syntax_and_readability():
    text = render(make_result(), "srt")
    blocks = text.strip("\n").split("\n\n")
    prev_end = 0.0
    for i, b in enumerate(blocks, 1):
        lines = b.split("\n")
        assert lines[0] == str(i)
        m = re.fullmatch(f"({SRT_TIME}) --> ({SRT_TIME})", lines[1])
        assert m, lines[1]
        start, end = parse_ts(m.group(1)), parse_ts(m.group(2))
        assert start < end and start >= prev_end - 1e-9
        assert end - start <= CueLimits().max_seconds + 1e-6
        prev_end = end
        assert 1 <= len(lines[2:]) <= 2
        assert all(0 < len(x) <= 42 for x in lines[2:])
    assert "Speaker 1: Hello there, Anna." in text
    assert "Jan Novák: Hi <Jan> & co." in text
    assert len(blocks) > 4  # the monologue was split


def test_vtt_syntax_voice_tags_and_escaping():
    text = render(make_result(), "vtt")
    assert text.startswith("WEBVTT\n\nNOTE speakers: Speaker 1 0.81, Jan Novák 0.73\n\n")
    blocks = text.strip("\n").split("\n\n")[2:]
    for b in blocks:
        lines = b.split("\n")
        assert re.fullmatch(f"{VTT_TIME} --> {VTT_TIME}", lines[0])
        assert "-->" not in "".join(lines[1:])
    assert "<v Speaker 1>Hello there, Anna." in text
    assert "<v Jan Novák>Hi &lt;Jan&gt; &amp; co." in text
    assert "\n00:00:40.000 --> 00:00:42.000\nno word times here" in text


def test_rttm_round_trip_with_names():
    text = render(make_result(), "rttm")
    turns = parse_rttm(text)["meeting_one"]
    assert [(t.start, t.speaker) for t in turns] == [(5.1, "Speaker_1"), (6.9, "Jan_Novák"), (7.9, "Speaker_1")]
    assert all(len(line.split()) == 10 for line in text.splitlines())
    assert [line.split()[8] for line in text.splitlines()] == ["0.812", "0.734", "0.812"]  # confidence field


def test_rttm_without_diarization_uses_segments():
    r = make_result()
    r.turns, r.speakers = [], []
    turns = parse_rttm(render(r, "rttm"))["meeting_one"]
    assert len(turns) == 4


def test_tsv():
    lines = render(make_result(), "tsv").splitlines()
    assert lines[0] == "start\tend\tspeaker\ttext\tconfidence"
    assert lines[1] == "5.200\t6.400\tSpeaker 1\tHello there, Anna.\t0.812"
    assert lines[-1] == "40.000\t42.000\t\tno word times here\t"
    assert all(len(x.split("\t")) == 5 for x in lines)


def test_empty_result_renders_everywhere():
    r = Result("x.wav", 1.0, None, [])
    for fmt in FORMATS:
        out = render(r, fmt)
        assert isinstance(out, str)
    assert render(r, "vtt") == "WEBVTT\n"
    assert json.loads(render(r, "json"))["segments"] == []


def test_write_atomic(tmp_path: Path):
    p = tmp_path / "out.srt"
    write_atomic(p, "one")
    write_atomic(p, "two")
    assert p.read_text() == "two"
    assert [x.name for x in tmp_path.iterdir()] == ["out.srt"]  # no temp files left
    with pytest.raises(OutputError):
        write_atomic(tmp_path / "missing" / "out.srt", "x")


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 100), st.floats(0, 8), st.integers(1, 40), st.sampled_from(["A", "B", None])),
                max_size=8))
def test_property_cues_are_ordered_non_overlapping_and_positive(specs):
    segs = []
    for start, dur, n, spk in sorted(specs, key=lambda x: (x[0], x[1])):
        text = " ".join(f"w{i}" for i in range(n))
        step = dur / n
        segs.append(Segment(start, start + dur, text, spk, words_of(text, start, step, spk) if dur > 0 else []))
    r = Result("a.wav", 200.0, "en", segs, [Speaker("A", "Speaker 1"), Speaker("B", "Speaker 2")])
    cues = make_cues(r)
    for a, b in zip(cues, cues[1:], strict=False):
        assert a.end <= b.start + 1e-9
    for c in cues:
        assert c.end > c.start
    srt = render(r, "srt")
    assert all(re.fullmatch(f"{SRT_TIME} --> {SRT_TIME}", x) for x in srt.splitlines() if "-->" in x)
