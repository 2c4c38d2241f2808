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


def make_private_dir(path: Path) -> bool:
    """Create ``path`` (and missing parents) if needed; a directory created here is 0700.

    Returns True when ``path`` was created. An existing directory is left as it is: its
    mode is the user's choice (the speaker database warns when it is readable by others).
    Missing parents get the usual mode; only the leaf holds whispdiar's data.
    """
    if path.is_dir():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        if path.is_dir():
            return False  # another process was first; its mode is its own
        raise
    os.chmod(path, 0o700)  # mkdir's mode is masked by the umask (e.g. 0277 would leave 0500)
    return True
