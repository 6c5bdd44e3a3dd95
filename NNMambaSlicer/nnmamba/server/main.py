"""Running the app with uvicorn: ``nnmamba serve``, and a background server for tests and the client's helper.

The socket is bound here, before uvicorn starts, so that ``--port 0`` yields a real port to announce and "address in
use" becomes a clear error. The start-up line ``nnmamba server on <url> (token in <path>)`` is printed (and flushed)
only once the server accepts requests: a parent process may wait for it.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import socket
import sys
import threading
import time
from pathlib import Path

from .settings import ServerSettings, resolve_token

log = logging.getLogger("nnmamba.server")


def is_loopback(host):
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind_socket(host, port):
    """A bound TCP socket (uvicorn listens on it); RuntimeError with the reason when the address cannot be used."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as error:
        raise RuntimeError(f"Cannot listen on {host!r}: unknown address ({error.strerror}).") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as error:
        sock.close()
        hint = " Choose another --port (0 picks a free one)." if error.errno in (98, 48, 10048) else ""
        raise RuntimeError(f"Cannot listen on {host}:{port}: {error.strerror}.{hint}") from None
    sock.set_inheritable(True)
    return sock


def url_of(sock):
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def _uvicorn_server(settings, log_level, announce):
    import uvicorn

    from .app import create_app

    class AnnouncingServer(uvicorn.Server):
        async def startup(self, sockets=None):
            await super().startup(sockets=sockets)
            if self.started and announce is not None:
                announce()

    config = uvicorn.Config(create_app(settings), log_level=log_level, lifespan="on", timeout_graceful_shutdown=5,
                            server_header=False)
    return AnnouncingServer(config)


def _log_to_stderr(level=logging.INFO):
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))
        log.addHandler(handler)
        log.setLevel(level)


def settings_from_args(args):
    """ServerSettings from ``nnmamba serve`` arguments (the token resolved and, if new, written)."""
    from ..environment import resolve_device
    from .api_models import DEVICE_PATTERN

    if not DEVICE_PATTERN.fullmatch(str(args.device or "auto")):
        raise ValueError(f"--device must be auto, cpu, cuda, cuda:N or mps, not {args.device!r}.")
    resolve_device(args.device)  # an unavailable device is an error now, not at the first job
    if args.models_dir is not None and not Path(args.models_dir).expanduser().is_dir():
        raise ValueError(f"--models-dir {args.models_dir} is not a folder.")
    optional = {}   # options of newer releases; absent when a caller builds its own argparse namespace
    for option, setting, scale in (("max_network_voxels", "max_network_voxels", None), ("max_tiles", "max_tiles", None),
                                   ("max_session_memory_gb", "max_session_bytes", 2**30),
                                   ("max_queued_jobs", "max_queued_jobs", None), ("click_wait", "click_wait", None),
                                   ("max_waiting_clicks", "max_waiting_clicks", None),
                                   ("upload_timeout", "upload_timeout", None)):
        value = getattr(args, option, None)
        if value is not None:
            optional[setting] = int(value * scale) if scale else value
    settings = ServerSettings(token="-", host=args.host, port=args.port, device=args.device,
                              models_dir=args.models_dir, session_ttl=args.session_ttl,
                              max_upload_bytes=int(args.max_upload_mb * 2**20), max_voxels=int(args.max_voxels),
                              model_memory_bytes=int(args.model_memory_gb * 2**30), **optional)
    settings.token, where = resolve_token(args.token, args.token_file)   # written only once the rest is valid
    return settings, where


def serve(args):
    """``nnmamba serve``: runs until Ctrl-C (exit 0) or SIGTERM (after the same graceful shutdown, the process ends
    by the signal, as uvicorn does)."""
    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port must be 0..65535, got {args.port}.")
    sock = bind_socket(args.host, args.port)  # first: a failed start must not replace a running server's token
    try:
        settings, where = settings_from_args(args)
    except BaseException:
        sock.close()
        raise
    url = url_of(sock)
    if not is_loopback(settings.host):
        print(f"nnmamba: warning: listening on {settings.host}, reachable from other machines over plain HTTP: "
              "anyone who can watch the traffic sees the token and the images. Prefer an SSH tunnel to a loopback "
              "server, or put a TLS proxy in front.", file=sys.stderr, flush=True)
    _log_to_stderr()

    def announce():
        print(f"nnmamba server on {url} (token {where})", flush=True)

    server = _uvicorn_server(settings, "info", announce)
    if getattr(args, "parent_pid", None):
        _stop_with_parent(server, args.parent_pid)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl-C after its graceful shutdown: that is a normal stop
        pass
    finally:
        sock.close()
    with contextlib.suppress(OSError):   # a parent that died took the read end of our stderr with it
        print("nnmamba server stopped", file=sys.stderr, flush=True)
    return 0


PARENT_GONE_EXIT_AFTER = 8.0   # seconds the graceful shutdown may take once the parent has ended


def _stop_with_parent(server, pid):
    """``--parent-pid``: the graceful shutdown once process ``pid`` has ended, and a hard exit if that has not
    ended this process a few seconds later (a stalled job or lifespan): a crashed program leaves no server behind."""
    from ..process_tree import watch_parent

    def parent_gone():
        log.warning("The parent process %d has ended: stopping.", pid)
        server.should_exit = True
        time.sleep(PARENT_GONE_EXIT_AFTER)
        os._exit(1)   # only reached when the graceful shutdown stalled: this thread is a daemon

    watch_parent(pid, parent_gone)


class BackgroundServer:
    """The server in a thread of this process, on a free loopback port: for tests and embedding.

    ``with BackgroundServer(settings) as server: server.url ...``; ``server.app.state.service`` is the live state.
    """

    def __init__(self, settings, log_level="warning", timeout=30.0):
        self.settings = settings
        self._sock = bind_socket(settings.host, settings.port)
        self.url = url_of(self._sock)
        self._started = threading.Event()
        self._server = _uvicorn_server(settings, log_level, self._started.set)
        self.app = self._server.config.app
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]},
                                        name="nnmamba-server", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout):
            self.stop()
            raise RuntimeError(f"The server did not start within {timeout:g} s.")

    def stop(self, timeout=10.0):
        self._server.should_exit = True
        self._thread.join(timeout)
        self._sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.stop()
