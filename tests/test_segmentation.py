"""Sliding windows, powerset decoding and the segmentation model on real speech."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from whispdiar.audio import read as audio
from whispdiar.diarization.segmentation import (
    FRAME_STEP_SAMPLES,
    NUM_FRAMES,
    WINDOW_SAMPLES,
    Segmenter,
    frame_center,
    num_global_frames,
    powerset_to_multilabel,
    sliding_windows,
    step_to_samples,
)
from whispdiar.outputs.rttm import parse_rttm


@pytest.mark.parametrize("n", [1, 1000, WINDOW_SAMPLES - 1, WINDOW_SAMPLES, WINDOW_SAMPLES + 1, 37 * 16000])
@pytest.mark.parametrize("block", [7000, 480000])
def test_windows_cover_the_signal_in_order(n: int, block: int):
    x = np.arange(n, dtype=np.float32)
    step = step_to_samples(2.5)
    windows = list(sliding_windows((x[i : i + block] for i in range(0, n, block)), step))
    assert [w.start_sample for w in windows] == [i * step for i in range(len(windows))]
    assert windows[-1].start_sample + WINDOW_SAMPLES >= n  # the end is covered
    assert len(windows) == 1 or windows[-2].start_sample + WINDOW_SAMPLES < n  # no useless window
    for w in windows:
        real = x[w.start_sample : w.start_sample + WINDOW_SAMPLES]
        assert len(w.samples) == WINDOW_SAMPLES
        np.testing.assert_array_equal(w.samples[: len(real)], real)
        assert not w.samples[len(real) :].any()  # zero padding


def test_step_is_whole_frames():
    for step in (1.0, 2.5, 5.0, 10.0):
        s = step_to_samples(step)
        assert s % FRAME_STEP_SAMPLES == 0 and abs(s / 16000 - step) < 0.01


def test_powerset_decoding():
    logp = np.log(np.full((7, 7), 0.01) + 0.9 * np.eye(7))
    assert powerset_to_multilabel(logp).tolist() == [
        [0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, 0, 1], [0, 1, 1]]


def test_frame_grid():
    assert num_global_frames(WINDOW_SAMPLES) == NUM_FRAMES
    assert num_global_frames(1) == 1
    assert frame_center(0) == pytest.approx(991 / 32000)


@pytest.mark.slow
def test_model_finds_the_speech(segmentation_model_path: Path, data_dir: Path):
    """Frames the model marks as speech agree with the reference speech on > 90 % of the file."""
    x = audio.load(data_dir / "diar_sample.flac")
    seg = Segmenter(segmentation_model_path, threads=2)
    windows = list(sliding_windows([x], step_to_samples(10.0)))
    act = seg(np.stack([w.samples for w in windows]))
    assert act.shape == (len(windows), NUM_FRAMES, 3)
    hyp = np.concatenate(list(act.any(axis=2)))
    t = frame_center(np.arange(len(hyp)))
    ref = np.zeros(len(hyp), bool)
    for turn in parse_rttm((data_dir / "diar_sample.rttm").read_text())["diar_sample"]:
        ref |= (t >= turn.start) & (t < turn.end)
    assert np.mean(hyp == ref) > 0.9
    assert act.sum(axis=2).max() == 2  # the sample has overlapped speech
