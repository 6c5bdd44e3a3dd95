"""The bearer token in front of every endpoint but ``GET /health``, and the client-version check.

It runs before routing, so a caller without the token learns nothing, not even which paths exist. Only the
``Authorization: Bearer`` header counts: a token in the query string would end up in logs and browser history.
"""

from __future__ import annotations

import hmac
import re

from .. import __version__
from ..api import API_VERSION
from .errors import json_error

UNAUTHORIZED = "Missing or invalid token."
CLIENT_HEADER = b"x-nnmamba-client"
OPEN_ENDPOINTS = {("GET", "/health"), ("HEAD", "/health")}
# Answered whatever the client's version, so that a client can find out what the server speaks.
VERSION_FREE_PATHS = {"/version", "/openapi.json"}
# First nnmamba release of each HTTP API version: a release speaks the API of the last entry at or below it.
API_OF_RELEASE = (((0, 1), 1),)


def api_of(version):
    """The HTTP API version a client of nnmamba ``version`` speaks (None: unknown or before the API existed).
    ``...; api=N`` in the header states it outright."""
    stated = re.search(r"\bapi\s*[=/:]\s*(\d+)", version, re.IGNORECASE)
    if stated:
        return int(stated.group(1))
    match = re.search(r"(\d+)\.(\d+)", version)
    if not match:
        return None
    release = (int(match.group(1)), int(match.group(2)))
    spoken = None
    for first, api in API_OF_RELEASE:
        if release >= first:
            spoken = api
    return spoken


def version_problem(client_version):
    """Why a client of that version cannot talk to this server, or None."""
    if api_of(client_version) == API_VERSION:
        return None
    return (f"client {client_version.strip()[:60]!r} and server {__version__} are incompatible: the server speaks "
            f"HTTP API {API_VERSION}. Install the same nnmamba version on both sides.")


class TokenGuard:
    """ASGI middleware: 401 without ``Authorization: Bearer <token>``, 409 for an incompatible client version."""

    def __init__(self, app, token):
        self.app = app
        self._expected = token.encode("ascii")

    def _authorized(self, headers):
        values = [value for name, value in headers if name == b"authorization"]
        if len(values) != 1:
            return False
        scheme, _, credentials = values[0].strip().partition(b" ")
        if scheme.lower() != b"bearer":
            return False
        return hmac.compare_digest(credentials.strip(), self._expected)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket" and not self._authorized(scope.get("headers", [])):
            return await send({"type": "websocket.close", "code": 1008})
        if scope["type"] != "http" or (scope["method"], scope["path"]) in OPEN_ENDPOINTS:
            return await self.app(scope, receive, send)
        headers = scope.get("headers", [])
        if not self._authorized(headers):
            return await json_error(401, UNAUTHORIZED, {"WWW-Authenticate": "Bearer"})(scope, receive, send)
        if scope["path"] not in VERSION_FREE_PATHS:
            client = next((value for name, value in headers if name == CLIENT_HEADER), None)
            if client is not None:
                problem = version_problem(client.decode("latin-1"))
                if problem:
                    return await json_error(409, problem)(scope, receive, send)
        return await self.app(scope, receive, send)
