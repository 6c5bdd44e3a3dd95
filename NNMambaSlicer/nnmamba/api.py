"""What the nnmamba server and its clients agree on, in one dependency-free place: the HTTP API's version, the
token's environment variable and file, the default port, and the job states. Imported by ``server/``, ``client.py``,
``cli.py`` and the Slicer modules' backend code."""

from __future__ import annotations

from pathlib import Path

API_VERSION = 1
TOKEN_ENV = "NNMAMBA_SERVER_TOKEN"
DEFAULT_TOKEN_FILE = Path.home() / ".nnmamba" / "server-token"
DEFAULT_PORT = 8765

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
FINAL_STATES = (DONE, FAILED, CANCELLED)
