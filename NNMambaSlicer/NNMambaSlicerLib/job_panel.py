"""The one Apply/Cancel flow of the three NNMamba modules: get the shared backend (start or connect it in the
background when there is none) -> read the scene (GUI thread) -> talk to the server in a worker thread (upload,
submit, poll, download) -> progress, time left and Cancel meanwhile -> write the result into the scene (GUI thread).

:class:`JobPanel` holds no Qt: the widget calls :meth:`JobPanel.tick` from a ``qt.QTimer`` and shows what the
callbacks tell it (:func:`attach_widgets` does that wiring for the usual Apply button, progress bar and labels), so
the same code runs in the tests against slicer-core and a real local server.
"""

from __future__ import annotations

import threading

from .background import BackgroundCall


def _ignore(*args):
    return None


class JobPanel:
    """One piece of work at a time for a module. ``start(prepare, finish)``:

    - ``prepare(backend)`` runs on the GUI thread once a backend is there and returns either a
      :class:`~NNMambaSlicerLib.backend.JobRun` (its ``run_to_end`` then runs in a worker, with progress and
      Cancel) or a plain callable of no arguments (it runs in a worker: listing models, connecting, importing);
    - ``finish(run_or_value)`` runs on the GUI thread, from :meth:`tick`, when the work succeeded.

    ``on_status(text, fraction or None, eta text)``, ``on_busy(bool)`` and ``on_error(message)`` tell the widget
    what to show; ``connect()`` makes the backend when none is shared (default: from the NNMamba module's settings).
    """

    def __init__(self, on_status=None, on_busy=None, on_error=None, connect=None, poll_interval=0.2):
        self.on_status = on_status or _ignore
        self.on_busy = on_busy or _ignore
        self.on_error = on_error or _ignore
        self._connect = connect
        self.poll_interval = poll_interval
        self._starter = None
        self._prepare = None
        self._finish = None
        self._work = None       # the JobRun or callable running in the worker
        self._worker = None
        self._cancelled = threading.Event()
        self._shown_busy = False

    @property
    def busy(self):
        return self._starter is not None or self._worker is not None

    @property
    def run(self):
        """The JobRun in the worker, if the work is one."""
        from .backend import JobRun

        return self._work if isinstance(self._work, JobRun) else None

    def start(self, prepare, finish):
        """Begin; errors found before any work starts (no backend settings, missing packages) raise here."""
        from .backend import shared_backend

        if self.busy:
            raise RuntimeError("The previous job is still running: wait for it or cancel it.")
        self._prepare, self._finish = prepare, finish
        self._cancelled.clear()
        backend = shared_backend()
        if backend is None:
            self._starter = (self._connect or _connect_from_settings)()
            self.on_status(f"Starting {self._starter.description}... (Slicer stays usable)", None, "")
        self._shown_busy = True
        self.on_busy(True)
        if backend is not None:
            self._launch(backend)

    def cancel(self):
        """Cancel: a job is cancelled on the server; a backend that is starting keeps starting (and is shared),
        but nothing runs after it."""
        if not self.busy:
            return
        self._cancelled.set()
        if self._starter is not None:
            self.on_status("Cancelled; the backend keeps starting in the background.", None, "")
        else:
            self.on_status("Cancelling...", None, "")

    def stop(self):
        """The widget goes away (cleanup, scene close): cancel, stop reporting, keep nothing."""
        self.cancel()
        self._end()
        self._prepare = self._finish = None

    def tick(self):
        """One step, from the widget's timer: report progress, hand over results and errors."""
        try:
            if self._starter is not None:
                self._tick_starter()
            elif self._worker is not None:
                self._tick_worker()
        except Exception as error:
            self._end()
            self.on_error(str(error))

    # -- steps ---------------------------------------------------------------------------------------------------
    def _tick_starter(self):
        if not self._starter.finished:
            return
        starter, self._starter = self._starter, None
        backend = starter.result()   # raises what stopped the start
        if self._cancelled.is_set():
            self._end()
            self.on_status("Cancelled; the backend is ready.", None, "")
            return
        self._launch(backend)

    def _launch(self, backend):
        try:
            work = self._prepare(backend)   # GUI thread: reads the scene
        except Exception:
            self._end()
            raise
        self._work = work
        if callable(getattr(work, "run_to_end", None)):
            self.on_status("Submitting...", 0.0, "")
            self._worker = BackgroundCall(work.run_to_end, cancelled=self._cancelled.is_set,
                                          interval=self.poll_interval, name="nnmamba-job")
        else:
            self._worker = BackgroundCall(work, name="nnmamba-call")

    def _tick_worker(self):
        from .backend import describe_eta

        run = self.run
        if run is not None and run.status is not None and not self._cancelled.is_set():
            self.on_status(describe_status(run.status), run.status.progress, describe_eta(run.status))
        if not self._worker.finished:
            return
        worker, finish, cancelled = self._worker, self._finish, self._cancelled.is_set()
        self._end()
        value = worker.result()   # raises what the worker raised
        if run is not None:
            status = run.status
            if status.state == "cancelled" or (cancelled and not status.succeeded):
                self.on_status("Cancelled; nothing was changed.", None, "")
                return
            if not status.succeeded:
                raise run.error_class(f"{run.what} failed: {status.error or status.message}")
            value = run
        elif cancelled:
            self.on_status("Cancelled.", None, "")
            return
        finish(value)

    def _end(self):
        self._starter = self._worker = self._work = None
        if self._shown_busy:
            self._shown_busy = False
            self.on_busy(False)


def describe_status(status):
    """One line for a status label, e.g. "running: tile 3 of 12"."""
    if status is None:
        return ""
    message = status.message or ""
    if not message:
        return status.state
    return message if message.startswith(status.state) else f"{status.state}: {message}"


def _connect_from_settings():
    from .settings import start_shared_backend_from_settings

    return start_shared_backend_from_settings()


def attach_widgets(panel, apply_button, progress_bar, status_label, eta_label=None, lock=(), idle_text="Apply",
                   on_idle=None):
    """Wire ``panel`` to the usual widgets: Apply turns into Cancel while busy, the progress bar and labels show
    progress, errors pop up (slicer.util.errorDisplay), and a QTimer ticks the panel while it is busy. ``lock``:
    widgets disabled while busy. ``on_idle``: called when the work ends (e.g. to update Apply's enabled state).
    Returns the timer (stop it in the widget's cleanup)."""
    import qt
    import slicer

    timer = qt.QTimer()
    timer.setInterval(int(panel.poll_interval * 1000))
    timer.connect("timeout()", panel.tick)

    def on_status(text, fraction, eta):
        status_label.text = text
        if eta_label is not None:
            eta_label.text = eta
        if fraction is not None:
            progress_bar.setRange(0, 1000)
            progress_bar.value = int(round(1000 * fraction))
        else:
            progress_bar.setRange(0, 0)   # busy indicator while the amount of work is unknown

    def on_busy(busy):
        progress_bar.setVisible(busy)
        apply_button.text = "Cancel" if busy else idle_text
        for widget in lock:
            widget.enabled = not busy
        if busy:
            timer.start()
        else:
            timer.stop()
            if eta_label is not None:
                eta_label.text = ""
            if on_idle is not None:
                on_idle()

    def on_error(message):
        status_label.text = message.splitlines()[0] if message else ""
        slicer.util.errorDisplay(message)

    panel.on_status, panel.on_busy, panel.on_error = on_status, on_busy, on_error
    progress_bar.hide()
    return timer
