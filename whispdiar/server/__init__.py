"""``whispdiar serve``: the HTTP API (docs/api.md).

One process loads the models once and serves them: an OpenAI-compatible transcription
endpoint with speakers, jobs for long recordings (persisted, resumed after a restart),
diarization, and the speaker database. This package owns only the HTTP side; the work is
the library's (``whispdiar.batch.job``: the same worker, namer and writers as the CLI).

- ``config``    ServerConfig: the settings and the checks a bad one fails on
- ``app``       the Starlette application, its routes and error answers; ``create_app``
- ``openai_api`` OpenAI's request fields and response shapes
- ``options``   a request's options, checked, stored with its job
- ``jobs``      the job records (SQLite) and the bounded queue
- ``service``   the loaded models and the job workers
- ``speakers``  the speaker database endpoints
- ``security``  Host / Origin / token / size checks on every request
- ``uploads``   multipart uploads streamed to disk
- ``runner``    uvicorn for the command: port first, clean stop on SIGINT/SIGTERM
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .config import ServerConfig

if TYPE_CHECKING:
    from .app import create_app

__all__ = ["ServerConfig", "create_app"]


def __getattr__(name: str) -> Any:
    # Starlette is imported on first use: `whispdiar serve --help` and config checks stay quick.
    if name == "create_app":
        from .app import create_app

        return create_app
    raise AttributeError(f"module 'whispdiar.server' has no attribute {name!r}")
