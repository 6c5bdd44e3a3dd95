"""What the endpoints do, without HTTP: sessions, jobs, clicks and the shared device.

The device lock is the one rule that keeps a GPU sane: the job worker holds it for a whole job, a click waits for
it, and models are loaded only under it. The result files are written after the lock is released, so a click does
not wait for a .seg.nrrd to be compressed.
"""

from __future__ import annotations

import logging
import os
import threading

import numpy as np

from .clicks import WINDOW_CACHE_BYTES, ClickCache, click_answer, points_lps
from .errors import ServiceError
from .jobs import Job, JobQueue
from .model_cache import PredictorCache
from .models import ModelIndex
from .results import classification_result, landmark_result, result_name, segmentation_result
from .sessions import SessionStore

log = logging.getLogger("nnmamba.server")


def _resident_bytes():
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def _load_predictor(package, device):
    from ..tasks.common import make_predictor

    return make_predictor(package, device)


class Service:
    def __init__(self, settings):
        self.settings = settings
        self.models = ModelIndex(settings.models_dir)
        self.clicks = ClickCache()
        self.sessions = SessionStore(settings.session_ttl, on_remove=self.clicks.drop_session)
        self.predictors = PredictorCache(settings.model_memory_bytes, _load_predictor,
                                         on_evict=self.clicks.drop_predictor)
        self.jobs = JobQueue(self._run_job, settings.session_ttl, settings.max_queued_jobs,
                             on_finish=self._job_finished)
        self.device_lock = threading.Lock()
        self._stopping = threading.Event()
        self._sweeper = None

    # -- life cycle -----------------------------------------------------------------------------------------
    def start(self):
        self.jobs.start()
        if self._sweeper is None:
            self._sweeper = threading.Thread(target=self._sweep_loop, name="nnmamba-sweeper", daemon=True)
            self._sweeper.start()

    def stop(self):
        self._stopping.set()
        self.jobs.stop()

    def _sweep_loop(self):
        while not self._stopping.wait(self.settings.sweep_seconds):
            try:
                self.sweep()
            except Exception:
                log.exception("Expiry sweep failed")

    def sweep(self):
        return {"sessions": self.sessions.sweep(), "jobs": self.jobs.sweep()}

    # -- sessions -------------------------------------------------------------------------------------------
    def add_session(self, volume, name=None):
        volume.array.setflags(write=False)  # shared by every job and click on the session: nobody may edit it
        session = self.sessions.add(volume, name)
        return {"id": session.id, "shape": session.shape, "expires_in": self.sessions.expires_in(session)}

    def session_info(self, session_id):
        session = self.sessions.get(session_id)
        geometry = session.volume.geometry
        return {"id": session.id, "name": session.name, "shape": session.shape,
                "geometry": {"origin": geometry.origin.tolist(), "spacing": geometry.spacing.tolist(),
                             "direction": geometry.direction.reshape(-1).tolist()},
                "expires_in": self.sessions.expires_in(session)}

    # -- models and devices ---------------------------------------------------------------------------------
    def device(self, requested=None):
        from ..environment import resolve_device

        name = self.settings.device if requested in (None, "", "auto") else requested  # auto: the operator's choice
        try:
            return str(resolve_device(name))
        except (RuntimeError, ValueError) as error:
            raise ServiceError(422, f"Device {name!r} cannot be used on this server: {error}") from None

    def _predictor(self, package, device):
        try:
            return self.predictors.get(package, device)
        except ValueError as error:  # ModelPackageError: tampered or unreadable weights
            raise ServiceError(422, f"Model {package.id!r} cannot be loaded: {error}") from None

    @staticmethod
    def _check_input(package, session):
        expected = package.network["in_channels"]
        if session.volume.num_channels != expected:
            names = ", ".join(channel["name"] for channel in package.input["channels"])
            raise ServiceError(422, f"Model {package.id!r} needs {expected} channel(s) ({names}) but session "
                                    f"{session.id} has {session.volume.num_channels}. Upload the volume with "
                                    f"channels={expected}.")

    # -- jobs -----------------------------------------------------------------------------------------------
    def submit(self, session_id, task, model_id, options):
        session = self.sessions.get(session_id)
        package = self.models.find(model_id)
        if package.task != task:
            raise ServiceError(422, f"Model {package.id!r} is a {package.task} model; a {task} job needs a {task} "
                                    "model (GET /models lists each model's task).")
        self._check_input(package, session)
        device = self.device(options.get("device"))
        job = Job(task, package.id, session.id, dict(options, device=device), payload=(session, package, device))
        self.sessions.hold(session)
        try:
            return self.jobs.submit(job)
        except BaseException:
            self.sessions.release(session)
            raise

    def _job_finished(self, job):
        if job.payload is not None:
            self.sessions.release(job.payload[0])

    def _run_job(self, job):
        from ..tasks import classify_volume, detect_landmarks, segment_volume

        session, package, device = job.payload
        options, notes = job.options, []

        def notify(message):
            notes.append(str(message))
            job.message = str(message)

        with self.device_lock:
            job.message = "loading the model"
            predictor = self._predictor(package, device)
            job.message = "preparing the volume"
            predictor.notify = notify
            mirroring = options.get("mirroring")
            predictor.mirroring = package.inference["mirroring"] if mirroring is None else bool(mirroring)
            try:
                if job.task == "segmentation":
                    result = segment_volume(package, session.volume, device=device, overlap=options.get("overlap"),
                                            progress=job.report, cancel=job.cancel, predictor=predictor)
                elif job.task == "landmarks":
                    result = detect_landmarks(package, session.volume, device=device, refine=options.get("refine"),
                                              progress=job.report, cancel=job.cancel, predictor=predictor)
                else:
                    predictor.mirroring = False
                    result = classify_volume(package, session.volume, device=device, predictor=predictor)
            finally:
                predictor.notify = lambda message: None
                if str(predictor.device) != device:  # fell back to the CPU after running out of GPU memory
                    self.predictors.discard(package, device)
        job.cancel.check()
        job.message = "writing the result"
        stem = result_name(session.name, job.task)
        if job.task == "segmentation":
            result.notes = list(result.notes) + notes
            return segmentation_result(result, stem)
        if job.task == "landmarks":
            result.notes = list(result.notes) + notes
            return landmark_result(result, stem)
        return classification_result(result, package, stem)

    def job_result(self, job_id):
        job = self.jobs.get(job_id)
        if job.state == "done":
            return job.result
        what = {"queued": f"is still queued; poll GET /jobs/{job_id} until its state is done",
                "running": f"is still running ({job.progress:.0%}); poll GET /jobs/{job_id} until its state is done",
                "failed": f"failed ({job.error}); it has no result",
                "cancelled": "was cancelled; it has no result"}[job.state]
        raise ServiceError(409, f"Job {job_id} {what}.")

    # -- clicks ---------------------------------------------------------------------------------------------
    def click(self, session_id, model_id, positive, negative, coordinates):
        from ..tasks import ClickSession

        session = self.sessions.get(session_id)
        package = self.models.find(model_id)
        if package.task != "segmentation":
            raise ServiceError(422, f"Model {package.id!r} is a {package.task} model; click-to-segment needs a "
                                    "segmentation model.")
        self._check_input(package, session)
        for kind, points in (("positive", positive), ("negative", negative)):
            if any(len(point) != 3 for point in points):
                raise ServiceError(422, f"Each {kind} point must be [x, y, z] in mm.")
        if not positive:
            raise ServiceError(422, "Give at least one positive point (on the structure to segment).")
        positive, negative = points_lps(positive, coordinates), points_lps(negative, coordinates)
        if not (np.isfinite(positive).all() and np.isfinite(negative).all()):
            raise ServiceError(422, "A point has a NaN or infinite coordinate; give finite [x, y, z] in mm.")
        device = self.device()
        if not self.device_lock.acquire(timeout=self.settings.click_wait):
            raise ServiceError(503, f"The device is busy with a job for more than {self.settings.click_wait:g} s; "
                                    "try the click again when the job has finished.")
        try:
            predictor = self._predictor(package, device)
            predictor.mirroring = package.inference["mirroring"]
            key = (session.id, PredictorCache.key(package, device))
            try:
                clicker = self.clicks.get(key, lambda: ClickSession(package, session.volume, device=device,
                                                                    predictor=predictor,
                                                                    cache_bytes=WINDOW_CACHE_BYTES))
                result = clicker.segment_at(positive, negative if len(negative) else ())
            except ValueError as error:
                raise ServiceError(422, str(error)) from None
        finally:
            self.device_lock.release()
        return click_answer(result)

    # -- environment ----------------------------------------------------------------------------------------
    def environment(self):
        from ..environment import environment_report

        report = environment_report(self.settings.device)
        report["memory"] = dict(self.sessions.stats(), **self.predictors.stats(), process_rss_bytes=_resident_bytes())
        report["jobs"] = self.jobs.counts()
        report["limits"] = {"max_upload_bytes": self.settings.max_upload_bytes, "max_voxels": self.settings.max_voxels,
                            "session_ttl": self.settings.session_ttl}
        return report
