"""What the endpoints do, without HTTP: sessions, jobs, clicks and the shared device.

The device gate (:mod:`.device`) is the one rule that keeps a GPU sane: the job worker holds it for a whole job, a
click waits for it (on the event loop, holding no thread) and goes before the next job, and models are loaded only
under it. The result files are written after the gate is released, so a click does not wait for a .seg.nrrd to be
compressed. Every job and click is checked against the limits before it is queued: the network grid after
resampling and the number of sliding-window tiles, so that a tiny upload with a huge spacing cannot become hours of
work or an out-of-memory.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
import uuid

import numpy as np

from .clicks import WINDOW_CACHE_BYTES, ClickCache, click_answer, points_lps
from .device import DeviceGate
from .errors import ServiceError
from .jobs import Job, JobQueue
from .memory import MemoryReleaser
from .model_cache import PredictorCache
from .models import ModelIndex
from .results import classification_result, landmark_result, result_name, segmentation_result
from .scratch import ScratchFolder
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
        self.boot = uuid.uuid4().hex[:12]          # changes at every start: tells a client the server restarted
        self.started = time.time()
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
        restarted = (f", or it belongs to an earlier run of this server (this run started at {started}, boot "
                     f"{self.boot}; a restart forgets all sessions and jobs)")
        self.models = ModelIndex(settings.models_dir)
        self.clicks = ClickCache()
        self.memory = MemoryReleaser(busy=self._busy)
        self.sessions = SessionStore(settings.session_ttl, on_remove=self._session_removed,
                                     budget_bytes=settings.max_session_bytes,
                                     evict_idle=settings.session_evict_idle, restarted_note=restarted)
        self.predictors = PredictorCache(settings.model_memory_bytes, _load_predictor,
                                         on_evict=self.clicks.drop_predictor)
        self.jobs = JobQueue(self._run_job, settings.session_ttl, settings.max_queued_jobs,
                             on_finish=self._job_finished, restarted_note=restarted)
        self.device_gate = DeviceGate(settings.max_waiting_clicks)
        self.scratch = ScratchFolder(settings.scratch_root)
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
        self.memory.stop()
        self.scratch.cleanup()

    def _sweep_loop(self):
        while not self._stopping.wait(self.settings.sweep_seconds):
            try:
                self.sweep()
            except Exception:
                log.exception("Expiry sweep failed")

    def sweep(self):
        swept = {"sessions": self.sessions.sweep(), "jobs": self.jobs.sweep()}
        if swept["sessions"] or swept["jobs"]:
            self.memory.soon()
        return swept

    # -- sessions -------------------------------------------------------------------------------------------
    def add_session(self, volume, name=None, reservation=None):
        volume.array.setflags(write=False)  # shared by every job and click on the session: nobody may edit it
        session = self.sessions.add(volume, name, reservation)
        return {"id": session.id, "shape": session.shape, "expires_in": self.sessions.expires_in(session)}

    def reserve_session(self, shape):
        """Room in the session memory budget for float32 voxels of ``shape`` (C, K, J, I), or 507."""
        return self.sessions.reserve(math.prod(shape) * 4)

    def delete_session(self, session_id):
        """Delete a session and cancel its queued and running jobs (nobody can ask for their results any more)."""
        self.sessions.delete(session_id)
        self.jobs.cancel_session(session_id)

    def _busy(self):
        counts = self.jobs.counts()
        return bool(counts["running"] or counts["queued"] or self.device_gate.busy)

    def _session_removed(self, session_id):
        self.clicks.drop_session(session_id)
        self.memory.soon()

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

        auto = requested is None or str(requested).lower() in ("", "auto")
        name = self.settings.device if auto else requested  # auto: the operator's choice
        try:
            return str(resolve_device(name))
        except (RuntimeError, ValueError) as error:
            raise ServiceError(422, f"Device {name!r} cannot be used on this server: {error}") from None

    def _predictor(self, package, device):
        try:
            return self.predictors.get(package, device)
        except ValueError as error:  # ModelPackageError: tampered or unreadable weights
            detail = str(error).replace(str(package.root), f"package {package.id!r}")   # no server paths
            raise ServiceError(422, f"Model {package.id!r} cannot be loaded: {detail}") from None

    @staticmethod
    def _check_input(package, session):
        expected = package.network["in_channels"]
        if session.volume.num_channels != expected:
            names = ", ".join(channel["name"] for channel in package.input["channels"])
            raise ServiceError(422, f"Model {package.id!r} needs {expected} channel(s) ({names}) but session "
                                    f"{session.id} has {session.volume.num_channels}. Upload the volume with "
                                    f"channels={expected}.")

    def check_network_grid(self, package, session, overlap=None, tiles=True):
        """413 when the grid the network sees (after reorientation and resampling) or its number of sliding-window
        tiles exceeds this server's limits; checked before any work is queued."""
        shape, count = network_plan(package, session.volume, overlap)
        voxels = math.prod(shape) * session.volume.num_channels
        limit, grid = self.settings.max_network_voxels, " x ".join(map(str, shape[::-1]))
        if voxels > limit:
            raise ServiceError(413, f"Model {package.id!r} would resample this volume (spacing "
                                    f"{np.round(session.volume.geometry.spacing, 4).tolist()} mm, size "
                                    f"{list(session.volume.shape_ijk)}) to a grid of {grid} (I x J x K)"
                                    f" = {voxels:,} voxels, more than this server's limit of {limit:,}. Check the "
                                    "volume's spacing, crop or downsample it, or restart the server with a larger "
                                    "--max-network-voxels.")
        if tiles and count > self.settings.max_tiles:
            raise ServiceError(413, f"Model {package.id!r} would need {count:,} sliding-window tiles for this volume "
                                    f"(network grid {grid}), more than this server's "
                                    f"limit of {self.settings.max_tiles:,}. Use a smaller overlap, crop the volume, "
                                    "check its spacing, or restart the server with a larger --max-tiles.")
        return shape, count

    # -- jobs -----------------------------------------------------------------------------------------------
    def submit(self, session_id, task, model_id, options):
        session = self.sessions.get(session_id)
        package = self.models.find(model_id)
        if package.task != task:
            raise ServiceError(422, f"Model {package.id!r} is a {package.task} model; a {task} job needs a {task} "
                                    "model (GET /models lists each model's task).")
        self._check_input(package, session)
        self.check_network_grid(package, session, options.get("overlap"), tiles=task != "classification")
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
        self.memory.soon()

    def _run_job(self, job):
        from ..tasks import classify_volume, detect_landmarks, segment_volume

        session, package, device = job.payload
        options, notes = job.options, []

        def notify(message):
            notes.append(str(message))
            job.message = str(message)

        with self.device_gate.job():
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
        stem, folder = result_name(session.name, job.task), self.scratch.path
        if job.task == "segmentation":
            result.notes = list(result.notes) + notes
            return segmentation_result(result, stem, folder)
        if job.task == "landmarks":
            result.notes = list(result.notes) + notes
            return landmark_result(result, stem, folder)
        return classification_result(result, package, stem, folder)

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
    def prepare_click(self, session_id, model_id, positive, negative, coordinates):
        """Everything about a click that needs no device: checks, limits, points in LPS. The session is held
        until :meth:`end_click`."""
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
        if len(negative):
            geometry = session.volume.geometry
            with np.errstate(all="ignore"):
                voxels_in = np.round(geometry.lps_to_index(positive))
                voxels_out = np.round(geometry.lps_to_index(negative))
            for point, voxel in zip(positive, voxels_in):
                if (voxels_out == voxel).all(axis=1).any():
                    raise ServiceError(422, f"The point {np.round(point, 3).tolist()} mm ({coordinates}) is both a "
                                            "positive and a negative point (the same voxel): say whether the "
                                            "structure there is wanted or not, and drop the other point.")
        self.check_network_grid(package, session, tiles=False)
        device = self.device()
        self.sessions.hold(session)
        return session, package, device, positive, negative

    def run_click(self, plan):
        """The click itself; the caller holds the device (:meth:`DeviceGate.click`)."""
        from ..tasks import ClickSession

        session, package, device, positive, negative = plan
        predictor = self._predictor(package, device)
        predictor.mirroring = package.inference["mirroring"]
        key = (session.id, PredictorCache.key(package, device))
        try:
            clicker = self.clicks.get(key, lambda: ClickSession(package, session.volume, device=device,
                                                                predictor=predictor, cache_bytes=WINDOW_CACHE_BYTES))
            result = clicker.segment_at(positive, negative if len(negative) else ())
        except ValueError as error:
            raise ServiceError(422, str(error)) from None
        finally:
            if not self.sessions.exists(session.id):   # deleted meanwhile: keep no click state for it
                self.clicks.drop_session(session.id)
        return click_answer(result)

    def end_click(self, plan):
        self.sessions.release(plan[0])
        self.memory.soon()

    def click(self, session_id, model_id, positive, negative, coordinates):
        """A click from a thread (tests, embedding): waits for the device like the job worker does."""
        plan = self.prepare_click(session_id, model_id, positive, negative, coordinates)
        try:
            with self.device_gate.job():
                return self.run_click(plan)
        finally:
            self.end_click(plan)

    # -- environment ----------------------------------------------------------------------------------------
    def environment(self):
        from ..environment import environment_report

        report = environment_report(self.settings.device)
        report["memory"] = dict(self.sessions.stats(), **self.sessions.budget_stats(), **self.predictors.stats(),
                                process_rss_bytes=_resident_bytes())
        report["jobs"] = self.jobs.counts()
        report["clicks"] = {"waiting": self.device_gate.waiting_clicks}
        settings = self.settings
        report["limits"] = {"max_upload_bytes": settings.max_upload_bytes, "max_voxels": settings.max_voxels,
                            "max_network_voxels": settings.max_network_voxels, "max_tiles": settings.max_tiles,
                            "max_session_bytes": settings.max_session_bytes, "session_ttl": settings.session_ttl,
                            "max_queued_jobs": settings.max_queued_jobs, "click_wait": settings.click_wait,
                            "max_waiting_clicks": settings.max_waiting_clicks,
                            "upload_timeout": settings.upload_timeout}
        report["server"] = {"boot": self.boot, "started": self.started}
        return report


def network_plan(package, volume, overlap=None):
    """``(shape_kji, tiles)``: the grid the network sees for ``volume`` (after the package's reorientation and
    resampling; computed from the geometry alone, no voxel is touched) and the number of sliding-window tiles a job
    with ``overlap`` (default: the package's) runs on it."""
    from ..inference import fit_patch
    from ..orientation import Reorientation, closest_axes
    from ..resampling import network_grid

    spec = package.input
    geometry, shape_ijk = volume.geometry, tuple(volume.shape_ijk)
    orientation = spec.get("orientation", "as-stored")
    if orientation != "as-stored":
        permutation, flips = closest_axes(geometry.direction, orientation)
        geometry = Reorientation(permutation, flips, shape_ijk).map_geometry(geometry)
        shape_ijk = tuple(shape_ijk[p] for p in permutation)
    resampling = spec.get("resampling", {"mode": "none"})
    grid = network_grid(geometry, shape_ijk, resampling)
    shape = tuple(int(n) for n in grid.network_shape_kji)
    if package.task == "classification" or "patch_size" not in spec or (
            resampling.get("mode") == "shape" and package.task == "landmarks"):
        return shape, 1                       # the whole (resized) volume in one pass
    overlap = package.inference.get("overlap", 0.5) if overlap is None else float(overlap)
    patch = fit_patch(shape, spec["patch_size"][::-1])
    return shape, math.prod(tile_count(size, p, overlap) for size, p in zip(shape, patch))


def tile_count(size, patch, overlap):
    """``len(nnmamba.inference.tile_starts(size, patch, overlap))`` without listing them."""
    if size <= patch:
        return 1
    steps = math.ceil((size - patch) / (patch * (1 - overlap))) + 1
    return min(steps, size - patch + 1)
