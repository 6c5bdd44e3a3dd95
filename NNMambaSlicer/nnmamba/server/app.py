"""The FastAPI application: HTTP API v1 (routes only; the work is in :mod:`nnmamba.server.service`).

Routes that only look something up (health, version, a job's state, cancel, a session, a result) are ``async``:
they never wait for one of the worker threads, so they answer at once however busy the server is. Clicks wait for
the device on the event loop too; only their computation, the uploads' decoding and the model listing use threads.
"""

from __future__ import annotations

import contextlib
from typing import List, Literal, Optional

from fastapi import FastAPI, Header, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from .. import __version__
from ..api import API_VERSION
from . import uploads
from .api_models import (
    CancelAnswer,
    ClickAnswer,
    ClickRequest,
    Health,
    JobCreated,
    JobInfo,
    JobRequest,
    ModelSummary,
    Problem,
    SessionCreated,
    SessionInfo,
    VersionInfo,
)
from .auth import TokenGuard
from .errors import BodyLimit, CatchAll, ServiceError, install_error_handlers
from .service import Service

UPLOAD_ROUTES = {("POST", "/sessions"), ("POST", "/sessions/file")}
BOOT_HEADER = "X-NNMamba-Boot"

_RAW_BODY = {"requestBody": {"required": True, "content": {"application/octet-stream": {
    "schema": {"type": "string", "format": "binary"}}}}}
_RESULT_CONTENT = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                   "application/json": {"schema": {"type": "object"}}}


def _errors(*codes):
    return {code: {"model": Problem} for code in (401, *codes)}


def create_app(settings):
    """The ASGI app for ``settings`` (a :class:`~nnmamba.server.settings.ServerSettings`). Its worker and sweeper
    threads start with the app's lifespan (and the worker at the first job, if the lifespan never ran)."""
    service = Service(settings)
    inflight = uploads.ByteBudget(settings.max_inflight_upload_bytes)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        service.start()
        try:
            yield
        finally:
            service.stop()

    app = FastAPI(title="nnmamba", version=__version__, description="nnMamba inference server, HTTP API v1. Every "
                  "endpoint but GET /health needs `Authorization: Bearer <token>`.", docs_url=None, redoc_url=None,
                  lifespan=lifespan)
    app.state.service = service
    app.state.settings = settings
    install_error_handlers(app)
    app.add_middleware(BodyLimit, limit=settings.max_json_bytes, exempt=UPLOAD_ROUTES)   # after the token check
    app.add_middleware(TokenGuard, token=settings.token)
    app.add_middleware(CatchAll)  # outermost: whatever goes wrong below becomes a logged 500

    @app.get("/health", response_model=Health, tags=["server"])
    async def health():
        """Liveness only; needs no token and says nothing else."""
        return {"status": "ok"}

    @app.head("/health", include_in_schema=False)
    async def health_probe():
        """What HEAD-only health probes (some load balancers) send."""
        return Response(status_code=200)

    @app.get("/version", response_model=VersionInfo, responses=_errors(), tags=["server"])
    async def version(response: Response):
        """The nnmamba and API versions; the X-NNMamba-Boot header changes whenever the server restarts (and
        forgets every session and job)."""
        response.headers[BOOT_HEADER] = service.boot
        return {"nnmamba": __version__, "api": API_VERSION}

    @app.get("/environment", responses=_errors(), tags=["server"])
    def environment():
        """nnmamba.environment.environment_report() plus memory use, the job queue and the limits."""
        return service.environment()

    @app.get("/models", response_model=List[ModelSummary], responses=_errors(), tags=["models"])
    def list_models():
        return service.models.summaries()

    @app.get("/models/{model_id}", responses=_errors(404), tags=["models"])
    def get_model(model_id: str):
        """The package's model.json."""
        return service.models.find(model_id).meta

    @app.post("/sessions", status_code=201, response_model=SessionCreated,
              responses=_errors(400, 408, 413, 422, 503, 507),
              openapi_extra=_RAW_BODY, tags=["sessions"])
    async def create_session(request: Request, shape: str = Query(..., description="K,J,I", max_length=64),
                             dtype: str = Query(..., description="int16, uint8, int8, uint16, int32, uint32, "
                                                                 "float32 or float64 (little-endian)"),
                             channels: int = Query(1, description="C; the body is (C, K, J, I) in C order"),
                             name: Optional[str] = Query(None, max_length=200),
                             x_geometry: Optional[str] = Header(None, alias="X-Geometry",
                                                                description='{"origin": [3], "spacing": [3], '
                                                                            '"direction": [9]} (LPS, ITK)')):
        """Upload raw voxels; everything that can be checked from the request line and headers is checked before
        the body is read."""
        voxel_type = uploads.parse_dtype(dtype)
        full_shape = uploads.parse_shape(shape, channels)
        expected = uploads.check_voxel_limit(full_shape, settings.max_voxels) * voxel_type.itemsize
        uploads.check_upload_size(expected, settings.max_upload_bytes, f"A {dtype} volume of shape {full_shape}")
        declared = uploads.content_length(request.headers)
        if declared is not None:
            uploads.check_upload_size(declared, settings.max_upload_bytes)
            if declared != expected:
                raise ServiceError(422, uploads.body_size_problem(declared, expected, full_shape, voxel_type))
        geometry = uploads.parse_geometry(x_geometry)
        reservation = service.reserve_session(full_shape)
        try:
            with inflight.holding(expected):
                data = await uploads.receive_into_buffer(uploads.body_chunks(request, settings.upload_timeout),
                                                         expected)
                volume = await run_in_threadpool(uploads.volume_from_bytes, data, full_shape, voxel_type, geometry,
                                                 name or "uploaded volume")
                del data
        except BaseException:
            reservation.release()
            service.memory.soon()
            raise
        return service.add_session(volume, name, reservation)

    @app.post("/sessions/file", status_code=201, response_model=SessionCreated,
              responses=_errors(400, 408, 413, 422, 503, 507),
              openapi_extra=_RAW_BODY, tags=["sessions"])
    async def create_session_from_file(request: Request,
                                       filename: str = Query(..., max_length=255,
                                                             description="e.g. ct.nii.gz (.nii.gz, .nii, .nrrd, .mha)"),
                                       name: Optional[str] = Query(None, max_length=200)):
        """Upload an image file; the voxel limit is checked from its header before the voxels are read."""
        suffix = uploads.file_suffix(filename)
        declared = uploads.content_length(request.headers)
        if declared is not None:
            uploads.check_upload_size(declared, settings.max_upload_bytes)
        with inflight.holding(declared or 0) as grow:
            handle, path = uploads.temporary_upload(suffix, service.scratch.path)
            try:
                with handle:
                    await uploads.receive_into_file(uploads.body_chunks(request, settings.upload_timeout), handle,
                                                    settings.max_upload_bytes, None if declared else grow)
                volume, reservation = await run_in_threadpool(uploads.read_volume_file, path, suffix,
                                                              settings.max_voxels, filename, service.sessions.reserve)
            except BaseException:
                service.memory.soon()
                raise
            finally:
                path.unlink(missing_ok=True)
        return service.add_session(volume, name or filename, reservation)

    @app.get("/sessions/{session_id}", response_model=SessionInfo, responses=_errors(404), tags=["sessions"])
    async def get_session(session_id: str):
        return service.session_info(session_id)

    @app.delete("/sessions/{session_id}", status_code=204, responses=_errors(404), tags=["sessions"])
    async def delete_session(session_id: str):
        """Forget the volume; its queued and running jobs are cancelled."""
        service.delete_session(session_id)
        return Response(status_code=204)

    @app.post("/sessions/{session_id}/jobs", status_code=202, response_model=JobCreated,
              responses=_errors(404, 413, 422, 429), tags=["jobs"])
    def create_job(session_id: str, job: JobRequest):
        created = service.submit(session_id, job.task, job.model, job.options.model_dump())
        return {"id": created.id, "state": created.state}

    @app.get("/jobs/{job_id}", response_model=JobInfo, responses=_errors(404), tags=["jobs"])
    async def get_job(job_id: str):
        return service.jobs.get(job_id).info()

    @app.get("/jobs/{job_id}/result", responses={200: {"content": _RESULT_CONTENT}, **_errors(404, 409)},
             tags=["jobs"])
    async def get_result(job_id: str, format: Literal["file", "json"] = "file"):
        """The result file (.seg.nrrd, .mrk.json or .json), or with format=json its JSON form."""
        result = service.job_result(job_id)
        if format == "json":
            return result.document
        return Response(result.data, media_type=result.media_type,
                        headers={"Content-Disposition": f'attachment; filename="{result.filename}"'})

    @app.delete("/jobs/{job_id}", status_code=202, response_model=CancelAnswer, responses=_errors(404, 409),
                tags=["jobs"])
    async def cancel_job(job_id: str):
        return {"state": service.jobs.cancel(job_id)}

    @app.post("/sessions/{session_id}/click", response_model=ClickAnswer, responses=_errors(404, 413, 422, 503),
              tags=["click"])
    async def click(session_id: str, body: ClickRequest, request: Request):
        """Segment the structure under the points (run at once, not queued: it waits for a running job to free the
        device, and goes before the next queued job)."""
        plan = await run_in_threadpool(service.prepare_click, session_id, body.model, body.positive, body.negative,
                                       body.coordinates)
        try:
            async with service.device_gate.click(settings.click_wait, request.is_disconnected):
                return await run_in_threadpool(service.run_click, plan)
        finally:
            service.end_click(plan)

    return app
