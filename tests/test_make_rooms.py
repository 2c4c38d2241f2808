"""scripts/make_rooms.py: a room-simulated two-speaker file built from tests/data in seconds.

The reference is where speech was placed; these tests check that the audio agrees with it
(speech where placed, only the noise floor far from it) and that a seed fixes the file.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pyroomacoustics")

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).parent / "data"
HOP = 160  # 10 ms


def _load_script():
    spec = importlib.util.spec_from_file_location("make_rooms", ROOT / "scripts" / "make_rooms.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules["make_rooms"] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


mr = _load_script()


@pytest.fixture(scope="module")
def voices() -> list:
    return [mr.load_voice("1998", "F", sorted(DATA.glob("ls-1998-*.flac"))),
            mr.load_voice("2033", "M", sorted(DATA.glob("ls-2033-*.flac")))]


def _style(k: int):
    # Longer pauses than the sets use, so that the file has silence to check.
    return mr.Style(barge_in=0.3, backchannel=0.1, turn_median=3.0, weights=[1 / k] * k,
                    levels_db=[3.0, -3.0], gap_mean=1.2)


def _room_file(voices: list, seed: int):
    return mr.render_meeting(voices, 25.0, np.random.default_rng(seed), room=True, noise="fan", snr_db=15.0,
                             rt60=(0.3, 0.4), distance=(0.5, 2.0), style=_style(len(voices)))


def _frame_db(x: np.ndarray) -> np.ndarray:
    n = len(x) // HOP
    return 10 * np.log10(np.mean(x[: n * HOP].reshape(n, HOP).astype(np.float64) ** 2, axis=1) + 1e-12)


def _masks(turns, n: int, tail: float) -> tuple[np.ndarray, np.ndarray]:
    """Frames inside placed speech; frames farther than ``tail`` s after (0.1 s before) any speech."""
    on = np.zeros(n, bool)
    near = np.zeros(n, bool)
    for a, b, _ in turns:
        on[int(round(a * 100)):int(round(b * 100))] = True
        near[max(0, int(a * 100) - 10):int(b * 100) + int(tail * 100)] = True
    return on, ~near


def test_room_file_reference_matches_audio(voices: list) -> None:
    m = _room_file(voices, 1)
    assert len(m.audio) == 25 * mr.SR
    assert {s for _, _, s in m.turns} == {"spk1998", "spk2033"}
    assert m.info["room"] and 0.25 <= m.info["room"]["rt60_measured"] <= 0.45
    assert all(0.5 <= d <= 2.0 for d in m.info["room"]["nearest_mic_m"])
    db = _frame_db(m.audio)
    on, far = _masks(m.turns, len(db), tail=0.4)  # RT60 <= 0.4 s: the tail is 60 dB down by then
    assert far.sum() > 200, "the file needs some silence to check"
    noise = np.median(db[far])
    # The noise is stationary fan noise at 15 dB SNR: far from speech the level stays at the floor ...
    assert np.mean(db[far] > noise + 6) < 0.03
    # ... and where speech was placed it is well above it.
    assert np.mean(db[on] > noise + 3) > 0.8
    assert np.median(db[on]) > noise + 8


def test_dry_reference_is_the_gated_speech(voices: list) -> None:
    """Without room and noise, unlabelled audio is only the sub-gate pads around the cuts."""
    m = mr.render_meeting(voices, 25.0, np.random.default_rng(2), style=_style(2))
    db = _frame_db(m.audio)
    on, far = _masks(m.turns, len(db), tail=0.1)  # the pads reach 0.08 s beyond
    # The pads carry the source recording's own floor (LibriSpeech "other" readers: 10-20 dB
    # under their speech), never anything above the gate.
    assert np.percentile(db[~on], 99) < np.median(db[on]) - 8
    assert np.all(db[far] < -100)  # nothing placed there at all
    assert 0.0 < m.info["overlap_share"] < 0.4


def test_same_seed_same_file(voices: list) -> None:
    a, b, c = _room_file(voices, 7), _room_file(voices, 7), _room_file(voices, 8)
    assert np.array_equal(a.audio, b.audio) and a.turns == b.turns and a.info == b.info
    assert not np.array_equal(a.audio, c.audio)


def test_telephone_band(voices: list) -> None:
    m = mr.render_meeting(voices, 20.0, np.random.default_rng(3), phone=True, style=_style(2))
    spec = np.abs(np.fft.rfft(m.audio.astype(np.float64))) ** 2
    f = np.fft.rfftfreq(len(m.audio), 1 / mr.SR)
    in_band = spec[(f > 400) & (f < 3200)].mean()
    assert spec[f > 4200].mean() < in_band * 1e-4  # nothing above the 8 kHz Nyquist
    assert spec[f < 150].mean() < in_band * 1e-2
