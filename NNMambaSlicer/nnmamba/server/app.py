"""The FastAPI application: HTTP API v1 (routes only; the work is in :mod:`nnmamba.server.service`)."""

from __future__ import annotations

import contextlib
from typing import List, Literal, Optional

from fastapi import FastAPI, Header, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from .. import __version__
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
from .errors import CatchAll, ServiceError, install_error_handlers
from .service import Service
from .settings import API_VERSION

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
    app.add_middleware(TokenGuard, token=settings.token)
    app.add_middleware(CatchAll)  # outermost: whatever goes wrong below becomes a logged 500

    @app.get("/health", response_model=Health, tags=["server"])
    def health():
        """Liveness only; needs no token and says nothing else."""
        return {"status": "ok"}

    @app.get("/version", response_model=VersionInfo, responses=_errors(), tags=["server"])
    def version():
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

    @app.post("/sessions", status_code=201, response_model=SessionCreated, responses=_errors(400, 413, 422),
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
        data = await uploads.receive_into_buffer(request.stream(), expected)
        volume = await run_in_threadpool(uploads.volume_from_bytes, data, full_shape, voxel_type, geometry,
                                         name or "uploaded volume")
        return service.add_session(volume, name)

    @app.post("/sessions/file", status_code=201, response_model=SessionCreated, responses=_errors(400, 413, 422),
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
        handle, path = uploads.temporary_upload(suffix)
        try:
            with handle:
                await uploads.receive_into_file(request.stream(), handle, settings.max_upload_bytes)
            volume = await run_in_threadpool(uploads.read_volume_file, path, suffix, settings.max_voxels, filename)
        finally:
            path.unlink(missing_ok=True)
        return service.add_session(volume, name or filename)

    @app.get("/sessions/{session_id}", response_model=SessionInfo, responses=_errors(404), tags=["sessions"])
    def get_session(session_id: str):
        return service.session_info(session_id)

    @app.delete("/sessions/{session_id}", status_code=204, responses=_errors(404), tags=["sessions"])
    def delete_session(session_id: str):
        service.sessions.delete(session_id)
        return Response(status_code=204)

    @app.post("/sessions/{session_id}/jobs", status_code=202, response_model=JobCreated,
              responses=_errors(404, 422, 429), tags=["jobs"])
    def create_job(session_id: str, job: JobRequest):
        created = service.submit(session_id, job.task, job.model, job.options.model_dump())
        return {"id": created.id, "state": created.state}

    @app.get("/jobs/{job_id}", response_model=JobInfo, responses=_errors(404), tags=["jobs"])
    def get_job(job_id: str):
        return service.jobs.get(job_id).info()

    @app.get("/jobs/{job_id}/result", responses={200: {"content": _RESULT_CONTENT}, **_errors(404, 409)},
             tags=["jobs"])
    def get_result(job_id: str, format: Literal["file", "json"] = "file"):
        """The result file (.seg.nrrd, .mrk.json or .json), or with format=json its JSON form."""
        result = service.job_result(job_id)
        if format == "json":
            return result.document
        return Response(result.data, media_type=result.media_type,
                        headers={"Content-Disposition": f'attachment; filename="{result.filename}"'})

    @app.delete("/jobs/{job_id}", status_code=202, response_model=CancelAnswer, responses=_errors(404, 409),
                tags=["jobs"])
    def cancel_job(job_id: str):
        return {"state": service.jobs.cancel(job_id)}

    @app.post("/sessions/{session_id}/click", response_model=ClickAnswer, responses=_errors(404, 422, 503),
              tags=["click"])
    def click(session_id: str, request: ClickRequest):
        """Segment the structure under the points (run at once, not queued; waits for a running job's device)."""
        return service.click(session_id, request.model, request.positive, request.negative, request.coordinates)

    return app
