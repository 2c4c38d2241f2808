"""RTTM writing and parsing."""

from __future__ import annotations

from pathlib import Path

import pytest

from whispdiar.outputs.rttm import format_rttm, parse_rttm
from whispdiar.records import Turn


def test_round_trip():
    turns = [Turn(0.5, 1.25, "SPEAKER_00"), Turn(1.0, 3.0, "SPEAKER_01"), Turn(4.0, 4.5, "SPEAKER_00")]
    text = format_rttm(turns, "meeting one")
    assert text.splitlines()[0] == "SPEAKER meeting_one 1 0.500 0.750 <NA> <NA> SPEAKER_00 <NA> <NA>"
    parsed = parse_rttm(text)
    assert list(parsed) == ["meeting_one"]
    back = parsed["meeting_one"]
    assert [(t.speaker, round(t.start, 3), round(t.end, 3)) for t in back] == [
        (t.speaker, t.start, t.end) for t in turns
    ]


def test_sorted_and_empty():
    assert format_rttm([], "x") == ""
    assert parse_rttm("") == {}
    text = format_rttm([Turn(2, 3, "B"), Turn(1, 2, "A")], "x")
    assert [t.speaker for t in parse_rttm(text)["x"]] == ["A", "B"]


def test_parses_reference_files_with_comments_and_unicode(data_dir: Path):
    text = ";; comment\n\nSPKR-INFO x 1 <NA> <NA> <NA> unknown MÉO069 <NA>\n" + \
        "SPEAKER trn00 1 3.168 0.800 <NA> <NA> MÉO069 <NA> <NA>\n"
    assert parse_rttm(text) == {"trn00": [Turn(3.168, 3.968, "MÉO069")]}
    ref = parse_rttm((data_dir / "diar_sample.rttm").read_text())
    assert {t.speaker for t in ref["diar_sample"]} == {"speaker90", "speaker91"}


@pytest.mark.parametrize("line", ["SPEAKER x 1 abc 1.0 <NA> <NA> A", "SPEAKER x 1 1.0", "SPEAKER x 1 1 -2 <NA> <NA> A"])
def test_malformed_lines_raise(line: str):
    with pytest.raises(ValueError, match="line 1"):
        parse_rttm(line)
