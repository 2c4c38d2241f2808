"""scripts/make_crowds.py: tiny crowd, call-in and monologue files from the tests/data readers.

The reference is where speech was placed: one RTTM speaker per reader placed, every turn inside
the audio, and a seed fixes the files byte for byte.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).parent / "data"


def _load(name: str):
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


mc = _load("make_crowds")


@pytest.fixture(scope="module")
def voices() -> list:
    sexes = {"1688": "M", "1998": "F", "2033": "M"}
    return [mc.mr.load_voice(r, s, sorted(DATA.glob(f"ls-{r}-*.flac"))) for r, s in sexes.items()]


def _town_hall(voices: list, seed: int):
    rng = np.random.default_rng(seed)
    supplies = [mc.Supply(v, rng, *mc.CROWD_REUSE) for v in voices]
    scene = mc.Scene(len(voices), rng)
    mc.town_hall(scene, supplies, bites=False, barge=0.5)
    return mc.finish(scene, voices, ["speaker"] * len(voices), supplies, rng, phone=(True, 35.0),
                     extra={"pattern": "town-hall", "render": "phone"})


def _call_in(voices: list, seed: int):
    rng = np.random.default_rng(seed)
    supplies = [mc.Supply(v, rng, *mc.CROWD_REUSE) for v in voices]
    scene = mc.Scene(len(voices), rng)
    for ch in scene.channels[1:]:
        ch.phone = (True, 30.0)
    mc.call_in(scene, supplies)
    return mc.finish(scene, voices, ["host"] + ["caller"] * (len(voices) - 1), supplies, rng,
                     extra={"pattern": "call-in", "render": "clean"})


def _check(b, placed: int) -> None:
    n = len(b.audio)
    assert b.info["duration"] == round(n / mc.SR, 3)
    assert b.info["speakers"] == placed == len({s for _, _, s in b.turns})
    assert all(0 <= a < e <= n / mc.SR for a, e, _ in b.turns)
    assert np.max(np.abs(b.audio)) <= 0.99


@pytest.mark.parametrize("build", [_town_hall, _call_in])
def test_every_placed_reader_is_one_reference_speaker(voices: list, build) -> None:
    b = build(voices, 3)
    _check(b, len(voices))
    labels = {f"spk{v.reader}" for v in voices}
    assert {s for _, _, s in b.turns} == labels == {r["label"] for r in b.info["readers"]}


def test_monologue_reuses_perturbed_speech(voices: list) -> None:
    """40 s from a reader with ~25 s of speech: one speaker, readings repeated and resampled."""
    b = mc.build_mono_file(40 / 60, "clean", voices[1], np.random.default_rng(4), 0.06)
    _check(b, 1)
    assert len(b.audio) == 40 * mc.SR
    reuse = b.info["readers"][0]["reuse"]
    assert reuse["perturbed_readings"] > 0 and 0.94 <= reuse["speed"][0] <= reuse["speed"][1] <= 1.06


def test_same_seed_same_bytes(voices: list, tmp_path: Path) -> None:
    def files(seed: int, folder: str) -> list[bytes]:
        out = tmp_path / folder
        out.mkdir()
        mc.write_file(out, "t", _call_in(voices, seed))
        return [(out / f"t.{ext}").read_bytes() for ext in ("wav", "rttm", "uem")]

    a, b, c = files(7, "a"), files(7, "b"), files(8, "c")
    assert a == b
    assert a[0] != c[0]
