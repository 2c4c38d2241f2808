"""The speaker database over HTTP: list, enroll from a job's result, rename, merge, forget.

The rules are the command line's (``whispdiar speakers ...``, ``enroll --from``): the
same library functions do the work, in one transaction each. No answer ever carries a
voiceprint: only names, counts, seconds and dates.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .. import errors as wd
from .errors import ApiError, from_whispdiar
from .jobs import DONE

if TYPE_CHECKING:
    from ..speakers.store import SpeakerInfo, VoiceprintStore
    from .service import Service

MAX_JSON_BYTES = 64 << 10


async def read_json(request: Request) -> dict[str, Any]:
    """A small JSON object body (at most ``MAX_JSON_BYTES``)."""
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > MAX_JSON_BYTES:
            raise ApiError(413, f"the JSON body is larger than {MAX_JSON_BYTES} bytes")
    try:
        doc = json.loads(data or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ApiError(400, "the body is not JSON") from None
    if not isinstance(doc, dict):
        raise ApiError(400, "the body must be a JSON object")
    return doc


def text_field(doc: dict[str, Any], name: str, required: bool = True) -> str | None:
    value = doc.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ApiError(400, f"'{name}' must be a non-empty string", param=name)
    return value.strip()


def speaker_view(s: SpeakerInfo) -> dict[str, Any]:
    def when(t: Any) -> str | None:
        return None if t is None else t.isoformat(timespec="seconds")

    return {"name": s.name, "kind": "unknown" if s.anonymous else "enrolled", "samples": s.samples,
            "speech_seconds": round(s.speech_seconds, 1), "created_at": when(s.created),
            "first_heard_at": when(s.first_heard), "last_heard_at": when(s.last_heard),
            "recordings": s.recordings, "heard_seconds": round(s.heard_seconds, 1)}


class Speakers:
    """The handlers, bound to one service's speaker database."""

    def __init__(self, service: Service):
        from ..paths import speakers_db_path

        self.service = service
        self.path: Path = service.config.speakers_db or speakers_db_path()

    def _store(self, create: bool = False) -> VoiceprintStore:
        from ..speakers.store import VoiceprintStore

        if not create and not self.path.exists():
            raise ApiError(404, "no speaker is enrolled yet", code="speaker_not_found")
        return VoiceprintStore(self.path, create=create, warn=self.service.warn)

    def _existing(self, store: VoiceprintStore, *names: str) -> None:
        known = {s.name for s in store.speakers()}
        for n in names:
            if n not in known:
                raise ApiError(404, f"no speaker named '{n}'", code="speaker_not_found")

    async def listing(self, request: Request) -> Response:
        def work() -> list[dict[str, Any]]:
            if not self.path.exists():
                return []
            with self._store() as store:
                return [speaker_view(s) for s in store.speakers()]

        return JSONResponse({"object": "list", "data": await _guarded(work)})

    async def enroll(self, request: Request) -> Response:
        """``{"name": "Anna", "job": "<id>", "speaker": "Speaker 2"}``: enroll a speaker of a
        finished job (transcription or diarization) from their single-speaker stretches."""
        from ..speakers.from_result import enroll_from_result
        from .service import AUDIO, RESULT, result_file

        doc = await read_json(request)
        name, job_id, speaker = (text_field(doc, k) for k in ("name", "job", "speaker"))
        assert name is not None and job_id is not None and speaker is not None
        job = self.service.get(job_id)
        if job.status != DONE or "json" not in job.formats:
            raise ApiError(409, f"job {job_id} is {job.status}; enroll from a finished job", code="job_not_done")
        d = self.service.jobs_dir / job.id
        result, audio = d / RESULT / result_file("json"), d / AUDIO
        pipeline = self.service.workers[self.service.default_model].pipeline

        def work() -> dict[str, Any]:
            with self._store(create=True) as store:
                r = enroll_from_result(store, name, result, speaker, diarizer=pipeline.diarizer, audio_path=audio)
            return {"name": r.name, "speaker": r.speaker.name, "label": r.speaker.label, "job": job.id,
                    "speech_seconds": round(r.speech_seconds, 1), "stretches": r.stretches,
                    "left_out_seconds": round(r.left_out_seconds, 1), "total_seconds": round(r.total_seconds, 1)}

        body = await _guarded(work, {str(result): f"job {job.id}", str(audio): job.filename})
        return JSONResponse(body, status_code=201)

    async def rename(self, request: Request) -> Response:
        """``PATCH /v1/speakers/{name}`` with ``{"name": "new name"}``."""
        old = request.path_params["name"].strip()
        new = text_field(await read_json(request), "name")
        assert new is not None

        def work() -> dict[str, Any]:
            with self._store() as store:
                self._existing(store, old)
                if new != old and new in {s.name for s in store.speakers()}:
                    raise ApiError(409, f"a speaker named '{new}' exists already; to join the two: "
                                   "POST /v1/speakers/merge", code="speaker_exists")
                store.rename(old, new)
            return {"name": new, "previous": old}

        return JSONResponse(await _guarded(work))

    async def remove(self, request: Request) -> Response:
        """``DELETE /v1/speakers/{name}``: forget the speaker and every voiceprint of theirs."""
        name = request.path_params["name"].strip()

        def work() -> None:
            with self._store() as store:
                self._existing(store, name)
                store.remove(name)

        await _guarded(work)
        return Response(status_code=204)

    async def merge(self, request: Request) -> Response:
        """``{"source": "Unknown 3", "target": "Bob"}``: source's samples and hearings go to target."""
        from ..speakers.memory import merge

        doc = await read_json(request)
        source, target = text_field(doc, "source"), text_field(doc, "target")
        assert source is not None and target is not None

        def work() -> dict[str, Any]:
            with self._store() as store:
                self._existing(store, source, target)
                return {"name": merge(store, source, target), "merged": source}

        return JSONResponse(await _guarded(work))

    async def forget_unknown(self, request: Request) -> Response:
        """``{"older_than": "30d"}`` (optional): forget remembered unknown voices."""
        from ..speakers.memory import forget_unknown, parse_age

        doc = await read_json(request)
        older = text_field(doc, "older_than", required=False)

        def work() -> dict[str, Any]:
            try:
                age = None if older is None else parse_age(older)
            except wd.UsageError:
                raise ApiError(400, f"older_than {older!r}: expected a number and a unit s, m, h, d or w (e.g. 30d)",
                               param="older_than") from None
            if not self.path.exists():
                return {"forgotten": []}
            with self._store() as store:
                return {"forgotten": forget_unknown(store, age)}

        return JSONResponse(await _guarded(work))


async def _guarded(work: Any, replace: dict[str, str] | None = None) -> Any:
    """``work()`` in a thread (SQLite and embeddings block); whispdiar errors as 400/500."""
    try:
        return await run_in_threadpool(work)
    except wd.WhispdiarError as e:
        raise from_whispdiar(e, replace) from None
