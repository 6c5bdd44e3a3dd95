"""Work in a daemon thread that the GUI thread polls from a ``qt.QTimer``: the one pattern behind starting a backend,
running a job, answering a click and importing a model, so that Slicer never waits on the network or the disk."""

from __future__ import annotations

import threading


class BackgroundCall:
    """``function(*args, **kwargs)`` in a daemon thread; poll :attr:`finished`, then :meth:`result` returns its value
    or raises what it raised (on the caller's thread). Not a ``concurrent.futures`` executor on purpose: its worker
    threads are joined at interpreter exit, so a call stuck on an unreachable server would hold Slicer's exit; a
    daemon thread does not."""

    def __init__(self, function, *args, name="nnmamba-call", **kwargs):
        self._value = None
        self._error = None

        def run():
            try:
                self._value = function(*args, **kwargs)
            except BaseException as error:   # handed to the polling thread by result()
                self._error = error

        self._thread = threading.Thread(target=run, name=name, daemon=True)
        self._thread.start()

    @property
    def finished(self):
        return not self._thread.is_alive()

    @property
    def error(self):
        """What the call raised, once finished (None while running or when it returned)."""
        return None if self._thread.is_alive() else self._error

    def result(self, timeout=None, still_running="The background call is still running."):
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(still_running)
        if self._error is not None:
            raise self._error
        return self._value
