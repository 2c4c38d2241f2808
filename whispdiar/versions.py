"""Versions of whispdiar and of the engines it runs on, for ``whispdiar --version``.

Nothing here loads a model: whisper.cpp's version comes from its own ``whisper_version()``
in the library pywhispercpp links, onnxruntime's from the installed package.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import importlib.util

UNKNOWN = "unknown"


def _dist_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def whisper_cpp_version() -> str | None:
    """whisper.cpp's own version string (e.g. "1.8.5"), or None if it cannot be read."""
    spec = importlib.util.find_spec("_pywhispercpp")
    if spec is None or not spec.origin:
        return None
    try:
        # dlsym on the extension's handle also searches the libraries it links (libwhisper),
        # wherever the wheel put them.
        fn = ctypes.CDLL(spec.origin).whisper_version
    except (OSError, AttributeError):  # not loadable, or a whisper.cpp without whisper_version()
        return None
    fn.restype = ctypes.c_char_p
    fn.argtypes = []
    raw = fn()
    return raw.decode("ascii", "replace") if raw else None


def onnxruntime_version() -> str | None:
    try:
        import onnxruntime
    except ImportError:
        return None
    return str(onnxruntime.__version__)


def version_lines() -> list[str]:
    """``whispdiar X`` / ``whisper.cpp X (pywhispercpp Y)`` / ``onnxruntime Z``."""
    pywhispercpp = _dist_version("pywhispercpp")
    whisper = f"whisper.cpp {whisper_cpp_version() or UNKNOWN}"
    if pywhispercpp:
        whisper += f" (pywhispercpp {pywhispercpp})"
    return [
        f"whispdiar {_dist_version('whispdiar') or UNKNOWN}",
        whisper,
        f"onnxruntime {onnxruntime_version() or UNKNOWN}",
    ]
