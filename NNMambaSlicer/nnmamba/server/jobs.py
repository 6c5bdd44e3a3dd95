"""Jobs: one worker thread runs them in submission order, the rest wait in the queue.

One at a time because they share one device: two segmentations at once on a GPU would only fight over its memory.
A job that fails (bad volume, out of memory, a bug) ends in state ``failed`` with a message; the worker goes on with
the next. Finished jobs keep their result until they have been left alone for the session TTL.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, Optional

from ..api import CANCELLED, DONE, FAILED, FINAL_STATES, QUEUED, RUNNING
from ..progress import Cancelled, CancelToken
from .errors import ServiceError

log = logging.getLogger("nnmamba.server")

FINISHED = FINAL_STATES


@dataclass
class Job:
    task: str
    model: str
    session: str
    options: dict
    payload: Any = None               # what the runner needs (session object, package); dropped when finished
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    state: str = QUEUED
    progress: float = 0.0
    eta: Optional[float] = None
    message: str = "queued"
    error: Optional[str] = None
    created: float = field(default_factory=time.time)
    started: Optional[float] = None
    finished: Optional[float] = None
    result: Any = None                # a results.JobResult once done
    cancel: CancelToken = field(default_factory=CancelToken)
    last_used: float = field(default_factory=time.monotonic)

    def report(self, fraction, eta=None, message=None):
        """The tasks' progress callback."""
        self.progress = float(min(max(fraction, 0.0), 1.0))
        self.eta = None if eta is None else round(float(eta), 1)
        if message:
            self.message = "cancelling" if self.cancel.cancelled else str(message)

    def info(self):
        return {"id": self.id, "task": self.task, "model": self.model, "session": self.session, "state": self.state,
                "progress": round(self.progress, 4), "eta": self.eta, "message": self.message, "error": self.error,
                "created": self.created, "started": self.started, "finished": self.finished}


def _out_of_memory(error):
    return isinstance(error, MemoryError) or type(error).__name__ == "OutOfMemoryError"


def _failure_message(error, job=None):
    """What the client is told; never an exception's own text unless it is one of ours (a message written for
    users), so that no internal path, library detail or voxel value leaves the server."""
    if isinstance(error, ServiceError):
        return error.detail
    if _out_of_memory(error):
        device = str((job.options if job is not None else {}).get("device") or "")
        if type(error).__name__ == "OutOfMemoryError" or device.startswith(("cuda", "mps")):
            return ("Out of GPU memory while running the job. Use a smaller (cropped or downsampled) volume, close "
                    "other programs using the GPU, or run on the CPU (options.device = 'cpu').")
        return ("Not enough memory on the server to run the job. Use a smaller (cropped or downsampled) volume, or "
                "try again when the server is less busy.")
    ours = _raised_in(error) == "nnmamba"     # nnmamba's own checks write their messages for users
    if ours and (isinstance(error, ValueError) or (isinstance(error, RuntimeError) and "device" in str(error).lower())):
        return str(error)
    reference = job.id if job is not None else "?"
    return f"Internal error while running the job; the server log has the details (job {reference})."


def _raised_in(error):
    """'nnmamba' when the exception was raised by nnmamba's own code (its message is meant for users)."""
    trace = error.__traceback__
    last = None
    while trace is not None:
        last = trace
        trace = trace.tb_next
    if last is None:
        return ""
    module = last.tb_frame.f_globals.get("__name__", "")
    return "nnmamba" if module == "nnmamba" or module.startswith("nnmamba.") else module


class JobQueue:
    def __init__(self, runner, ttl, max_queued=64, on_finish=None, restarted_note=""):
        """``runner(job) -> result`` runs one job (raising to fail it); ``on_finish(job)`` runs after every job."""
        self._runner = runner
        self._on_finish = on_finish or (lambda job: None)
        self.ttl = float(ttl)
        self.restarted_note = restarted_note    # appended to 404s: jobs of an earlier run are gone
        self.max_queued = int(max_queued)
        self._jobs = OrderedDict()
        self._queue = deque()
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._stopping = False
        self._thread = None
        self.current = None

    # -- requests -------------------------------------------------------------------------------------------
    def submit(self, job):
        with self._lock:
            if len(self._queue) >= self.max_queued:
                raise ServiceError(429, f"{len(self._queue)} jobs are already waiting; try again when some have "
                                        "finished (GET /environment shows the queue).")
            self._jobs[job.id] = job
            self._queue.append(job)
            self._wake.notify()
        self.start()
        return job

    def get(self, job_id):
        with self._lock:
            job = self._jobs.get(job_id)
            if job is not None:
                job.last_used = time.monotonic()
                if job.state == QUEUED:
                    ahead = self._queue.index(job) + (1 if self.current is not None else 0)
                    job.message = f"queued ({ahead} job{'s' if ahead != 1 else ''} ahead)" if ahead else "queued"
        if job is None:
            raise ServiceError(404, f"No job {job_id[:80]!r}: it never existed, or it finished more than {self.ttl:g} "
                                    f"s ago and was removed{self.restarted_note}.")
        return job

    def cancel(self, job_id):
        """A queued job ends at once; a running one is asked to stop ("cancelling") and ends ``cancelled``, also
        when the cancel arrives while its last step runs: the state is decided under the same lock."""
        job = self.get(job_id)
        with self._lock:
            if job.state in FINISHED:
                raise ServiceError(409, f"Job {job_id} already ended ({job.state}); there is nothing to cancel.")
            finished = self._cancel_locked(job, "cancelled before it started")
        if finished:
            self._finish(job)
        return CANCELLED if finished else "cancelling"

    def _cancel_locked(self, job, message):
        job.cancel.cancel()
        if job.state == QUEUED:
            self._queue.remove(job)
            self._end_locked(job, CANCELLED, message)
            return True
        job.message = "cancelling"
        return False

    def cancel_session(self, session_id):
        """Cancel every queued or running job on a session (it was deleted); returns their ids."""
        ended, cancelled = [], []
        with self._lock:
            for job in list(self._jobs.values()):
                if job.session == session_id and job.state not in FINISHED:
                    cancelled.append(job.id)
                    if self._cancel_locked(job, "cancelled: its session was deleted"):
                        ended.append(job)
        for job in ended:
            self._finish(job)
        return cancelled

    def counts(self):
        with self._lock:
            return {"queued": len(self._queue), "running": int(self.current is not None)}

    def sweep(self):
        """Forget finished jobs (and their results) nobody asked about for the TTL."""
        limit = time.monotonic() - self.ttl
        with self._lock:
            gone = [jid for jid, job in self._jobs.items() if job.state in FINISHED and job.last_used < limit]
            for jid in gone:
                del self._jobs[jid]
        return gone

    # -- the worker -----------------------------------------------------------------------------------------
    def start(self):
        with self._lock:
            if self._thread is not None or self._stopping:
                return
            self._thread = threading.Thread(target=self._work, name="nnmamba-jobs", daemon=True)
            self._thread.start()

    def stop(self, timeout=10.0):
        with self._lock:
            self._stopping = True
            for job in list(self._queue):
                job.cancel.cancel()
            if self.current is not None:
                self.current.cancel.cancel()
            self._wake.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _next(self):
        with self._lock:
            while not self._queue and not self._stopping:
                self._wake.wait()
            if self._stopping:
                return None
            job = self._queue.popleft()
            self.current = job
            job.state, job.started, job.message = RUNNING, time.time(), "starting"
            return job

    def _work(self):
        while True:
            job = self._next()
            if job is None:
                return
            try:
                self._run(job)
            finally:
                with self._lock:
                    self.current = None
                self._finish(job)

    def _finish(self, job):
        try:
            self._on_finish(job)
        except Exception:  # a bookkeeping bug must not stop the queue
            log.exception("After job %s", job.id)
        job.payload = None

    def _run(self, job):
        try:
            job.cancel.check()
            result = self._runner(job)
        except Cancelled:
            self._end(job, CANCELLED, "cancelled; no result was kept")
        except Exception as error:  # a job must never take the worker down
            message = _failure_message(error, job)
            if message.startswith("Internal error"):
                log.error("Job %s (%s with %s) failed", job.id, job.task, job.model, exc_info=error)
            self._end(job, FAILED, "failed", message)
        else:
            with self._lock:
                if job.cancel.cancelled:   # a cancel that came while the last step ran still wins
                    self._end_locked(job, CANCELLED, "cancelled; no result was kept")
                else:
                    job.result = result
                    job.progress, job.eta = 1.0, 0.0
                    self._end_locked(job, DONE, "done")

    def _end(self, job, state, message, error=None):
        with self._lock:
            self._end_locked(job, state, message, error)

    def _end_locked(self, job, state, message, error=None):
        job.state, job.message, job.error = state, message, error
        job.finished = time.time()
        job.last_used = time.monotonic()
