"""The one rule that keeps a GPU sane: one user of the device at a time, a job or a click.

The job worker (a thread) holds the device for a whole job. A click waits for it on the event loop, holding no
thread, so that any number of waiting clicks can never starve the threads that answer ``/health``, job polling and
cancel. A waiting click goes before the next queued job (a user is looking at the screen), at most
``max_waiting`` clicks wait (more are answered 503 at once), and a click stops waiting when its client has gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

from .errors import ServiceError


class ClientGone(Exception):
    """The client of a waiting request disconnected: nobody wants the answer any more."""


class DeviceGate:
    def __init__(self, max_waiting_clicks=16, poll=0.5):
        self.max_waiting = int(max_waiting_clicks)
        self.poll = float(poll)          # seconds between checks that a waiting click's client is still there
        self._cond = threading.Condition()
        self._holder = None              # "job" or "click"
        self._waiting_clicks = 0
        self._wakers = set()

    @property
    def waiting_clicks(self):
        with self._cond:
            return self._waiting_clicks

    @property
    def busy(self):
        with self._cond:
            return self._holder

    # -- the job worker (a thread) ---------------------------------------------------------------------
    @contextlib.contextmanager
    def job(self):
        with self._cond:
            while self._holder is not None or self._waiting_clicks:
                self._cond.wait()
            self._holder = "job"
        try:
            yield
        finally:
            self._release()

    def _release(self):
        with self._cond:
            self._holder = None
            self._cond.notify_all()
            wakers = list(self._wakers)
        for wake in wakers:
            wake()

    def _take_for_click(self):
        with self._cond:
            if self._holder is None:
                self._holder = "click"
                return True
            return False

    # -- clicks (coroutines on the event loop) ---------------------------------------------------------
    @contextlib.asynccontextmanager
    async def click(self, wait, client_gone=None):
        """``async with gate.click(seconds, client_gone):`` the device, once free. 503 when ``max_waiting`` clicks
        already wait or the device stays busy for ``wait`` seconds; :class:`ClientGone` when the awaitable
        ``client_gone()`` turns true while waiting."""
        loop = asyncio.get_running_loop()
        event = asyncio.Event()

        def wake():
            with contextlib.suppress(RuntimeError):   # the loop has closed: nobody is waiting any more
                loop.call_soon_threadsafe(event.set)

        with self._cond:
            if self._waiting_clicks >= self.max_waiting:
                raise ServiceError(503, f"{self._waiting_clicks} clicks are already waiting for the device, which is "
                                        "busy with a job; try again in a few seconds.", {"Retry-After": "5"})
            self._waiting_clicks += 1
            self._wakers.add(wake)
        try:
            deadline = loop.time() + float(wait)
            while True:
                event.clear()
                if self._take_for_click():
                    break
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise ServiceError(503, f"The device is busy with a job for more than {wait:g} s; try the click "
                                            "again when the job has finished.", {"Retry-After": "10"})
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(event.wait(), min(remaining, self.poll))
                if client_gone is not None and await client_gone():
                    raise ClientGone()
        finally:
            with self._cond:
                self._waiting_clicks -= 1
                self._wakers.discard(wake)
                self._cond.notify_all()      # the job worker may go now
        try:
            yield
        finally:
            self._release()
