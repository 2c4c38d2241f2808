"""The ASGI application: routes, error answers, and ``create_app``.

Endpoints (docs/api.md has each with curl and Python examples):

    GET    /health                          status, models, queue
    GET    /v1/models                       the served whisper models (OpenAI's list shape)
    POST   /v1/audio/transcriptions         OpenAI-compatible, with speakers
    POST   /v1/audio/translations           the same, English text (multilingual models)
    POST   /v1/audio/diarizations           who spoke when: rttm, json, txt, stats
    POST   /v1/jobs                         submit a recording; 202 and the job
    GET    /v1/jobs                         recent jobs
    GET    /v1/jobs/{id}                    status and progress
    GET    /v1/jobs/{id}/result?format=F    every format the CLI writes (+ verbose_json)
    POST   /v1/jobs/{id}/cancel             stop it
    DELETE /v1/jobs/{id}                    stop it and delete its files now
    GET    /v1/speakers                     enrolled and remembered speakers (never a voiceprint)
    POST   /v1/speakers                     enroll from a finished job's speaker
    PATCH  /v1/speakers/{name}              rename
    DELETE /v1/speakers/{name}              forget
    POST   /v1/speakers/merge               join two entries
    POST   /v1/speakers/forget-unknown      forget remembered unknown voices
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from .config import ServerConfig
from .errors import ApiError, error_body
from .jobs import DONE, FINISHED, Job
from .openai_api import render, response_format, timestamp_granularities
from .options import boolean, number, read_options
from .security import Guard
from .speakers import Speakers
from .uploads import Form, StoredFile, read_form

if TYPE_CHECKING:
    from .service import Service

RESULT_MEDIA = {"json": "application/json", "json-compact": "application/json", "verbose_json": "application/json",
                "srt": "application/x-subrip; charset=utf-8", "vtt": "text/vtt", "html": "text/html",
                "txt": "text/plain", "tsv": "text/tab-separated-values", "rttm": "text/plain", "stats": "text/plain",
                "stats-tsv": "text/tab-separated-values"}
DIARIZE_RESPONSE = ("json", "rttm", "txt", "stats", "stats-tsv")


def _service(request: Request) -> Service:
    return request.app.state.service


def _the_file(form: Form) -> StoredFile:
    if not form.files:
        raise ApiError(400, "no audio: send it in the multipart field 'file'", param="file")
    return form.files[0]


async def _receive_job(request: Request, *, persisted: bool, task: str | None = None, translate: bool = False,
                       check_form: Callable[[Form], None] | None = None) -> tuple[Job, Form]:
    """Reserve a queue place, stream the upload to disk, read and check the options, queue
    the job. ``task`` None: the form's ``task`` field (transcribe, translate, diarize);
    ``check_form``: the endpoint's own checks of the form, before the job is queued."""
    service = _service(request)
    slot = service.reserve()  # 429 before a byte of the body is read
    job_id, d = service.new_dir(persisted)
    try:
        try:
            form = await read_form(request.stream(), request.headers.get("content-type"), d,
                                   max_file_bytes=service.config.max_upload_bytes)
        except ClientDisconnect:
            raise ApiError(400, "the upload was cut off") from None
        upload = _the_file(form)
        if check_form is not None:
            check_form(form)
        if task is None:
            task = (form.get("task") or "transcribe").lower()
            if task not in ("transcribe", "translate", "diarize"):
                raise ApiError(400, f"task {task!r} is not transcribe, translate or diarize", param="task")
            translate, task = task == "translate", "transcribe" if task == "translate" else task
        model = service.pick_model(form.get("model")) if task == "transcribe" else ""
        opts = service.check(read_options(form, task=task, model=model, translate=translate))
        job = Job(job_id, task, upload.filename, model, opts.to_json(), persisted=persisted, size=upload.size)
        await run_in_threadpool(service.submit, job, upload.path, slot)
        return job, form
    except BaseException:
        service.discard(job_id, persisted)
        raise
    finally:
        slot.release()


async def _wait(request: Request, job: Job) -> Job:
    """Wait for a job to stop, cancelling it if the client goes away."""
    loop = asyncio.get_running_loop()
    stopped = asyncio.Event()

    def wake() -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(stopped.set)

    job.notify(wake)
    while not stopped.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopped.wait(), 1.0)
        if not stopped.is_set() and await request.is_disconnected():
            with contextlib.suppress(ApiError):
                _service(request).cancel(job.id)
            raise ApiError(400, "the client went away")
    if job.status != DONE:
        raise ApiError(job.error_status or 500, job.error or f"the job {job.status}")
    return job


async def _answer_now(request: Request, *, task: str, translate: bool = False,
                      check_form: Callable[[Form], None] | None = None) -> Response:
    """The synchronous endpoints: one request, one job (not kept), the answer when done."""
    service = _service(request)
    job, form = await _receive_job(request, persisted=False, task=task, translate=translate, check_form=check_form)
    try:
        await _wait(request, job)
        assert job.result is not None
        # The pipeline's own time (the CLI's JSON "timings.total"): what the request took beyond it is the API's.
        timing = {"Server-Timing": f"pipeline;dur={1000 * job.result.timings.total:.0f}"}
        if task == "diarize":
            from ..outputs.destination import render_turns

            fmt = (form.get("response_format") or "json").lower()
            return Response(render_turns(job.result, fmt), media_type=RESULT_MEDIA[fmt], headers=timing)
        fmt = response_format(form.get("response_format"))
        granularities = timestamp_granularities(form.getlist("timestamp_granularities[]")
                                                + form.getlist("timestamp_granularities"))
        body, media = render(job.result, fmt, granularities, "translate" if translate else "transcribe",
                             number(form, "temperature", 0.0, 1.0) or 0.0)
        return Response(body, media_type=media, headers=timing)
    finally:
        job.notify(lambda: service.discard(job.id, persisted=False))


def _check_openai_form(form: Form) -> None:
    """What OpenAI's endpoint takes that is not served here: a clear 400, never ignored silently."""
    response_format(form.get("response_format"))
    timestamp_granularities(form.getlist("timestamp_granularities[]") + form.getlist("timestamp_granularities"))
    number(form, "temperature", 0.0, 1.0)
    if boolean(form, "stream", False):
        raise ApiError(400, "streaming is not available: leave 'stream' out (long recordings: the jobs API, "
                       "/v1/jobs)", param="stream")
    if form.getlist("known_speaker_names[]") or form.getlist("known_speaker_references[]"):
        raise ApiError(400, "known_speaker_names/references are not taken per request: enroll speakers once "
                       "(POST /v1/speakers) and they are named in every transcription", param="known_speaker_names")
    if response_format(form.get("response_format")) == "diarized_json" and boolean(form, "diarize", True) is False:
        raise ApiError(400, "diarized_json needs diarization (diarize=false)", param="diarize")


async def transcriptions(request: Request) -> Response:
    return await _openai(request, translate=False)


async def translations(request: Request) -> Response:
    return await _openai(request, translate=True)


async def _openai(request: Request, translate: bool) -> Response:
    return await _answer_now(request, task="transcribe", translate=translate, check_form=_check_openai_form)


async def diarizations(request: Request) -> Response:
    def check(form: Form) -> None:
        fmt = (form.get("response_format") or "json").lower()
        if fmt not in DIARIZE_RESPONSE:
            raise ApiError(400, f"response_format {fmt!r} is not one of {', '.join(DIARIZE_RESPONSE)}",
                           param="response_format")

    return await _answer_now(request, task="diarize", check_form=check)


def _job_view(request: Request, job: Job) -> dict[str, Any]:
    view = job.public()
    view["queue_position"] = _service(request).position(job)
    view["cancel_requested"] = job.cancel.is_set() and job.status not in FINISHED
    view["url"] = f"/v1/jobs/{job.id}"
    view["result_url"] = f"/v1/jobs/{job.id}/result" if job.status == DONE else None
    return view


async def create_job(request: Request) -> Response:
    job, _ = await _receive_job(request, persisted=True)
    return JSONResponse(_job_view(request, job), status_code=202, headers={"Location": f"/v1/jobs/{job.id}"})


async def list_jobs(request: Request) -> Response:
    status = request.query_params.get("status")
    try:
        limit = max(1, min(1000, int(request.query_params.get("limit", "100"))))
    except ValueError:
        raise ApiError(400, "limit must be a whole number", param="limit") from None
    jobs = await run_in_threadpool(_service(request).recent, limit, status)
    return JSONResponse({"object": "list", "data": [_job_view(request, j) for j in jobs]})


async def get_job(request: Request) -> Response:
    job = await run_in_threadpool(_service(request).get, request.path_params["job_id"])
    return JSONResponse(_job_view(request, job))


async def job_result(request: Request) -> Response:
    service = _service(request)
    job = await run_in_threadpool(service.get, request.path_params["job_id"])
    fmt = request.query_params.get("format", "json").lower()
    path = service.result_path(job, fmt)
    if not path.is_file():  # expired between the lookup and now
        raise ApiError(404, f"the results of job {job.id} are gone (expired)", code="job_not_found")
    from .service import result_file

    stem = job.filename.rsplit(".", 1)[0] if "." in job.filename else job.filename
    name = stem + result_file(fmt).removeprefix("result")
    headers = {}
    if fmt == "html":  # the report's scripts run, but with no access to this origin
        headers["Content-Security-Policy"] = "sandbox allow-scripts"
    inline = request.query_params.get("download", "0").lower() not in ("1", "true", "yes")
    return FileResponse(path, media_type=RESULT_MEDIA.get(fmt, "text/plain"), filename=name, headers=headers,
                        content_disposition_type="inline" if inline else "attachment")


async def cancel_job(request: Request) -> Response:
    job = await run_in_threadpool(_service(request).cancel, request.path_params["job_id"])
    return JSONResponse(_job_view(request, job), status_code=202)


async def delete_job(request: Request) -> Response:
    await run_in_threadpool(_service(request).delete, request.path_params["job_id"])
    return Response(status_code=204)


async def models(request: Request) -> Response:
    service = _service(request)
    return JSONResponse({"object": "list", "data": [
        {"id": name, "object": "model", "created": 0, "owned_by": "whispdiar", "default": name == service.default_model}
        for name in service.workers]})


async def health(request: Request) -> Response:
    from ..versions import version_lines

    service = _service(request)
    return JSONResponse({"status": "stopping" if service.stopping else "ok", "versions": version_lines(),
                         **service.status()})


# --------------------------------------------------------------------------- errors

def _json_error(status: int, message: str, code: str | None = None,
                headers: dict[str, str] | None = None) -> Response:
    return Response(error_body(status, message, code=code), status_code=status, media_type="application/json",
                    headers=headers)


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return Response(exc.body(), status_code=exc.status, media_type="application/json", headers=exc.headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = {404: f"no such endpoint: {request.method} {request.url.path} (see docs/api.md)",
               405: f"{request.method} is not allowed on {request.url.path}"}.get(exc.status_code, str(exc.detail))
    return _json_error(exc.status_code, message, headers=exc.headers)


async def _server_error(request: Request, exc: Exception) -> Response:
    # The traceback goes to the server's log (uvicorn prints it), never to the client.
    return _json_error(500, "internal server error (the server's log has the details)", "server_error")


# --------------------------------------------------------------------------- the app

def routes() -> list[Route]:
    def speakers_call(name: str) -> Callable[[Request], Any]:
        async def call(request: Request) -> Response:
            return await getattr(Speakers(_service(request)), name)(request)

        return call

    return [
        Route("/health", health, methods=["GET"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/audio/transcriptions", transcriptions, methods=["POST"]),
        Route("/v1/audio/translations", translations, methods=["POST"]),
        Route("/v1/audio/diarizations", diarizations, methods=["POST"]),
        Route("/v1/jobs", create_job, methods=["POST"]),
        Route("/v1/jobs", list_jobs, methods=["GET"]),
        Route("/v1/jobs/{job_id}", get_job, methods=["GET"]),
        Route("/v1/jobs/{job_id}", delete_job, methods=["DELETE"]),
        Route("/v1/jobs/{job_id}/result", job_result, methods=["GET"]),
        Route("/v1/jobs/{job_id}/cancel", cancel_job, methods=["POST"]),
        Route("/v1/speakers", speakers_call("listing"), methods=["GET"]),
        Route("/v1/speakers", speakers_call("enroll"), methods=["POST"]),
        Route("/v1/speakers/merge", speakers_call("merge"), methods=["POST"]),
        Route("/v1/speakers/forget-unknown", speakers_call("forget_unknown"), methods=["POST"]),
        Route("/v1/speakers/{name:path}", speakers_call("rename"), methods=["PATCH"]),
        Route("/v1/speakers/{name:path}", speakers_call("remove"), methods=["DELETE"]),
    ]


def create_app(config: ServerConfig | None = None, *, service: Service | None = None) -> Any:
    """The ASGI application of ``whispdiar serve``, for any ASGI server::

        import uvicorn
        from whispdiar.server import ServerConfig, create_app

        uvicorn.run(create_app(ServerConfig(models=("tiny.en",))), host="127.0.0.1", port=8765)

    ``service``: an already loaded ``Service`` (the command loads the models before it
    binds the port, so a bad model is a one-line error); the app then does not close it.
    Without one, the models load at the app's startup and are freed at its shutdown.
    Security (Host, Origin, token, upload limit) comes from ``config``; the app itself
    does not know which address it is bound to, so keep ``config.host`` the one you bind.
    """
    config = (config or (service.config if service is not None else ServerConfig())).check()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        from .service import Service

        own = service is None
        app.state.service = await run_in_threadpool(Service, config) if own else service
        try:
            yield
        finally:
            if own:
                await run_in_threadpool(app.state.service.close)

    app = Starlette(routes=routes(), lifespan=lifespan, exception_handlers={
        ApiError: _api_error, HTTPException: _http_error, Exception: _server_error})
    return Guard(app, config)
