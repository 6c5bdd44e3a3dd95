"""Just enough HTTP for the server tests: every call returns (status, headers, body bytes), errors included, so a
test sees exactly what a client would (no retries, no client-side checks: those belong to nnmamba.client)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request


class RawHTTP:
    def __init__(self, url, token):
        self.url, self.token = url, token
        self.host, self.port = url.split("//")[1].split(":")[0], int(url.rsplit(":", 1)[1])

    def call(self, method, path, body=None, headers=None, json_body=None, auth=True, timeout=60):
        headers = dict(headers or {})
        if auth:
            headers.setdefault("Authorization", f"Bearer {self.token}")
        if json_body is not None:
            body = json_body if isinstance(json_body, bytes) else json.dumps(json_body).encode()
            headers.setdefault("Content-Type", "application/json")
        elif body is not None:
            headers.setdefault("Content-Type", "application/octet-stream")
        request = urllib.request.Request(self.url + path, data=body, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, response.headers, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.headers, error.read()

    def json(self, method, path, expect=200, **kwargs):
        status, _, body = self.call(method, path, **kwargs)
        assert status == expect, (status, body)
        return json.loads(body) if body else None
