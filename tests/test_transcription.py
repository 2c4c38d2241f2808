"""Transcription: chunk planning, time mapping, token grouping, VAD timing refinement
(fast, no model), and whisper.cpp on real speech with tiny.en (slow)."""

from __future__ import annotations

import io
import re
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from whispdiar.asr.chunks import Chunk, ChunkPlanner, Piece
from whispdiar.asr.vad import FRAME_SECONDS, SpeechRegion, speech_regions
from whispdiar.asr.whisper import read_header
from whispdiar.asr.words import (
    RawSegment,
    Token,
    chunk_segments,
    estimate_lag,
    refine_word_times,
    speech_mask,
    speech_onsets,
    tokens_to_words,
)
from whispdiar.errors import ModelError, UsageError
from whispdiar.records import Segment, Word

# ----------------------------------------------------------------------------- chunk plan


def plan_chunks(regions, probs=None, **kw) -> list[Chunk]:  # noqa: ANN001, ANN003
    """The whole plan at once, nothing given back."""
    return list(ChunkPlanner(regions, probs, **kw))


def test_plan_packs_regions_up_to_the_limit():
    regions = [SpeechRegion(i * 10.0, i * 10.0 + 6.0) for i in range(6)]  # 6 s speech, 4 s pause
    chunks = plan_chunks(regions, max_seconds=20.0, join_silence=0.2, lead_in=0.0)
    assert all(c.length <= 20.0 for c in chunks)
    assert sum(len(c.pieces) for c in chunks) == 6
    assert [len(c.pieces) for c in chunks] == [3, 3]
    p = chunks[0].pieces
    assert p[1].packed == pytest.approx(6.2) and p[2].packed == pytest.approx(12.4)


def test_plan_keeps_short_pauses_as_real_audio():
    chunks = plan_chunks([SpeechRegion(1.0, 3.0), SpeechRegion(3.3, 5.0)], merge_gap=0.6, lead_in=0.3)
    assert len(chunks) == 1 and chunks[0].pieces == [Piece(1.0, 5.0, 0.3)]  # after 0.3 s of lead-in zeros
    assert chunks[0].to_source(0.1) == 1.0 and chunks[0].to_source(0.4) == pytest.approx(1.1)


def test_long_region_is_cut_at_its_quietest_frame():
    probs = np.full(int(100 / FRAME_SECONDS), 0.9, np.float32)
    quiet = int(22.0 / FRAME_SECONDS)
    probs[quiet] = 0.01
    chunks = plan_chunks([SpeechRegion(0.0, 60.0)], probs, max_seconds=29.0, lead_in=0.0)
    pieces = [p for c in chunks for p in c.pieces]
    assert pieces[0].end == pytest.approx((quiet + 0.5) * FRAME_SECONDS)
    assert all(c.length <= 29.0 for c in chunks)
    assert pieces[-1].end == 60.0 and all(a.end == b.start for a, b in zip(pieces, pieces[1:], strict=False))


def test_long_region_without_probabilities_is_cut_at_the_limit():
    chunks = plan_chunks([SpeechRegion(0.0, 70.0)], None, max_seconds=29.0, lead_in=0.0)
    assert [round(c.length, 3) for c in chunks] == [29.0, 29.0, 12.0]


def test_chunks_are_filled_with_part_of_a_region_that_does_not_fit():
    # 20 s + 15 s of speech: the second region is cut to fill the first chunk to 29 s
    regions = [SpeechRegion(0.0, 20.0), SpeechRegion(30.0, 45.0)]
    chunks = plan_chunks(regions, None, max_seconds=29.0, join_silence=0.2, lead_in=0.0)
    assert chunks[0].length == pytest.approx(29.0)
    assert chunks[0].pieces[1] == Piece(30.0, pytest.approx(38.8), 20.2)
    assert chunks[1].pieces[0].start == pytest.approx(38.8) and chunks[1].pieces[-1].end == 45.0
    # too little room left (under fill_min): the region starts the next chunk whole
    chunks = plan_chunks([SpeechRegion(0.0, 27.5), SpeechRegion(30.0, 35.0)], None, max_seconds=29.0,
                         join_silence=0.2, lead_in=0.0, fill_min=2.0)
    assert [len(c.pieces) for c in chunks] == [1, 1]


def test_give_back_requeues_the_tail_once():
    planner = ChunkPlanner([SpeechRegion(0.0, 20.0), SpeechRegion(25.0, 35.0)], None, max_seconds=29.0,
                           join_silence=0.2, lead_in=0.0)
    first = planner.next()
    assert first.pieces[-1].end == pytest.approx(33.8)
    # whisper stopped at 15 s of the chunk: 5 s of the first region and the 8.8 s piece come back
    assert planner.give_back(first, 15.0) == pytest.approx(5.0 + 8.8)
    second = planner.next()
    assert second.pieces[0] == Piece(15.0, 20.0, 0.0) and second.pieces[-1].end == 35.0
    # the same audio is never given back twice, so the plan always ends
    assert planner.give_back(second, 1.0) == 0.0
    assert planner.next() is None
    # under a second of speech left: not worth another pass
    planner = ChunkPlanner([SpeechRegion(0.0, 10.0)], None, lead_in=0.0)
    c = planner.next()
    assert planner.give_back(c, 9.5) == 0.0 and planner.next() is None


def test_with_two_lanes_a_tail_leads_the_chunk_after_next():
    regions = [SpeechRegion(i * 30.0, i * 30.0 + 28.0) for i in range(4)]  # one chunk each
    planner = ChunkPlanner(regions, None, max_seconds=29.0, lead_in=0.0, delay=2)
    c0, c1 = planner.next(), planner.next()
    assert (c0.index, c1.index) == (0, 1)
    assert not planner.may_plan(completed := {1})  # chunk 2 waits for chunk 0, even if 1 is done
    assert planner.give_back(c0, 20.0) == pytest.approx(8.0)
    completed.add(0)
    assert planner.may_plan(completed)
    c2 = planner.next()
    assert c2.pieces[0] == Piece(20.0, 28.0, 0.0)  # chunk 0's tail, then the third region
    assert c2.pieces[1].start == 60.0
    # the last tail is planned even when the regions have run out
    rest = [c for c in planner]
    assert planner.give_back(rest[-1], 2.0) == pytest.approx(4.4)
    assert planner.next().pieces[0].start == pytest.approx(113.6)
    assert planner.next() is None


def test_chunk_maps_packed_time_back_and_snaps_in_inserted_silence():
    c = Chunk([Piece(10.0, 12.0, 0.0), Piece(50.0, 53.0, 2.2)])
    assert c.length == pytest.approx(5.2)
    assert c.to_source(1.0) == pytest.approx(11.0)
    assert c.to_source(3.2) == pytest.approx(51.0)
    assert c.to_source(2.1, "next") == 50.0  # in the 0.2 s of zeros between pieces
    assert c.to_source(2.1, "prev") == 12.0
    assert c.to_source(9.0, "prev") == 53.0


def test_a_word_maps_into_one_piece_the_nearer_across_inserted_silence():
    # a given-back tail (10-12 s) leads a chunk whose next piece is 38 s later
    c = Chunk([Piece(10.0, 12.0, 0.3), Piece(50.0, 53.0, 2.5)])
    assert c.word_span(1.0, 1.4) == pytest.approx((10.7, 11.1))
    # DTW puts the tail's last word 30 ms into the zeros: it stays at the tail's end,
    # not 38 s later at the next piece (which dragged every later word there once)
    assert c.word_span(2.33, 2.7) == pytest.approx((12.0, 12.0))
    # a start late in the zeros belongs to the next piece
    assert c.word_span(2.45, 2.9) == pytest.approx((50.0, 50.4))
    # a word whose end runs past its piece stops at the piece's end
    assert c.word_span(1.8, 2.9) == pytest.approx((11.5, 12.0))
    assert c.word_span(0.1, 0.5) == pytest.approx((10.0, 10.2))  # in the lead-in


def test_a_segment_across_a_far_jump_is_cut_and_given_back_audio_is_not_reused():
    def tok(text: str, t: float) -> Token:
        return Token(text.encode(), 0.9, t, t, t + 0.1)

    # a given-back tail (10-12 s of the recording) leads speech from 50 s on, and whisper
    # wrote one segment across the 0.2 s of zeros between them
    c = Chunk([Piece(10.0, 12.0, 0.3), Piece(50.0, 60.0, 2.5)])
    raw = [RawSegment(0.0, 8.0, "answered he, the same that", [tok(" answered", 0.5), tok(" he", 1.2),
                                                                  tok(",", 2.0), tok(" the", 2.6),
                                                                  tok(" same", 3.0), tok(" that", 9.0)])]
    segs = chunk_segments(raw, c, end_of_chunk=8.0, timing="dtw")
    assert [s.text for s in segs] == ["answered he,", "the same that"]
    assert segs[0].start == pytest.approx(10.2) and segs[0].end <= 12.0
    assert segs[1].start == pytest.approx(50.1)
    # whisper stopped at 8.0 and the rest went back to the queue: a word DTW placed at 9.0
    # stays before 8.0 (55.5 s), since another chunk transcribes what follows
    assert segs[1].words[-1].start <= 55.5 + 1e-9
    whole = chunk_segments(raw, c, end_of_chunk=c.length, timing="dtw")
    assert whole[1].words[-1].start == pytest.approx(56.5)


# ----------------------------------------------------------------------------- tokens


def T(text: str, t: float, p: float = 0.9) -> Token:  # noqa: N802
    return Token(text.encode(), p, t, t, t + 0.1)


def test_tokens_group_into_words_with_punctuation_attached():
    toks = [T(" And", 0.5), T(" so", 0.8), T(",", 1.0), T(" didn", 1.2), T("'t", 1.4), T(" go", 1.6), T(".", 1.9)]
    words = tokens_to_words(toks, next_time=2.5, timing="dtw")
    assert [w[0] for w in words] == ["And", "so,", "didn't", "go."]
    # start = first token's DTW time; end = the trailing punctuation's time, else the next word's start
    assert [(w[1], w[2]) for w in words] == [(0.5, 0.8), (0.8, 1.0), (1.2, 1.6), (1.6, 1.9)]


def test_last_word_without_punctuation_ends_at_next_time():
    words = tokens_to_words([T(" hi", 0.5), T(" there", 0.9)], next_time=1.7, timing="dtw")
    assert words[-1][1:3] == (0.9, 1.7)


def test_multibyte_characters_split_across_tokens():
    raw = "é".encode()
    toks = [Token(b" caf" + raw[:1], 0.9, 0.1, 0, 0), Token(raw[1:], 0.9, 0.2, 0, 0)]
    assert tokens_to_words(toks, 0.5, "dtw")[0][0] == "café"


def test_words_without_dtw_times_are_untimed():
    toks = [Token(b" hi", 0.9, None, 0, 0)]
    assert tokens_to_words(toks, None, "dtw") == [("hi", None, None, 0.9)]
    assert tokens_to_words([T(" hi", 0.3)], None, "none")[0][1:3] == (None, None)


def test_token_timing_mode_uses_whisper_t0_t1():
    assert tokens_to_words([T(" hi", 0.3)], None, "tokens")[0][1:3] == (0.3, 0.4)


# ----------------------------------------------------------------------------- model file


def test_read_header_rejects_non_ggml(tmp_path: Path):
    bad = tmp_path / "x.bin"
    bad.write_bytes(b"not a model at all" * 10)
    with pytest.raises(ModelError):
        read_header(bad)
    with pytest.raises(ModelError):
        read_header(tmp_path / "missing.bin")


# ----------------------------------------------------------------------------- VAD


def test_speech_regions_hysteresis_padding_and_min_length():
    probs = np.zeros(200, np.float32)
    probs[20:60] = 0.9  # 1.28 s of speech
    probs[62:64] = 0.9  # a dip of 2 frames (< min_silence) inside speech
    probs[100:103] = 0.9  # 96 ms blip: too short
    probs[150:190] = 0.6
    regs = speech_regions(probs, threshold=0.5, min_speech=0.2, min_silence=0.3, pad=0.1)
    assert len(regs) == 2
    assert regs[0].start == pytest.approx(20 * FRAME_SECONDS - 0.1)
    assert regs[0].end == pytest.approx(64 * FRAME_SECONDS + 0.1)


def test_speech_mask_and_onsets():
    probs = np.array([0, 0.6, 0.4, 0.2, 0, 0, 0, 0, 0, 0.7, 0.7], np.float32)
    mask = speech_mask(probs)
    assert mask.tolist() == [False, True, True, False, False, False, False, False, False, True, True]
    assert speech_onsets(mask, min_silence=0.15).tolist() == pytest.approx([FRAME_SECONDS, 9 * FRAME_SECONDS])


def test_lag_estimate_needs_evidence_and_is_a_median():
    onsets = np.array([1.0, 5.0, 9.0, 13.0])
    # diffs 0.4, 0.5, 0.4, 0.45: median 0.425, shrunk by 3 pseudo-onsets at 0
    assert estimate_lag([1.4, 1.8, 5.5, 9.4, 13.45], onsets) == pytest.approx(0.425 * 4 / 7)
    assert estimate_lag([1.4, 1.8, 5.5, 9.4, 13.45], onsets, prior=0) == pytest.approx(0.425)
    assert estimate_lag([30.0], onsets) == 0.0


def test_refine_shifts_by_lag_and_snaps_to_speech():
    n = int(12 / FRAME_SECONDS)
    probs = np.zeros(n, np.float32)
    spans = [(1.0, 2.0), (4.0, 5.0), (7.0, 8.0), (10.0, 11.0)]
    for a, b in spans:
        probs[int(a / FRAME_SECONDS):int(b / FRAME_SECONDS)] = 0.9
    lag = 0.4
    words = [Word(f"w{i}", a + lag, b + lag + 0.5) for i, (a, b) in enumerate(spans)]  # late and too long
    segs = [Segment(0, 12, "w", None, words)]
    got = refine_word_times(segs, probs)
    assert got == pytest.approx(lag * 4 / 7, abs=FRAME_SECONDS)
    for w, (a, b) in zip(words, spans, strict=True):
        assert w.start == pytest.approx(a, abs=2 * FRAME_SECONDS)
        assert w.end == pytest.approx(b, abs=2 * FRAME_SECONDS)
    assert segs[0].start == words[0].start


# ----------------------------------------------------------------------------- real model

JFK = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."


def _norm(s: str) -> list[str]:
    return re.sub(r"[^a-z' ]", " ", s.lower()).split()


@pytest.fixture(scope="module")
def tiny(whisper_tiny_en_path, vad_model_path):
    from whispdiar.asr.vad import SileroVad
    from whispdiar.asr.whisper import Transcriber

    with Transcriber(whisper_tiny_en_path, threads=2, vad=SileroVad(vad_model_path)) as tr:
        yield tr


@pytest.mark.slow
def test_jfk_text_and_word_times(tiny, data_dir: Path):
    out = io.StringIO()
    with redirect_stdout(out):
        r = tiny.transcribe(data_dir / "jfk.wav")
    assert out.getvalue() == ""  # nothing from whisper.cpp on stdout (results go there)
    text = " ".join(s.text for s in r.segments)
    assert _norm(text) == _norm(JFK)
    assert r.language == "en"
    words = [w for s in r.segments for w in s.words]
    assert len(words) == len(_norm(JFK))
    starts = [w.start for w in words]
    assert all(a <= b for a, b in zip(starts, starts[1:], strict=False))
    assert all(0.0 <= w.start <= w.end <= r.duration + 0.05 for w in words)
    # From the file's energy envelope: speech begins at ~0.30 s, "Americans" ends ~2.1 s,
    # "ask" 3.28-3.71 s after a pause, "what" starts ~5.41 s.
    assert abs(words[0].start - 0.30) < 0.25
    assert abs(words[4].end - 2.1) < 0.4
    ask = words[5]
    assert ask.text.lower().startswith("ask") and abs(ask.start - 3.28) < 0.3
    assert abs(words[7].start - 5.41) < 0.3


@pytest.mark.slow
def test_language_checks(tiny):
    assert tiny.check_language(None) == "en"
    assert tiny.check_language("English") == "en"
    with pytest.raises(UsageError):
        tiny.check_language("de")  # tiny.en is English-only
    with pytest.raises(UsageError):
        tiny.check_language("klingon")


@pytest.mark.slow
def test_silence_gives_no_segments(tiny, tmp_path: Path):
    p = tmp_path / "silence.wav"
    sf.write(p, np.zeros(16000 * 5, np.float32), 16000)
    r = tiny.transcribe(p)
    assert r.duration == pytest.approx(5.0)
    assert all(not s.words or all(w.start is not None for w in s.words) for s in r.segments)


@pytest.mark.slow
def test_cancel_between_chunks(tiny, data_dir: Path):
    import threading

    from whispdiar.asr.whisper import Cancelled

    ev = threading.Event()
    ev.set()
    with pytest.raises(Cancelled):
        tiny.transcribe(data_dir / "jfk.wav", cancel=ev)


@pytest.mark.slow
def test_two_lanes_decode_chunks_side_by_side(whisper_tiny_en_path, vad_model_path, data_dir: Path,
                                              tmp_path: Path):
    """72 s of LibriSpeech (3+ chunks): two lanes load a second context and give the same
    transcript as one lane, in time order."""
    import difflib

    from whispdiar.asr.vad import SileroVad
    from whispdiar.asr.whisper import Transcriber

    parts = [sf.read(f, dtype="float32")[0] for f in sorted(data_dir.glob("ls-*.flac"))]
    gap = np.zeros(8000, np.float32)
    wav = tmp_path / "ls.wav"
    sf.write(wav, np.concatenate([np.concatenate([x, gap]) for x in parts]), 16000)
    vad = SileroVad(vad_model_path)
    got = {}
    for lanes in (1, 2):
        with Transcriber(whisper_tiny_en_path, threads=2, vad=vad, lanes=lanes) as tr:
            r = tr.transcribe(wav)
            assert len(tr._contexts) == lanes
        starts = [s.start for s in r.segments]
        assert starts == sorted(starts)
        got[lanes] = [t for s in r.segments for w in s.words for t in _norm(w.text)]
    assert len(got[1]) > 150
    assert difflib.SequenceMatcher(None, got[1], got[2], autojunk=False).ratio() > 0.95


@pytest.mark.slow
def test_a_core_handed_back_mid_chunk_starts_the_second_lane_at_once(whisper_tiny_en_path, vad_model_path,
                                                                      data_dir: Path, tmp_path: Path):
    """The pipeline's thread budget grows from 1 to 2 when the diarizer finishes. The second
    lane must start then, not only when the chunk already running is done."""
    import time

    from whispdiar.asr.vad import SileroVad
    from whispdiar.asr.whisper import Transcriber

    parts = [sf.read(f, dtype="float32")[0] for f in sorted(data_dir.glob("ls-*.flac"))]
    wav = tmp_path / "ls.wav"
    sf.write(wav, np.concatenate([np.concatenate([x, np.zeros(8000, np.float32)]) for x in parts]), 16000)
    spans: list[tuple[float, float]] = []
    started: list[float] = []
    with Transcriber(whisper_tiny_en_path, threads=2, vad=SileroVad(vad_model_path), lanes=2) as tr:
        tr._load_context()  # both contexts ready: loading must not blur the timing
        run = tr._run

        def timed_run(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            t0 = time.perf_counter()
            started.append(t0)
            try:
                return run(*args, **kwargs)
            finally:
                spans.append((t0, time.perf_counter()))

        def budget() -> int:  # the diarizer "finishes" 0.3 s into the first chunk
            return 2 if started and time.perf_counter() >= started[0] + 0.3 else 1

        tr._run = timed_run
        tr.transcribe(wav, language="en", threads=budget)
    spans.sort()
    assert len(spans) >= 3
    first_start, first_end = spans[0]
    assert first_end > first_start + 0.8, "the first chunk was too short to tell"
    assert spans[1][0] < first_end - 0.2  # the second lane started while the first chunk ran
