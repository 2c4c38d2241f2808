"""Where whispdiar keeps its data: ``$WHISPDIAR_HOME`` or the platform's user data dir."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs


def data_dir() -> Path:
    """Root data directory (not created here)."""
    env = os.environ.get("WHISPDIAR_HOME")
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_data_dir("whispdiar", appauthor=False))


def models_dir() -> Path:
    return data_dir() / "models"


def speakers_db_path() -> Path:
    return data_dir() / "speakers.db"
