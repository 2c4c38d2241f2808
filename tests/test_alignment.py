"""Alignment rules (docs/alignment.md) on hand-made words and turns."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from whispdiar.alignment import AlignConfig, align, assign_words, merge_segments, segment_speaker
from whispdiar.records import Segment, Turn, Word


def W(text: str, start: float | None, end: float | None) -> Word:  # noqa: N802 - fixture shorthand
    return Word(text, start, end, 0.9)


def seg(*words: Word, text: str | None = None) -> Segment:
    timed = [w for w in words if w.start is not None]
    start = timed[0].start if timed else 0.0
    end = timed[-1].end if timed else 0.0
    return Segment(start, end, text if text is not None else " ".join(w.text for w in words), None, list(words))


def speakers(segments: list[Segment]) -> list[str | None]:
    return [w.speaker for s in segments for w in s.words]


A0 = Turn(0.0, 5.0, "A")
B0 = Turn(5.0, 10.0, "B")


def test_word_inside_a_turn_gets_its_speaker():
    out = align([seg(W("hello", 1.0, 1.4), W("there", 6.0, 6.5))], [A0, B0])
    assert speakers(out) == ["A", "B"]


def test_word_straddling_two_turns_goes_to_the_larger_overlap():
    out = align([seg(W("long", 4.6, 5.2))], [A0, B0])  # 0.4 s with A, 0.2 s with B
    assert speakers(out) == ["A"]
    out = align([seg(W("long", 4.9, 5.6))], [A0, B0])
    assert speakers(out) == ["B"]


def test_word_in_a_small_gap_takes_the_nearest_turn():
    turns = [Turn(0.0, 2.0, "A"), Turn(4.0, 6.0, "B")]
    out = align([seg(W("near", 2.1, 2.3))], turns)
    assert speakers(out) == ["A"]
    out = align([seg(W("near", 3.6, 3.8))], turns)
    assert speakers(out) == ["B"]


def test_word_far_from_every_turn_gets_no_speaker():
    turns = [Turn(0.0, 2.0, "A"), Turn(6.0, 8.0, "B")]
    out = align([seg(W("lost", 3.5, 4.0))], turns)
    assert speakers(out) == [None]


def test_gap_distance_is_configurable():
    turns = [Turn(0.0, 2.0, "A")]
    words = [seg(W("x", 2.8, 3.0))]
    assert speakers(align(words, turns, AlignConfig(max_gap=0.5))) == [None]
    assert speakers(align(words, turns, AlignConfig(max_gap=1.0))) == ["A"]


def test_untimed_word_takes_agreeing_neighbours():
    out = align([seg(W("a", 1.0, 1.2), W("b", None, None), W("c", 1.5, 1.8))], [A0, B0])
    assert speakers(out) == ["A", "A", "A"]


def test_untimed_word_between_disagreeing_neighbours_takes_the_segment_speaker():
    s = Segment(3.0, 9.0, "a b c", None, [W("a", 4.8, 4.9), W("b", None, None), W("c", 5.1, 9.0)])
    out = align([s], [A0, B0])
    assert [w.speaker for s in out for w in s.words] == ["A", "B", "B"]


def test_segment_without_word_times_falls_back_to_max_overlap():
    s = Segment(3.0, 9.0, "no word times here", None, [W("no", None, None), W("word", None, None)])
    out = align([s], [A0, B0])
    assert [x.speaker for x in out] == ["B"]  # 4 s of B against 2 s of A
    assert all(w.speaker == "B" for w in out[0].words)
    bare = Segment(0.5, 2.0, "no words at all", None, [])
    assert [x.speaker for x in align([bare], [A0, B0])] == ["A"]


def test_segment_speaker_iou_breaks_ties_and_gap_rule_applies():
    assert segment_speaker(Segment(4.0, 6.0, "t"), [A0, B0]) in {"A", "B"}
    assert segment_speaker(Segment(4.0, 6.0, "t"), [Turn(3.0, 5.0, "A"), Turn(5.0, 20.0, "B")]) == "A"
    assert segment_speaker(Segment(11.0, 12.0, "t"), [A0, B0], max_gap=0.5) is None


def test_segments_are_cut_at_speaker_changes():
    s = seg(W("I", 3.0, 3.2), W("think", 3.3, 3.6), W("so.", 3.7, 4.0), W("Me", 5.5, 5.8), W("too.", 5.9, 6.2))
    out = align([s], [A0, B0])
    assert [(x.speaker, x.text) for x in out] == [("A", "I think so."), ("B", "Me too.")]
    assert out[0].start == 3.0 and out[0].end == 4.0
    assert out[1].start == 5.5 and out[1].end == 6.2


def test_adjacent_segments_of_one_speaker_merge_across_a_short_gap():
    turns = [Turn(0.0, 20.0, "A")]
    s1 = seg(W("one.", 1.0, 1.5))
    s2 = seg(W("two.", 2.0, 2.5))
    s3 = seg(W("three.", 9.0, 9.5))
    out = align([s1, s2, s3], turns)
    assert [x.text for x in out] == ["one. two.", "three."]


def test_merge_never_joins_unknown_speakers():
    segs = [Segment(0, 1, "a"), Segment(1.2, 2, "b")]
    assert len(merge_segments(segs, 1.0)) == 2


def test_uncertain_isolated_flip_is_smoothed_to_the_sentence_majority():
    # B's turn is a 0.3 s blip inside A's speech: the word there is near two speaker changes.
    turns = [Turn(0.0, 2.0, "A"), Turn(2.0, 2.3, "B"), Turn(2.3, 5.0, "A")]
    s = seg(W("we", 1.0, 1.2), W("should", 1.3, 1.7), W("really", 1.9, 2.3), W("go", 2.4, 2.6),
            W("home", 2.7, 3.0), W("now.", 3.1, 3.4))
    out = align([s], turns)
    assert speakers(out) == ["A"] * 6
    assert len(out) == 1 and out[0].text == s.text


def test_certain_flip_is_kept():
    # B clearly speaks 2.0-5.0 (the word sits well inside): a real interjection stays.
    turns = [Turn(0.0, 2.0, "A"), Turn(2.0, 5.0, "B"), Turn(5.0, 9.0, "A")]
    s = seg(W("we", 0.5, 0.8), W("should", 0.9, 1.3), W("yes", 3.3, 3.6), W("go", 6.0, 6.3),
            W("home", 6.4, 6.8), W("now.", 6.9, 7.2))
    out = align([s], turns)
    assert speakers(out) == ["A", "A", "B", "A", "A", "A"]


def test_flip_across_a_sentence_end_is_not_smoothed():
    turns = [Turn(0.0, 2.0, "A"), Turn(2.0, 2.4, "B"), Turn(2.4, 5.0, "A")]
    s = seg(W("Fine", 1.0, 1.3), W("then.", 1.4, 1.8), W("Yes.", 2.05, 2.35), W("And", 2.6, 2.8),
            W("so", 2.9, 3.1), W("on.", 3.2, 3.5))
    out = align([s], turns)
    assert speakers(out)[2] == "B"  # a one-word sentence of its own is never smoothed away


def test_long_flip_is_not_smoothed():
    turns = [Turn(0.0, 2.0, "A"), Turn(2.0, 2.9, "B"), Turn(2.9, 9.0, "A")]
    words = [W("a", 0.5, 0.7), W("b", 0.8, 1.0), W("c", 1.1, 1.3), W("x", 2.0, 2.3), W("y", 2.3, 2.6),
             W("z", 2.6, 2.9), W("d", 3.0, 3.2), W("e", 3.3, 3.5), W("f.", 3.6, 3.8)]
    out = align([seg(*words)], turns)
    assert speakers(out)[3:6] == ["B", "B", "B"]  # three words exceed flip_max_words


def test_words_in_overlapped_speech_are_uncertain():
    excl = [Turn(0.0, 3.0, "A"), Turn(3.0, 6.0, "B")]
    full = [Turn(0.0, 4.0, "A"), Turn(1.0, 6.0, "B")]
    a = assign_words([W("x", 1.5, 1.8), W("y", 0.2, 0.5)], excl, overlapped=full)
    assert a[0].speaker == "A" and a[0].uncertain
    assert a[1].speaker == "A" and not a[1].uncertain


def test_no_turns_means_no_speakers_and_unchanged_segments():
    s = seg(W("a", 1.0, 1.2), W("b", 2.0, 2.2))
    out = align([s], [])
    assert len(out) == 1 and out[0].text == s.text and speakers(out) == [None, None]


def test_input_segments_are_not_modified():
    s = seg(W("a", 1.0, 1.2))
    align([s], [A0])
    assert s.words[0].speaker is None and s.speaker is None


def test_no_space_languages_join_without_spaces():
    s = seg(W("你好", 1.0, 1.5), W("世界", 5.5, 6.0), text="你好世界")
    out = align([s], [A0, B0], language="zh")
    assert [x.text for x in out] == ["你好", "世界"]


@st.composite
def _case(draw):
    n_turns = draw(st.integers(0, 6))
    turns, t = [], 0.0
    for _ in range(n_turns):
        t += draw(st.floats(0.0, 2.0))
        d = draw(st.floats(0.05, 3.0))
        turns.append(Turn(t, t + d, draw(st.sampled_from("ABC"))))
        t += d * draw(st.floats(0.3, 1.0))
    words, t = [], 0.0
    for _ in range(draw(st.integers(0, 15))):
        if draw(st.booleans()) and draw(st.booleans()) and draw(st.booleans()):
            words.append(W("u", None, None))
            continue
        t += draw(st.floats(0.0, 1.0))
        d = draw(st.floats(0.0, 0.8))
        words.append(W(draw(st.sampled_from(["a", "b.", "c,", "d?"])), t, t + d))
        t += d
    return turns, words


@settings(max_examples=200, deadline=None)
@given(_case())
def test_property_speakers_only_come_from_turns_and_no_word_is_lost(case):
    turns, words = case
    segs = [seg(*words)] if words else []
    out = align(segs, turns)
    got = [w for s in out for w in s.words]
    assert [w.text for w in got] == [w.text for w in words]
    allowed = {t.speaker for t in turns} | {None}
    assert {w.speaker for w in got} <= allowed
    assert {s.speaker for s in out} <= allowed
    for s in out:
        assert s.start <= s.end
        assert all(w.speaker == s.speaker for w in s.words)
