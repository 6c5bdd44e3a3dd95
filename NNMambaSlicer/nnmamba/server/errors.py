"""One error shape for every answer, ``{"detail": "<one sentence>"}``, whatever raised it.

The service code raises :class:`ServiceError` (no FastAPI import there); FastAPI's own errors (validation lists,
"Not Found") are rewritten to one readable sentence; anything unexpected becomes a logged, generic 500 and the server
carries on.
"""

from __future__ import annotations

import json
import logging

log = logging.getLogger("nnmamba.server")

INTERNAL_ERROR = "Internal server error; the server log has the details. The server is still running."


class ServiceError(Exception):
    """A request the server refuses: HTTP ``status`` and a message that says what was wrong and what to do."""

    def __init__(self, status, detail, headers=None):
        super().__init__(detail)
        self.status = int(status)
        self.detail = str(detail)
        self.headers = headers


def json_error(status, detail, headers=None):
    from starlette.responses import JSONResponse

    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def _place(location):
    """``('query', 'shape')`` -> "query parameter 'shape'"; ``('body', 'options', 'overlap')`` -> "body field ..."."""
    parts = [str(p) for p in location]
    if not parts:
        return "request"
    kind, rest = parts[0], parts[1:]
    names = {"query": "query parameter", "header": "header", "path": "path parameter", "cookie": "cookie"}
    if kind == "body":
        return f"body field '{'.'.join(rest)}'" if rest else "request body"
    return f"{names.get(kind, kind)} '{'.'.join(rest)}'" if rest else kind


def validation_message(errors):
    """FastAPI's list of validation errors as one sentence."""
    problems = []
    for error in errors[:5]:
        if error.get("type") == "json_invalid":
            problems.append("the request body is not valid JSON")
            continue
        message = str(error.get("msg", "invalid value")).rstrip(".")
        problems.append(f"{_place(error.get('loc', ()))}: {message}")
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return "Invalid request: " + "; ".join(problems) + more + ". See GET /openapi.json for the expected request."


def install_error_handlers(app):
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException

    @app.exception_handler(ServiceError)
    async def _service_error(request, error):
        return json_error(error.status, error.detail, error.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request, error):
        return json_error(422, validation_message(list(error.errors())))

    @app.exception_handler(HTTPException)
    async def _http_error(request, error):
        detail = error.detail
        if error.status_code == 404 and detail == "Not Found":
            detail = f"No endpoint {request.method} {request.url.path}; GET /openapi.json lists the API."
        elif error.status_code == 400 and detail == "There was an error parsing the body":
            detail = "The request body could not be parsed; send a JSON object in UTF-8."
        elif error.status_code == 405:
            detail = f"{request.method} is not allowed on {request.url.path}; GET /openapi.json lists the API."
        elif not isinstance(detail, str):
            detail = json.dumps(detail)
        return json_error(error.status_code, detail, getattr(error, "headers", None))


def _client_went_away(error):
    """A client that disconnected (mid-upload, or while its click waited): routine, not a server error."""
    from starlette.requests import ClientDisconnect

    from .device import ClientGone

    return isinstance(error, (ClientDisconnect, ClientGone))


class CatchAll:
    """ASGI middleware: an unexpected exception becomes a logged 500 with a generic message, never a dead server or a
    stack trace sent to the client. A client that went away is one line at INFO level (it must not be able to flood
    the log with tracebacks)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def tracking_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as error:
            if _client_went_away(error):
                log.info("The client of %s %s disconnected before the answer.", scope.get("method"), scope.get("path"))
                return
            log.exception("Unexpected error in %s %s", scope.get("method"), scope.get("path"))
            if started:  # too late for an error answer: the client sees a cut-off response
                return
            await json_error(500, INTERNAL_ERROR)(scope, receive, send)


class BodyLimit:
    """ASGI middleware: a request body other than the uploads' is refused (413) beyond ``limit`` bytes, by its
    Content-Length before anything is read, and by counting when it is streamed; so no large JSON is ever parsed
    (on the event loop) only to be refused afterwards. A request with both Content-Length and Transfer-Encoding is
    refused (400), as RFC 9112 allows: the two could be read differently by a proxy in front."""

    def __init__(self, app, limit, exempt=()):
        self.app = app
        self.limit = int(limit)
        self.exempt = set(exempt)
        self.message = (f"The request body is larger than {self.limit // 1024} KiB, the most this server accepts "
                        "outside the two upload routes; send a smaller request.")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = scope.get("headers", [])
        length = [value for name, value in headers if name == b"content-length"]
        if length and any(name == b"transfer-encoding" for name, _ in headers):
            return await json_error(400, "The request has both Content-Length and Transfer-Encoding; send one of "
                                         "them.")(scope, receive, send)
        if (scope["method"], scope["path"]) in self.exempt:
            return await self.app(scope, receive, send)
        if length and length[0].strip().isdigit() and int(length[0]) > self.limit:
            return await json_error(413, self.message)(scope, receive, send)
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    from starlette.exceptions import HTTPException

                    raise HTTPException(413, self.message)   # FastAPI re-raises these from its body reading
            return message

        await self.app(scope, limited_receive, send)
