"""Multipart uploads streamed to disk as they arrive, with limits.

The file part goes straight into a file the server names (``dest/upload-N``, created
0600 with ``O_EXCL | O_NOFOLLOW`` inside a private directory), chunk by chunk as the body
arrives: memory does not grow with the upload, and a body past the limit is cut at the
limit (413). The client's file name is kept only as text shown in the results (its last
path component, printable characters only); it never becomes a path. Form fields are
small text values (``MAX_FIELDS`` of at most ``MAX_FIELD_BYTES``).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from python_multipart import MultipartParser
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import parse_options_header

from .errors import ApiError, too_large
from .security import drain_chunks

MAX_FIELDS = 64
MAX_FIELD_BYTES = 64 << 10
MAX_NAME_CHARS = 200


@dataclass(slots=True)
class StoredFile:
    field: str  # the form field it came in ("file")
    path: Path  # where the server stored it
    filename: str  # the client's name, made safe to show (never used as a path)
    size: int = 0


@dataclass(slots=True)
class Form:
    fields: dict[str, list[str]] = field(default_factory=dict)
    files: list[StoredFile] = field(default_factory=list)

    def get(self, name: str) -> str | None:
        """The field's value (the last one if sent more than once); None when absent or empty."""
        values = self.fields.get(name)
        return values[-1].strip() or None if values else None

    def getlist(self, name: str) -> list[str]:
        return [v.strip() for v in self.fields.get(name, []) if v.strip()]

    def remove_files(self) -> None:
        for f in self.files:
            f.path.unlink(missing_ok=True)


def safe_filename(raw: str | None, default: str = "audio") -> str:
    """The last path component of a client's file name, printable characters only, at most
    ``MAX_NAME_CHARS`` (its extension kept); ``default`` when nothing is left."""
    name = (raw or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if c.isprintable()).strip().lstrip(".").strip()
    if not name:
        return default
    if len(name) > MAX_NAME_CHARS:
        stem, dot, ext = name.rpartition(".")
        name = (stem[:MAX_NAME_CHARS - len(ext) - 1] + "." + ext) if dot and len(ext) <= 16 else name[:MAX_NAME_CHARS]
    return name


class _Collector:
    """The parser's callbacks: fields into memory (bounded), the file part into its file."""

    def __init__(self, dest: Path, max_file_bytes: int, file_fields: tuple[str, ...], max_files: int):
        self.dest = dest
        self.max_file_bytes = max_file_bytes
        self.file_fields = file_fields
        self.max_files = max_files
        self.form = Form()
        self.error: ApiError | None = None
        self._header_name = b""
        self._header_value = b""
        self._disposition = b""
        self._field: str | None = None
        self._data = bytearray()
        self._file: StoredFile | None = None
        self._fd: int | None = None
        self.fields_seen = 0

    def callbacks(self) -> dict:
        return {"on_part_begin": self.part_begin, "on_part_data": self.part_data, "on_part_end": self.part_end,
                "on_header_field": self.header_field, "on_header_value": self.header_value,
                "on_header_end": self.header_end, "on_headers_finished": self.headers_finished}

    def fail(self, error: ApiError) -> None:
        if self.error is None:
            self.error = error
        raise _Stop

    def part_begin(self) -> None:
        self._disposition = b""
        self._field = None
        self._data.clear()
        self._file = None

    def header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def header_end(self) -> None:
        if self._header_name.strip().lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_name = self._header_value = b""

    def headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        if b"name" not in options:
            self.fail(ApiError(400, "a multipart part has no field name"))
        name = options[b"name"].decode("utf-8", "replace")
        self._field = name
        if b"filename" not in options:
            self.fields_seen += 1
            if self.fields_seen > MAX_FIELDS:
                self.fail(ApiError(400, f"more than {MAX_FIELDS} form fields"))
            return
        if name not in self.file_fields:
            self.fail(ApiError(400, f"unexpected file in the form field '{name}' (the audio goes in "
                               f"'{self.file_fields[0]}')", param=name))
        if len(self.form.files) >= self.max_files:
            self.fail(ApiError(400, f"at most {self.max_files} file{'s' * (self.max_files != 1)} per request"))
        path = self.dest / f"upload-{len(self.form.files) + 1}"
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        raw = options[b"filename"]
        try:
            shown = raw.decode("utf-8")
        except UnicodeDecodeError:
            shown = raw.decode("latin-1")
        self._file = StoredFile(name, path, safe_filename(shown))
        self.form.files.append(self._file)

    def part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self._file is None:
            if len(self._data) + len(chunk) > MAX_FIELD_BYTES:
                self.fail(ApiError(400, f"the form field '{self._field}' is longer than {MAX_FIELD_BYTES} bytes",
                                   param=self._field))
            self._data.extend(chunk)
            return
        self._file.size += len(chunk)
        if self._file.size > self.max_file_bytes:
            self.fail(too_large(self.max_file_bytes))
        assert self._fd is not None
        view = memoryview(chunk)
        while view:  # page-cache writes of <= 64 KiB: quick enough for the event loop
            view = view[os.write(self._fd, view):]

    def part_end(self) -> None:
        if self._file is not None:
            self.close_file()
        elif self._field is not None:
            self.form.fields.setdefault(self._field, []).append(self._data.decode("utf-8", "replace"))

    def close_file(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)


class _Stop(Exception):
    """Raised from a callback to stop parsing (the reason is in ``_Collector.error``)."""


async def read_form(chunks: AsyncIterator[bytes], content_type: str | None, dest: Path, *, max_file_bytes: int,
                    file_fields: tuple[str, ...] = ("file",), max_files: int = 1) -> Form:
    """Parse a ``multipart/form-data`` body from ``chunks``, storing its files in ``dest``
    (a private directory). On any error the files stored so far are removed."""
    ctype, params = parse_options_header(content_type or "")
    if ctype != b"multipart/form-data" or b"boundary" not in params:
        raise ApiError(415 if ctype != b"multipart/form-data" else 400,
                       "send the audio as multipart/form-data (a 'file' field and the options as fields)")
    sink = _Collector(dest, max_file_bytes, file_fields, max_files)
    parser = MultipartParser(params[b"boundary"], sink.callbacks())  # type: ignore[arg-type]
    try:
        async for chunk in chunks:
            if chunk:
                parser.write(chunk)
        parser.finalize()
    except _Stop:
        sink.close_file()
        sink.form.remove_files()
        if sink.error is not None and sink.error.status == 413:
            await drain_chunks(chunks)  # so a client that sends its whole body unasked sees the 413
        assert sink.error is not None
        raise sink.error from None
    except FormParserError:
        sink.close_file()
        sink.form.remove_files()
        raise ApiError(400, "malformed multipart/form-data body") from None
    except BaseException:  # the client went away, or the server is stopping
        sink.close_file()
        sink.form.remove_files()
        raise
    sink.close_file()
    return sink.form
