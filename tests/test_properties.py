"""Property tests (Hypothesis): the loader, RTTM, and the word alignment + writers.

- random bytes given as audio never crash: the loader returns audio or a WhispdiarError
- any PCM signal at any rate/channel count decodes to the expected 16 kHz length
- RTTM output round-trips for any set of turns
- alignment/writers (when whispdiar.alignment / whispdiar.outputs.writers exist): every timed word
  gets at most one speaker, cues are monotonic and non-overlapping, SRT/VTT are valid
"""

from __future__ import annotations

import io
import math
import re
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from whispdiar.audio import read as audio
from whispdiar.errors import NoAudio, WhispdiarError
from whispdiar.outputs.rttm import format_rttm, parse_rttm
from whispdiar.records import Turn

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


# --------------------------------------------------------------------------- loader
def _valid_wav_prefix() -> bytes:
    buf = io.BytesIO()
    sf.write(buf, np.zeros(800, np.float32), 8000, format="WAV", subtype="PCM_16")
    return buf.getvalue()[:44]


@FAST
@given(data=st.one_of(st.binary(max_size=2048),
                      # a plausible header followed by junk: gets past format detection
                      st.binary(max_size=2048).map(lambda b: _valid_wav_prefix() + b),
                      st.binary(max_size=2048).map(lambda b: b"fLaC" + b),
                      st.binary(max_size=2048).map(lambda b: b"OggS" + b),
                      st.binary(max_size=2048).map(lambda b: b"ID3" + b)),
       ext=st.sampled_from(["wav", "flac", "ogg", "mp3", "m4a", ""]))
def test_random_bytes_never_crash_the_loader(data: bytes, ext: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / (f"x.{ext}" if ext else "x")
        p.write_bytes(data)
        try:
            audio.check(p)
            for block in audio.stream(p, block_seconds=0.5):
                assert block.dtype == np.float32 and block.ndim == 1
                assert np.isfinite(block).all()
        except WhispdiarError as e:
            assert "\n" not in str(e)


@settings(max_examples=40, deadline=None)
@given(rate=st.sampled_from([8000, 11025, 16000, 22050, 44100, 48000, 96000]),
       channels=st.integers(1, 4),
       frames=st.integers(1, 30000),
       subtype=st.sampled_from(["PCM_16", "PCM_24", "FLOAT"]),
       block=st.floats(0.05, 2.0))
def test_any_pcm_decodes_to_expected_length(rate: int, channels: int, frames: int, subtype: str,
                                            block: float) -> None:
    x = np.random.default_rng(frames).uniform(-0.9, 0.9, (frames, channels)).astype(np.float32)
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "x.wav"
        sf.write(p, x, rate, subtype=subtype)
        expected = frames * audio.SAMPLE_RATE / rate
        try:
            blocks = list(audio.stream(p, block_seconds=block))
        except NoAudio:
            assert expected < 2, "only a file shorter than one 16 kHz sample may come out empty"
            return
    n = sum(len(b) for b in blocks)
    assert abs(n - expected) <= 2
    assert all(b.dtype == np.float32 and np.isfinite(b).all() for b in blocks)


# --------------------------------------------------------------------------- RTTM
times = st.floats(0, 20000, allow_nan=False, allow_infinity=False)
labels = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=12)


@st.composite
def turn_lists(draw: st.DrawFn) -> list[Turn]:
    out = []
    for _ in range(draw(st.integers(0, 30))):
        a, b = sorted((draw(times), draw(times)))
        out.append(Turn(a, b, draw(labels)))
    return out


@FAST
@given(turns=turn_lists(), uri=labels)
def test_rttm_round_trip(turns: list[Turn], uri: str) -> None:
    text = format_rttm(turns, uri)
    parsed = parse_rttm(text)
    got = [t for ts in parsed.values() for t in ts]
    assert len(got) == len(turns)
    assert len(parsed) <= 1
    expected = sorted(turns, key=lambda t: (t.start, t.end, t.speaker))
    for g, t in zip(got, expected, strict=True):
        assert g.start == pytest.approx(t.start, abs=1e-3)
        assert g.duration == pytest.approx(t.duration, abs=2e-3)
        assert " " not in g.speaker and g.speaker


# --------------------------------------------------------------------------- alignment + writers
SRT_TIME = r"\d{2}:\d{2}:\d{2},\d{3}"
VTT_TIME = r"(?:\d{2,}:)?\d{2}:\d{2}\.\d{3}"


def srt_seconds(s: str) -> float:
    h, m, rest = s.split(":")
    sec, ms = rest.split(",")
    return int(h) * 3600 + int(m) * 60 + int(sec) + int(ms) / 1000


def vtt_seconds(s: str) -> float:
    parts = s.split(":")
    sec, ms = parts[-1].split(".")
    h = int(parts[0]) if len(parts) == 3 else 0
    return h * 3600 + int(parts[-2]) * 60 + int(sec) + int(ms) / 1000


def check_srt(text: str) -> list[tuple[float, float]]:
    """Strict SRT: numbered blocks from 1, 'a --> b' with a <= b, non-empty text, blank-line separated."""
    cues = []
    blocks = [b for b in text.replace("\r\n", "\n").split("\n\n") if b.strip()]
    for i, b in enumerate(blocks, 1):
        lines = b.strip("\n").split("\n")
        assert lines[0] == str(i), f"cue number {lines[0]!r}, expected {i}"
        m = re.fullmatch(rf"({SRT_TIME}) --> ({SRT_TIME})", lines[1])
        assert m, f"bad timing line {lines[1]!r}"
        a, z = srt_seconds(m.group(1)), srt_seconds(m.group(2))
        assert a <= z
        assert len(lines) >= 3 and all(ln.strip() for ln in lines[2:]), f"empty cue text in {b!r}"
        cues.append((a, z))
    return cues


def check_vtt(text: str) -> list[tuple[float, float]]:
    assert text.startswith("WEBVTT"), text[:20]
    cues = []
    for b in [b for b in text.split("\n\n")[1:] if b.strip()]:
        lines = b.strip("\n").split("\n")
        if lines[0].startswith("NOTE"):  # a comment block: must not hold "-->"
            assert "-->" not in b
            continue
        timing = next(i for i, ln in enumerate(lines) if "-->" in ln)
        m = re.match(rf"({VTT_TIME}) --> ({VTT_TIME})", lines[timing])
        assert m, f"bad timing line {lines[timing]!r}"
        assert "-->" not in "\n".join(lines[timing + 1 :])
        a, z = vtt_seconds(m.group(1)), vtt_seconds(m.group(2))
        assert a <= z
        assert len(lines) > timing + 1 and all(ln.strip() for ln in lines[timing + 1 :])
        cues.append((a, z))
    return cues


def assert_monotonic_non_overlapping(cues: list[tuple[float, float]]) -> None:
    for (a0, z0), (a1, _z1) in zip(cues, cues[1:], strict=False):
        assert a0 <= a1, f"cues out of order: {a0} then {a1}"
        assert z0 <= a1 + 1e-9, f"cues overlap: ends {z0}, next starts {a1}"


def test_srt_vtt_checkers_catch_bad_output() -> None:
    """The validators above must reject broken files, or the properties prove nothing."""
    good = "1\n00:00:01,000 --> 00:00:02,000\nhi\n\n2\n00:00:02,000 --> 00:00:03,500\nthere\n"
    assert_monotonic_non_overlapping(check_srt(good))
    for bad in ("1\n00:00:01,000 -> 00:00:02,000\nhi\n", "2\n00:00:01,000 --> 00:00:02,000\nhi\n",
                "1\n00:00:01,000 --> 00:00:02,000\n\n"):
        with pytest.raises(AssertionError):
            check_srt(bad)
    with pytest.raises(AssertionError):
        assert_monotonic_non_overlapping([(0, 2), (1, 3)])
    assert check_vtt("WEBVTT\n\n00:01.000 --> 00:02.000\nhi\n") == [(1.0, 2.0)]
    assert math.isclose(vtt_seconds("01:00:00.500"), 3600.5)


# --------------------------------------------------------------------------- alignment
SPEAKERS = ["SPEAKER_00", "SPEAKER_01", "SPEAKER_02"]


@st.composite
def turns_strategy(draw: st.DrawFn, exclusive: bool = False) -> list[Turn]:
    out: list[Turn] = []
    t = draw(st.floats(0, 5))
    for _ in range(draw(st.integers(0, 12))):
        if exclusive:
            t += draw(st.floats(0, 3))
            start, t = t, t + draw(st.floats(0.01, 8))
            end = t
        else:
            start = draw(st.floats(0, 60))
            end = start + draw(st.floats(0, 8))
        out.append(Turn(start, end, draw(st.sampled_from(SPEAKERS))))
    return out


@st.composite
def segments_strategy(draw: st.DrawFn) -> list:
    from whispdiar.records import Segment, Word

    words_text = st.sampled_from(["so", "we", "ship", "it.", "Yes?", "no!", "ok,", "我们", "—", "'quoted'"])
    t = draw(st.floats(0, 3))
    segments = []
    for _ in range(draw(st.integers(0, 6))):
        words = []
        seg_start = t
        for _ in range(draw(st.integers(0, 12))):
            if draw(st.integers(0, 7)) == 0:  # whisper sometimes gives no timing
                words.append(Word(draw(words_text), None, None))
                continue
            t += draw(st.floats(0, 1.5))
            dur = draw(st.floats(0, 1.2))
            words.append(Word(draw(words_text), t, t + dur, draw(st.floats(0, 1))))
            t += dur
        seg_end = max(t, seg_start + draw(st.floats(0, 2)))
        segments.append(Segment(seg_start, seg_end, " ".join(w.text for w in words), None, words))
        t = seg_end
    return segments


def _timed(w) -> bool:  # noqa: ANN001 - records.Word
    return w.start is not None and w.end is not None


def _alignment():  # noqa: ANN202
    return pytest.importorskip("whispdiar.alignment", reason="whispdiar/alignment.py not written yet")


@settings(max_examples=200, deadline=None)
@given(segments=segments_strategy(), turns=turns_strategy(exclusive=True), overlapped=turns_strategy())
def test_alignment_every_word_one_known_speaker(segments: list, turns: list[Turn], overlapped: list[Turn]) -> None:
    al = _alignment()
    before = [[(w.text, w.start, w.end) for w in s.words] for s in segments]
    out = al.align(segments, turns, overlapped=overlapped or None)
    # Inputs untouched.
    assert [[(w.text, w.start, w.end) for w in s.words] for s in segments] == before
    known = {t.speaker for t in turns if t.end > t.start}
    words_in = [(w.text, w.start, w.end) for s in segments for w in s.words]
    words_out = [(w.text, w.start, w.end) for s in out for w in s.words]
    assert words_out == words_in  # every word comes out exactly once, in order
    for s in out:
        assert s.speaker is None or s.speaker in known, f"invented speaker {s.speaker}"
        for w in s.words:
            # One speaker per word: the segment's; never one the diarization did not produce.
            assert w.speaker == s.speaker or not any(_timed(x) for x in s.words)
            assert w.speaker is None or w.speaker in known
        assert s.start <= s.end
    # Timed words come out in time order and segments with timed words do not overlap.
    timed_out = [w for s in out for w in s.words if _timed(w)]
    assert all(a.start <= b.start for a, b in zip(timed_out, timed_out[1:], strict=False))


def _seg(start, end, text, speaker, words):  # noqa: ANN001, ANN202
    from whispdiar.records import Segment

    return Segment(start, end, text, speaker, words)


def _w(text, start=None, end=None, speaker=None):  # noqa: ANN001, ANN202
    from whispdiar.records import Word

    return Word(text, start, end, None, speaker)


@settings(max_examples=200, deadline=None)
@given(segments=segments_strategy(), turns=turns_strategy(exclusive=True))
# Found by Hypothesis: a timed word far from any turn, then untimed words (segment fallback speaker).
@example(segments=[_seg(1.0, 2.0, "so so", None, [_w("so", 2.0, 2.0), _w("so")])],
         turns=[Turn(0.0, 1.0, "SPEAKER_00")])
def test_alignment_segments_monotonic_non_overlapping(segments: list, turns: list[Turn]) -> None:
    """Segments (the future cues) follow each other in time without overlap, given monotonic words."""
    out = _alignment().align(segments, turns)
    for a, b in zip(out, out[1:], strict=False):
        assert a.start <= b.start and a.end <= b.start + 1e-9, f"segments overlap: {a} / {b}"


@settings(max_examples=200, deadline=None)
@given(segments=segments_strategy(), turns=turns_strategy(exclusive=True))
def test_alignment_clear_words_get_their_turns_speaker(segments: list, turns: list[Turn]) -> None:
    al = _alignment()
    cfg = al.AlignConfig()
    out = al.align(segments, turns)
    ends = [x for t in turns for x in (t.start, t.end)]
    for w in (w for s in out for w in s.words if _timed(w) and w.end > w.start):
        covering = [t for t in turns if t.start <= w.start and w.end <= t.end]
        near = [t for t in turns if t.end >= w.start - cfg.max_gap and t.start <= w.end + cfg.max_gap]
        mid = (w.start + w.end) / 2
        if (len(covering) == 1 and {t.speaker for t in near} == {covering[0].speaker}
                and all(abs(e - mid) > cfg.boundary_margin + 1e-9 for e in ends)):
            assert w.speaker == covering[0].speaker
        if not near:  # far from every turn: no speaker rather than an invented one
            assert w.speaker is None


# --------------------------------------------------------------------------- writers
def _writers():  # noqa: ANN202
    return pytest.importorskip("whispdiar.outputs.writers", reason="whispdiar/outputs/writers.py not written yet")


tricky_text = st.text(st.sampled_from(list("ab cdéż你 ,.?!<>&-\n\t'\"")) , max_size=30)


@st.composite
def results(draw: st.DrawFn):  # noqa: ANN201
    from whispdiar.records import Result, Segment, Speaker, Word

    segments = draw(segments_strategy())
    if draw(st.booleans()):  # through the real alignment, as the pipeline does
        segments = _alignment().align(segments, draw(turns_strategy(exclusive=True)))
    else:  # or arbitrary text/labels straight into the writers
        segments = [Segment(s.start, s.end, draw(tricky_text), draw(st.sampled_from([None, *SPEAKERS])),
                            [Word(draw(tricky_text), w.start, w.end, w.probability, w.speaker) for w in s.words])
                    for s in segments]
    names = draw(st.lists(st.sampled_from(["Jan", "Anna <B>", "Zoë & co", "Speaker 1", "x\ny"]), min_size=3,
                          max_size=3))
    speakers = [Speaker(label, name) for label, name in zip(SPEAKERS, names, strict=True)]
    return Result("meeting.wav", 100.0, "en", segments, speakers)


def _two_zero_length_segments():  # noqa: ANN202
    from whispdiar.records import Result

    # Found by Hypothesis: two zero-length segments starting at the same time.
    return Result("m.wav", 10.0, "en", [_seg(0.0, 0.0, "so so", None, []), _seg(0.0, 0.0, "so", None, [])])


@settings(max_examples=200, deadline=None)
@given(result=results())
@example(result=_two_zero_length_segments())
def test_srt_is_valid_with_monotonic_non_overlapping_cues(result) -> None:  # noqa: ANN001
    cues = check_srt(_writers().render(result, "srt"))
    assert_monotonic_non_overlapping(cues)


@settings(max_examples=200, deadline=None)
@given(result=results())
@example(result=_two_zero_length_segments())
def test_vtt_is_valid_with_monotonic_non_overlapping_cues(result) -> None:  # noqa: ANN001
    text = _writers().render(result, "vtt")
    cues = check_vtt(text)
    assert_monotonic_non_overlapping(cues)
    body = re.sub(r"</?v[^>]*>", "", text)
    assert "<" not in body.replace("&lt;", "") and "&" not in re.sub(r"&(amp|lt|gt);", "", body)


def _name_with_newline():  # noqa: ANN202
    from whispdiar.records import Result, Speaker

    # Found by Hypothesis: a display name with a line break splits a txt line in two.
    return Result("m.wav", 10.0, "en", [_seg(0.0, 1.0, "hi", "SPEAKER_00", [])], [Speaker("SPEAKER_00", "x\ny")])


@settings(max_examples=150, deadline=None)
@given(result=results())
@example(result=_name_with_newline())
def test_json_tsv_txt_are_well_formed(result) -> None:  # noqa: ANN001
    import json

    w = _writers()
    doc = json.loads(w.render(result, "json"))
    assert len(doc["segments"]) == len(result.segments)
    tsv = w.render(result, "tsv").splitlines()
    assert tsv[0] == "start\tend\tspeaker\ttext\tconfidence"
    assert len(tsv) == 1 + len(result.segments) and all(row.count("\t") == 4 for row in tsv)
    txt = w.render(result, "txt").splitlines()
    if result.speakers:
        assert txt[0].startswith("# speakers: ")
        assert txt[1].startswith("# talk time: ")
        txt = txt[2:]
    for line in txt:
        assert re.match(r"\[(\d+:)?\d{2}:\d{2}\.\d{2}\] ", line)
