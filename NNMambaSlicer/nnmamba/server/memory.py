"""Giving freed memory back to the operating system after each job, click, upload and session removal.

``nnmamba`` commands keep freed memory in the process (:func:`nnmamba.runtime.retain_freed_memory`: the scan is
faster when its buffers are not page-faulted again for every segment). For a one-shot command that costs nothing;
for a server it would make every transient peak (a large job, a big upload) permanent until restart. So the server
keeps that setting while it works (jobs back to back reuse their warm heap) and trims the heap (glibc
``malloc_trim``) as soon as no job runs or waits and no click runs. Elsewhere (macOS, Windows, musl) there is
nothing to trim and this is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys
import threading

log = logging.getLogger("nnmamba.server")

_TRIM = None
_TRIM_LOOKED_UP = False


def _malloc_trim():
    global _TRIM, _TRIM_LOOKED_UP
    if not _TRIM_LOOKED_UP:
        _TRIM_LOOKED_UP = True
        if sys.platform.startswith("linux"):
            try:
                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                _TRIM = libc.malloc_trim
                _TRIM.argtypes, _TRIM.restype = [ctypes.c_size_t], ctypes.c_int
            except (OSError, AttributeError):   # not glibc
                _TRIM = None
    return _TRIM


def release_memory():
    """Return the heap's free pages to the OS now; True when something could be trimmed."""
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False


class MemoryReleaser:
    """Trims the heap in its own thread shortly after :meth:`soon` was called (requests coalesce), so that neither
    the event loop nor a request waits for it; not while ``busy()`` (the next job's end asks again)."""

    def __init__(self, delay=0.2, busy=None):
        self.delay = float(delay)
        self.busy = busy or (lambda: False)
        self.trims = 0
        self._wanted = threading.Event()
        self._stopping = threading.Event()
        self._thread = None
        self._lock = threading.Lock()

    def soon(self):
        self._wanted.set()
        with self._lock:
            if self._thread is None and not self._stopping.is_set():
                self._thread = threading.Thread(target=self._loop, name="nnmamba-trim", daemon=True)
                self._thread.start()

    def _loop(self):
        while not self._stopping.is_set():
            self._wanted.wait(1.0)
            if not self._wanted.is_set():
                continue
            self._stopping.wait(self.delay)
            self._wanted.clear()
            try:
                if self.busy():
                    continue
                release_memory()
                self.trims += 1
            except Exception:  # never fatal: it only returns memory
                log.exception("Returning freed memory to the OS failed")

    def stop(self):
        self._stopping.set()
        self._wanted.set()
