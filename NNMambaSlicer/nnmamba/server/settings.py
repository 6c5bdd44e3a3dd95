"""What an operator decides about a server (address, token, limits), and the token file.

Kept free of FastAPI/uvicorn so that ``nnmamba serve --help`` and the client's tests can import it without them.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..api import DEFAULT_PORT, TOKEN_ENV

DEFAULT_SESSION_TTL = 3600.0
DEFAULT_MAX_UPLOAD_MB = 2048.0
DEFAULT_MAX_VOXELS = 600_000_000
DEFAULT_MODEL_MEMORY_GB = 8.0
DEFAULT_SESSION_MEMORY_GB = 8.0
DEFAULT_MAX_TILES = 4096
DEFAULT_UPLOAD_TIMEOUT = 30.0
DEFAULT_MAX_WAITING_CLICKS = 16
MAX_JSON_BYTES = 64 * 2**10
# What an Authorization header can carry as-is: visible ASCII, no spaces or quotes.
_TOKEN_PATTERN = re.compile(r"[A-Za-z0-9._~+/=:@!$&'()*,;-]+")


def default_token_file():
    return Path.home() / ".nnmamba" / "server-token"


@dataclass
class ServerSettings:
    """Everything :func:`nnmamba.server.app.create_app` needs. ``token`` must be set (see :func:`resolve_token`)."""

    token: str = ""
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    device: str = "auto"
    models_dir: Optional[Path] = None        # replaces the user models folder; bundled models are still served
    session_ttl: float = DEFAULT_SESSION_TTL  # seconds a session (and a finished job) lives without being used
    max_upload_bytes: int = int(DEFAULT_MAX_UPLOAD_MB * 2**20)
    max_voxels: int = DEFAULT_MAX_VOXELS      # C*K*J*I of one uploaded volume
    model_memory_bytes: int = int(DEFAULT_MODEL_MEMORY_GB * 2**30)
    sweep_interval: Optional[float] = None   # seconds between expiry sweeps (default: from session_ttl)
    max_queued_jobs: int = 64
    click_wait: float = 300.0                # seconds a click waits for the device before answering 503
    max_waiting_clicks: int = DEFAULT_MAX_WAITING_CLICKS   # more clicks waiting for the device get 503 at once
    max_network_voxels: Optional[int] = None  # C*K*J*I on the network grid after resampling (default: max_voxels)
    max_tiles: int = DEFAULT_MAX_TILES        # sliding-window tiles of one job
    max_session_bytes: int = int(DEFAULT_SESSION_MEMORY_GB * 2**30)   # all sessions' float32 voxels together
    session_evict_idle: float = 60.0          # seconds unused before a session may be evicted to make room
    max_inflight_upload_bytes: Optional[int] = None   # bodies of uploads in progress (default: max_upload_bytes)
    upload_timeout: float = DEFAULT_UPLOAD_TIMEOUT     # seconds an upload may send nothing before it is dropped
    max_json_bytes: int = MAX_JSON_BYTES      # any request body but the two uploads
    scratch_root: Optional[Path] = None       # where the per-server temporary folder goes (default: system temp)

    def __post_init__(self):
        check_token(self.token)
        if self.max_network_voxels is None:
            self.max_network_voxels = self.max_voxels
        if self.max_inflight_upload_bytes is None:
            self.max_inflight_upload_bytes = self.max_upload_bytes
        for name in ("session_ttl", "max_upload_bytes", "max_voxels", "model_memory_bytes", "max_queued_jobs",
                     "click_wait", "max_waiting_clicks", "max_network_voxels", "max_tiles", "max_session_bytes",
                     "max_inflight_upload_bytes", "upload_timeout", "max_json_bytes"):
            if not getattr(self, name) > 0:
                raise ValueError(f"Server setting {name} must be positive, got {getattr(self, name)!r}.")
        if not self.session_evict_idle >= 0:
            raise ValueError(f"Server setting session_evict_idle must be >= 0, got {self.session_evict_idle!r}.")
        if self.models_dir is not None:
            self.models_dir = Path(self.models_dir).expanduser()
        if self.scratch_root is not None:
            self.scratch_root = Path(self.scratch_root).expanduser()

    @property
    def sweep_seconds(self):
        if self.sweep_interval is not None:
            return max(float(self.sweep_interval), 0.05)
        return min(max(self.session_ttl / 4, 0.5), 60.0)


def check_token(token):
    if not isinstance(token, str) or not token:
        raise ValueError("The server needs a token: give --token / NNMAMBA_SERVER_TOKEN, or let it make one.")
    if not _TOKEN_PATTERN.fullmatch(token):
        raise ValueError("The server token may hold only visible ASCII characters (letters, digits, ._~+/=- and "
                         "similar), no spaces or quotes, so that it fits an Authorization header.")
    return token


def resolve_token(token=None, token_file=None):
    """``(token, where)``: the operator's token (argument, else $NNMAMBA_SERVER_TOKEN) or a new random one.

    A random token is written to ``token_file`` (default ~/.nnmamba/server-token), readable by the user only. A
    given token is written only when ``token_file`` is named explicitly (so that a script can find it there).
    ``where`` says where a client finds the token, for the start-up line.
    """
    source = None
    if token:
        source = "--token"
    elif os.environ.get(TOKEN_ENV):
        token, source = os.environ[TOKEN_ENV], TOKEN_ENV
    if source is not None:
        check_token(token)
        if token_file is None:
            return token, f"from {source}"
        path = write_token_file(token, token_file)
        return token, f"in {path}"
    token = secrets.token_urlsafe(32)
    path = write_token_file(token, token_file or default_token_file())
    return token, f"in {path}"


def write_token_file(token, path):
    """Write the token readable by the user only (0600, folder 0700 when created), atomically.

    The temporary file is created 0600 (``O_EXCL``), never wider even for a moment: a local user who opened a
    briefly readable file would keep the descriptor and read the token once it is written."""
    path = Path(path).expanduser().absolute()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_NOFOLLOW", 0)
    for _ in range(100):
        temporary = path.parent / f".tmp-{secrets.token_hex(6)}-{path.name}"
        try:
            descriptor = os.open(temporary, flags, 0o600)
        except FileExistsError:
            continue
        break
    else:
        raise FileExistsError(f"Could not create a temporary file next to {path}.")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            if hasattr(os, "fchmod"):
                os.fchmod(handle.fileno(), 0o600)   # exactly 0600 whatever the umask
            handle.write((token + "\n").encode("ascii"))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return path
