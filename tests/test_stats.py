"""Talk-time statistics (whispdiar/outputs/stats.py) on hand-built results whose numbers are known exactly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import models_installed

from whispdiar.errors import UsageError
from whispdiar.intervals import intersect, union
from whispdiar.outputs.stats import talk_time
from whispdiar.outputs.writers import render
from whispdiar.records import Result, Segment, Speaker, Turn, Word


def meeting() -> Result:
    """Anna 0-10, Bob 8-12 (2 s of overlap), Anna 12-20 and 21-25 (one turn: nobody else
    starts in between), Bob 30-31. Anna: 10 words + 1 without a speaker of its own
    (counted for its segment's speaker); Bob: 1 word inside Anna's segment + 3 words of a
    segment without word records; a speakerless segment counts for no one."""
    anna_words = [Word(f"w{i}", i * 2.0, i * 2.0 + 1.0, 0.9, "SPEAKER_00") for i in range(10)]
    anna_words.append(Word("and", 20.5, 20.8, 0.9, None))
    anna_words.append(Word("yes", 9.0, 9.5, 0.9, "SPEAKER_01"))  # Bob's, during the overlap
    return Result(
        audio="meeting.wav", duration=40.0, language="en",
        segments=[
            Segment(0.0, 25.0, "...", "SPEAKER_00", anna_words),
            Segment(30.0, 31.0, "one two three", "SPEAKER_01", []),
            Segment(35.0, 36.0, "x y", None, []),
        ],
        speakers=[Speaker("SPEAKER_00", "Anna", 0.9, 22.0), Speaker("SPEAKER_01", "Bob", 0.8, 5.0)],
        turns=[Turn(0, 10, "SPEAKER_00"), Turn(8, 12, "SPEAKER_01"), Turn(12, 20, "SPEAKER_00"),
               Turn(21, 25, "SPEAKER_00"), Turn(30, 31, "SPEAKER_01")],
    )


def test_interval_helpers() -> None:
    assert union([(5, 6), (0, 2), (1, 3), (4, 4)]) == [(0, 3), (5, 6)]
    assert intersect([(0, 3), (5, 6)], [(2, 5.5)]) == [(2, 3), (5, 5.5)]


def test_numbers_known_exactly() -> None:
    tt = talk_time(meeting())
    anna, bob = tt.speakers
    assert (anna.name, bob.name) == ("Anna", "Bob")
    assert anna.speech_seconds == 22 and bob.speech_seconds == 5
    assert anna.share == pytest.approx(22 / 27) and bob.share == pytest.approx(5 / 27)
    assert (anna.turns, bob.turns) == (2, 2)
    assert anna.longest_turn_seconds == 13  # 12 -> 25, the pause at 20-21 inside it
    assert bob.longest_turn_seconds == 4
    assert (anna.words, bob.words) == (11, 4)
    assert anna.words_per_minute == pytest.approx(11 / 22 * 60)
    assert bob.words_per_minute == pytest.approx(4 / 5 * 60)
    assert anna.overlap_seconds == 2 and bob.overlap_seconds == 2
    assert tt.speech_seconds == 25 and tt.overlap_seconds == 2 and tt.duration == 40


def test_overlap_counts_once_per_instant_with_three_speakers() -> None:
    r = Result("a.wav", 10.0, "en", [],
               speakers=[Speaker(x, x) for x in ("A", "B", "C")],
               turns=[Turn(0, 6, "A"), Turn(2, 4, "B"), Turn(3, 5, "C")])
    tt = talk_time(r)
    a, b, c = tt.speakers
    assert a.overlap_seconds == 3  # 2-5: B and/or C speak too
    assert b.overlap_seconds == 2 and c.overlap_seconds == 2
    assert tt.overlap_seconds == 3  # instants with two or more speakers: 2-5
    assert a.turns == 1 and a.longest_turn_seconds == 6  # A's single turn, B and C start inside it
    assert a.words == 0 and a.words_per_minute == 0


def test_segments_stand_in_for_missing_turns() -> None:
    r = Result("a.wav", 6.0, "en",
               [Segment(0, 5, "a b c d e", "A"), Segment(5, 6, "f", "B"), Segment(6, 6, "", "B")],
               speakers=[Speaker("A", "Speaker 1"), Speaker("B", "Speaker 2")])
    a, b = talk_time(r).speakers
    assert (a.speech_seconds, b.speech_seconds, a.words, b.words) == (5, 1, 5, 1)
    assert a.words_per_minute == 60 and b.words_per_minute == 60


def test_no_speech_has_no_rates() -> None:
    r = Result("a.wav", 3.0, None, [], speakers=[Speaker("A", "Speaker 1")])
    (a,) = talk_time(r).speakers
    assert a.speech_seconds == 0 and a.share is None and a.words_per_minute is None and a.turns == 0


def test_txt_header_line() -> None:
    lines = render(meeting(), "txt").splitlines()
    assert lines[0] == "# speakers: Anna 0.90, Bob 0.80"
    assert lines[1] == "# talk time: Anna 22.0 s (81 %), Bob 5.0 s (19 %); overlap 2.0 s"
    no_speakers = Result("a.wav", 3.0, "en", [Segment(0, 1, "hi")])
    assert render(no_speakers, "txt") == "[00:00.00] hi\n"


def test_stats_table_is_aligned() -> None:
    assert render(meeting(), "stats") == (
        "speaker  speech  share  turns  longest turn  words  wpm  overlap\n"
        "Anna     22.0 s   81 %      2        13.0 s     11   30    2.0 s\n"
        "Bob       5.0 s   19 %      2         4.0 s      4   48    2.0 s\n"
    )


def test_stats_tsv() -> None:
    rows = [line.split("\t") for line in render(meeting(), "stats-tsv").splitlines()]
    assert rows[0] == ["speaker", "speech_seconds", "share", "turns", "longest_turn_seconds", "words",
                       "words_per_minute", "overlap_seconds"]
    assert rows[1] == ["Anna", "22.000", "0.815", "2", "13.000", "11", "30.0", "2.000"]
    assert rows[2] == ["Bob", "5.000", "0.185", "2", "4.000", "4", "48.0", "2.000"]


def test_long_durations_in_minutes() -> None:
    r = Result("a.wav", 4000.0, "en", [], speakers=[Speaker("A", "Speaker 1")], turns=[Turn(0, 3725, "A")])
    assert "1:02:05" in render(r, "stats") and "# talk time: Speaker 1 1:02:05 (100 %)" in render(r, "txt")


def test_json_speaker_records() -> None:
    doc = json.loads(render(meeting(), "json"))
    anna = doc["speakers"][0]
    assert anna["name"] == "Anna" and anna["speech_seconds"] == 22.0
    assert {k: anna[k] for k in ("speech_share", "turns", "longest_turn_seconds", "words", "words_per_minute",
                                 "overlap_seconds")} == {
        "speech_share": 0.815, "turns": 2, "longest_turn_seconds": 13.0, "words": 11,
        "words_per_minute": 30.0, "overlap_seconds": 2.0}


@pytest.mark.skipif(not models_installed("tiny.en", "segmentation-3.0", "campplus"), reason="needs `make models`")
@pytest.mark.parametrize(("args", "message"), [
    (["--tsv"], "--tsv applies to -f stats"),
    (["-f", "txt", "--embed-audio"], "--embed-audio applies to -f html"),
])
def test_cli_option_without_its_format(args: list[str], message: str, data_dir: Path) -> None:
    p = subprocess.run([sys.executable, "-m", "whispdiar.cli", "transcribe", "-m", "tiny.en",
                        str(data_dir / "jfk.wav"), *args], capture_output=True, timeout=120)
    assert p.returncode == UsageError.exit_code
    assert p.stderr.decode().splitlines() == [f"whispdiar: error: {message}"] and p.stdout == b""
