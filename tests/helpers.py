"""Helpers shared by test modules (plain functions; fixtures live in conftest.py)."""

from __future__ import annotations

from whispdiar import errors, models


def models_installed(*names: str) -> bool:
    """True when every named model resolves (installed and intact)."""
    try:
        for n in names:
            models.resolve(n)
    except errors.ModelError:
        return False
    return True
