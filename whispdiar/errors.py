"""Errors a user can cause, each with its own exit code (documented in docs/cli.md).

The CLI prints ``str(error)`` as one line on stderr and exits with ``error.exit_code``;
anything else escaping is a bug.
"""

from __future__ import annotations


class WhispdiarError(Exception):
    """Base class: a problem with the user's input or environment, not a bug."""

    exit_code = 1


class UsageError(WhispdiarError):
    exit_code = 2


class InputNotFound(WhispdiarError):
    exit_code = 3


class InputIsDirectory(InputNotFound):
    exit_code = 10


class InputPermissionDenied(InputNotFound):
    """The input exists but this user may not read it (or a directory on its path)."""

    exit_code = 11


class AudioError(WhispdiarError):
    """Unreadable, empty, corrupt or otherwise unusable audio."""

    exit_code = 4


class CorruptAudio(AudioError):
    """A known format whose data is truncated or damaged (exit 4, like any AudioError)."""

    exit_code = 4


class EmptyInput(AudioError):
    """A file of 0 bytes."""

    exit_code = 12


class NoAudio(AudioError):
    """A valid audio file that holds no samples (zero-length audio)."""

    exit_code = 13


class NotAudio(AudioError):
    """Not a recognised audio format at all (e.g. a text file renamed .wav)."""

    exit_code = 14


class NonFiniteAudio(AudioError):
    """Float audio with NaN or infinite samples."""

    exit_code = 15


class UnsupportedCodec(AudioError):
    """A container FFmpeg reads, whose audio codec it has no decoder for."""

    exit_code = 16


class ModelError(WhispdiarError):
    """Unknown, missing or corrupt model file."""

    exit_code = 5


class ModelNotInstalled(ModelError):
    """A known model whose file is not there; the message names the fetch command."""

    exit_code = 17


class OutputError(WhispdiarError):
    """Cannot write an output file."""

    exit_code = 6


class VoiceprintError(WhispdiarError):
    """Speaker database problem (corrupt file, incompatible model, refused sample)."""

    exit_code = 7


class FetchError(ModelError):
    """No source of a model could be used."""

    exit_code = 8


# Conventional shell codes for signals (128 + signal number).
EXIT_SIGINT = 130
EXIT_SIGTERM = 143
# Batch run where some inputs failed and others succeeded.
EXIT_PARTIAL = 9
