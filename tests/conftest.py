"""Shared fixtures: real model files from the registry (``make models`` fetches them)."""

from __future__ import annotations

from pathlib import Path

import pytest

from whispdiar import models

DATA = Path(__file__).parent / "data"


def _model(name: str) -> Path:
    try:
        return models.resolve(name)
    except models.ModelError as e:
        pytest.fail(f"{e} (run `make models`)")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture(scope="session")
def segmentation_model_path() -> Path:
    return _model("segmentation-3.0")


@pytest.fixture(scope="session")
def embedding_model_path() -> Path:
    return _model("campplus")


@pytest.fixture(scope="session")
def whisper_tiny_en_path() -> Path:
    return _model("tiny.en")


@pytest.fixture(scope="session")
def whisper_base_path() -> Path:
    return _model("base")


@pytest.fixture(scope="session")
def vad_model_path() -> Path:
    return _model("silero-vad")
