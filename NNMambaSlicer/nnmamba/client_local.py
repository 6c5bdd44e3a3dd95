"""A private ``nnmamba serve`` on this machine, as a child process: for Slicer's "local" mode and for tests.

The child gets its own random token through the environment (never on the command line, where other users could
read it in the process list) and a free port chosen by the OS; it prints its URL as the first stdout line. Its
pipes are drained by threads so that a chatty server never blocks on a full pipe.

``python`` may be a launcher that runs the real interpreter as its own child and forwards no signal (Slicer's
PythonSlicer, CTKAppLauncher): the child is started as the root of its own process group, and
:meth:`LocalServer.stop` stops the whole tree (SIGTERM to the group, SIGKILL after a grace period; Windows:
``taskkill /T``), also at interpreter exit, in bounded time. ``--parent-pid`` makes the server end by itself when the
process that started it dies without stopping it (a crash).
"""

from __future__ import annotations

import atexit
import collections
import os
import queue
import re
import secrets
import subprocess
import sys
import threading
import time

from .api import TOKEN_ENV
from .client import BackendError, Client
from .process_tree import popen_options, stop_tree

_URL_PATTERN = re.compile(r"https?://[^\s()]+")


class LocalServer:
    """``with LocalServer(models_dir=...) as server: client = server.client()``."""

    def __init__(self, device="auto", models_dir=None, port=0, python=sys.executable, extra_args=(),
                 start_timeout=120.0, stop_grace=5.0):
        self.device = device
        self.models_dir = models_dir
        self.port = int(port)
        self.python = python
        self.extra_args = [str(a) for a in extra_args]
        self.start_timeout = float(start_timeout)
        self.stop_grace = float(stop_grace)
        self.token = secrets.token_urlsafe(32)
        self.url = None
        self.process = None
        self._stderr_tail = collections.deque(maxlen=60)
        self._stdout_lines = queue.Queue()
        self._threads = []

    # -- starting ------------------------------------------------------------------------------------------
    def command(self):
        """``[python, "-m", "nnmamba", "serve", options...]`` (a subclass may replace the first three items). The
        pid is this process's own: a launcher's pid would not tell when this process dies."""
        command = [self.python, "-m", "nnmamba", "serve", "--host", "127.0.0.1", "--port", str(self.port),
                   "--device", str(self.device), "--parent-pid", str(os.getpid())]
        if self.models_dir is not None:
            command += ["--models-dir", str(self.models_dir)]
        return command + self.extra_args

    def start(self):
        if self.process is not None:
            return self
        # A token given by the environment is not written to ~/.nnmamba/server-token: the user's own server's
        # token stays as it is.
        env = dict(os.environ, **{TOKEN_ENV: self.token, "PYTHONUNBUFFERED": "1"})
        self.process = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, env=env, text=True, encoding="utf-8",
                                        errors="replace", bufsize=1, **popen_options())
        atexit.register(self.stop)
        self._drain(self.process.stdout, self._stdout_lines.put)
        self._drain(self.process.stderr, self._stderr_tail.append)
        try:
            self.url = self._read_url()
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def _drain(self, stream, sink):
        def pump():   # ends at EOF, when every process of the tree has exited; only this thread closes the pipe
            with stream:
                for line in stream:
                    sink(line.rstrip("\n"))
        thread = threading.Thread(target=pump, name="nnmamba-server-pipe", daemon=True)
        thread.start()
        self._threads.append(thread)

    def _remaining(self, started):
        return self.start_timeout - (time.monotonic() - started)

    def _read_url(self):
        started = time.monotonic()
        while self._remaining(started) > 0:
            try:
                line = self._stdout_lines.get(timeout=min(0.2, self._remaining(started)))
            except queue.Empty:
                if self.process.poll() is not None:
                    self._fail("exited before it printed its address")
                continue
            found = _URL_PATTERN.search(line)
            if found:
                return found.group(0).rstrip("/")
            self._stderr_tail.append(line)   # a warning before the address line: kept for the error message
        self._fail(f"printed no address within {self.start_timeout:g} s")

    def _wait_healthy(self):
        client = Client(self.url, token=self.token, timeout=2, retries=0)
        started = time.monotonic()
        while self._remaining(started) > 0:
            if self.process.poll() is not None:
                self._fail("exited while starting")
            try:
                if client.health().get("status") == "ok":
                    return
            except BackendError:
                pass
            time.sleep(0.05)
        self._fail(f"did not answer {self.url}/health within {self.start_timeout:g} s")

    def _fail(self, what):
        time.sleep(0.2)  # let the pipe threads collect the child's last words
        code = self.process.poll()
        tail = "\n".join(list(self._stderr_tail)[-25:]) or "(nothing on stderr)"
        status = f" (exit code {code})" if code is not None else ""
        raise BackendError(f"The local nnmamba server {what}{status}. Command: {' '.join(self.command())}\n"
                           f"Its stderr ends with:\n{tail}")

    # -- using and stopping --------------------------------------------------------------------------------
    def client(self, **options):
        if self.url is None:
            raise BackendError("The local nnmamba server is not running; call start() first.")
        return Client(self.url, token=self.token, **options)

    @property
    def stderr_tail(self):
        return list(self._stderr_tail)

    def stop(self):
        """Stop the child and whatever it started (a launcher's real interpreter), kill them after the grace period,
        and reap the child. Bounded in time: the pipes are left to their threads, which end at EOF (closing a pipe
        that a thread is reading would wait for that read)."""
        process, self.process = self.process, None
        if process is not None:
            stop_tree(process, self.stop_grace)
            for thread in self._threads:
                thread.join(timeout=1)
        self._threads = []
        self.url = None
        atexit.unregister(self.stop)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
