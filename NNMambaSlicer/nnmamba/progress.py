"""Progress reports and cancellation shared by the tasks, the CLI and the server's jobs.

Long work reports a fraction done and an ETA through a plain callback, and stops at the next tile when its
token is cancelled; :class:`Cancelled` travels up so that no caller writes a partial result.
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Optional

# progress(fraction done 0..1, seconds left or None, message): what long work reports through.
Progress = Callable[[float, Optional[float], str], None]


class Cancelled(Exception):
    """The user cancelled the work; nothing was written."""


class CancelToken:
    """Thread-safe flag, set by whoever wants the work to stop (a Cancel button, the server's DELETE)."""

    def __init__(self):
        self._event = threading.Event()

    def cancel(self):
        self._event.set()

    @property
    def cancelled(self):
        return self._event.is_set()

    def check(self):
        if self._event.is_set():
            raise Cancelled("Cancelled by the user; no output was written.")


class ProgressTracker:
    """Turns 'step i of n' into callbacks ``callback(fraction, eta_seconds, message)``; the ETA is the mean time
    per step so far times the steps left (None until one step is done)."""

    def __init__(self, total, callback=None, cancel=None, message=""):
        self.total = max(int(total), 1)
        self.done = 0
        self.callback = callback
        self.cancel = cancel
        self.message = message
        self.started = time.perf_counter()

    def check_cancelled(self):
        if self.cancel is not None:
            self.cancel.check()

    def advance(self, steps=1, message=None):
        self.done = min(self.done + steps, self.total)
        if message is not None:
            self.message = message
        if self.callback is not None:
            fraction = self.done / self.total
            elapsed = time.perf_counter() - self.started
            eta = elapsed / self.done * (self.total - self.done) if self.done else None
            self.callback(fraction, eta, self.message)
        self.check_cancelled()
