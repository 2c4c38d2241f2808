"""Errors as HTTP answers: one JSON shape (OpenAI's ``{"error": {...}}``, which its
clients turn into exceptions with the message), the right status, never a traceback."""

from __future__ import annotations

import json
from collections.abc import Mapping

from .. import errors as wd

# OpenAI's error types by status (its clients read "message"; "type" tells the kind).
TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
         404: "not_found_error", 405: "invalid_request_error", 409: "conflict_error",
         413: "request_too_large", 415: "invalid_request_error", 429: "rate_limit_error",
         500: "server_error", 503: "service_unavailable"}


class ApiError(Exception):
    """An answer other than success: ``status``, a one-line ``message``, and optional
    ``code`` (a stable word a program can test), ``param`` (the form field at fault)
    and extra response headers."""

    def __init__(self, status: int, message: str, *, code: str | None = None, param: str | None = None,
                 headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.headers = dict(headers or {})

    def body(self) -> bytes:
        return error_body(self.status, self.message, code=self.code, param=self.param)


def error_body(status: int, message: str, *, code: str | None = None, param: str | None = None) -> bytes:
    doc = {"error": {"message": message, "type": TYPES.get(status, "server_error"), "param": param, "code": code}}
    return json.dumps(doc, ensure_ascii=False).encode()


def from_whispdiar(e: wd.WhispdiarError, replace: Mapping[str, str] | None = None) -> ApiError:
    """The answer for a whispdiar error: the user's input (audio, options, speakers) is a
    400; the server's own trouble (models, disk) a 500. ``replace`` maps server paths in
    the message to what the client knows (the job's file name)."""
    message = str(e)
    for path, shown in (replace or {}).items():
        message = message.replace(path, shown)
    if isinstance(e, wd.AudioError | wd.InputNotFound):
        return ApiError(400, message, code="unreadable_audio")
    if isinstance(e, wd.UsageError | wd.VoiceprintError):
        return ApiError(400, message, code="invalid_value")
    return ApiError(500, message, code="server_error")


def too_large(limit: int) -> ApiError:
    from ..models import human_size

    return ApiError(413, f"the upload is larger than this server accepts ({human_size(limit)}, its --max-upload)",
                    code="upload_too_large", headers={"Connection": "close"})
