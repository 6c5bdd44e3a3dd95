"""The connection to an nnmamba server, shared by the three NNMamba modules, and the jobs it runs.

Everything here is GUI-free. Slicer's GUI thread only reads the scene (an :class:`Upload` snapshot of the voxels,
the scene nodes a result goes into); every network call (connect, upload, submit, poll, download, click) can run in
a worker thread that the widgets poll from a ``qt.QTimer`` (see :mod:`.job_panel`), so Slicer never waits on the
network or on a network pass. Volumes are uploaded once per (node, voxels, placement): running a second task on the
same unchanged volume sends nothing again. One :class:`Backend` serves the whole application
(:func:`shared_backend`), so the three modules share the loaded models and one private local server, and one
:class:`BackendStarter` at a time starts it (:func:`start_backend`).
"""

from __future__ import annotations

import shutil
import sys
import threading
import time
from pathlib import Path

from nnmamba.client import Job, JobStatus  # noqa: F401  (JobStatus: what the modules' status lines read)

_SAME_GRID_TOLERANCE = 1e-4   # mm (origin) and relative (spacing, direction) between channels of one input
LONG_REQUEST_TIMEOUT = 1800.0  # s: uploads and clicks (a first click on a CPU runs many windows)
QUICK_REQUEST_TIMEOUT = 10.0   # s: what the GUI thread asks (health, model lists): a hung server costs seconds
_shared = None
_starter = None
_state_lock = threading.RLock()


class BackendNotConnected(ValueError):
    """No backend is running or connected yet: the user has to start or connect one (NNMamba module)."""


def default_python():
    """The interpreter for a local server: Slicer's PythonSlicer (on PATH or next to this executable), else this
    interpreter when it is a plain Python (outside Slicer ``sys.executable`` is one; inside, it may be the app)."""
    found = shutil.which("PythonSlicer")
    if found:
        return found
    here = Path(sys.executable).parent
    for name in ("PythonSlicer", "PythonSlicer.exe"):
        if (here / name).is_file():
            return str(here / name)
    if not Path(sys.executable).name.lower().startswith("python"):
        raise RuntimeError(f"No PythonSlicer found (on PATH or next to {sys.executable}) to run the local NNMamba "
                           "server. Reinstall Slicer, or use a remote server.")
    return sys.executable


def _nnmamba_parent():
    """The folder holding the ``nnmamba`` package, which a child interpreter must be able to import."""
    import nnmamba

    return str(Path(nnmamba.__file__).resolve().parent.parent)


def _local_server_class():
    from nnmamba.client_local import LocalServer

    class SlicerLocalServer(LocalServer):
        """``nnmamba serve`` run so that it finds the nnmamba package shipped with the extension: PythonSlicer
        does not have Slicer's additional module paths on its sys.path."""

        def command(self):
            command = super().command()   # [python, "-m", "nnmamba", "serve", ...]
            boot = (f"import sys; sys.path.insert(0, {_nnmamba_parent()!r}); from nnmamba.cli import main; "
                    "raise SystemExit(main(sys.argv[1:]))")
            return [command[0], "-c", boot] + command[3:]

    return SlicerLocalServer


class Backend:
    """One nnmamba server: a private local one (:meth:`local`) or a remote one (:meth:`remote`)."""

    def __init__(self, client, server=None, device="auto"):
        self.client = client
        self.server = server            # the LocalServer we started, or None for a remote server
        self.device = device or "auto"
        self._sessions = {}             # upload key -> session id
        self._lock = threading.Lock()

    def __repr__(self):
        return f"Backend({self.kind}, {self.url!r})"

    # -- connecting -----------------------------------------------------------------------------------------
    @classmethod
    def local(cls, device="auto", models_dir=None, python=None, start_timeout=120.0):
        """Start a private server on this machine (PythonSlicer, loopback, random token) and connect to it."""
        from nnmamba.client import BackendError

        server = _local_server_class()(device=device or "auto", models_dir=models_dir,
                                       python=python or default_python(), start_timeout=start_timeout)
        try:
            server.start()
        except OSError as error:   # the interpreter itself could not be run
            raise BackendError(f"Cannot run the Python interpreter {server.python} for the local NNMamba server "
                               f"({error.strerror or error}). Reinstall Slicer, or use a remote server.") from None
        try:
            client = server.client(timeout=60)
            client.check_version()
        except BaseException:
            server.stop()
            raise
        return cls(client, server, device)

    @classmethod
    def remote(cls, url, token, device="auto", connect_timeout=10.0, timeout=60.0):
        """Connect to a running ``nnmamba serve``; the token is checked now, so a wrong one fails here and not at
        the first Apply. An empty token falls back to $NNMAMBA_SERVER_TOKEN or ~/.nnmamba/server-token."""
        from nnmamba.client import Client

        client = Client(url, token=token or None, timeout=connect_timeout)
        client.check_version()
        client.environment()   # needs the token: BackendError naming the token when it is refused
        client.timeout = float(timeout)
        return cls(client, None, device)

    @property
    def kind(self):
        return "local" if self.server is not None else "remote"

    @property
    def url(self):
        return self.client.url

    def is_alive(self):
        """True when the server answers (and, for a local one, its process still runs)."""
        from nnmamba.client import BackendError

        if self.server is not None and (self.server.process is None or self.server.process.poll() is not None):
            return False
        try:
            return self.client.health(timeout=QUICK_REQUEST_TIMEOUT).get("status") == "ok"
        except (BackendError, AttributeError):
            return False

    def environment(self):
        """The server's GET /environment answer (versions, device, GPU, scan back end, memory, queue)."""
        return self.client.environment(timeout=QUICK_REQUEST_TIMEOUT)

    def models(self, task=None):
        """The server's installed models (id, name, version, task, inputs, where), optionally of one task."""
        models = self.client.models(timeout=QUICK_REQUEST_TIMEOUT) or []
        return [m for m in models if task is None or m.get("task") == task]

    def stop(self):
        """Forget the uploaded volumes (deleted on the server) and stop the local server, if it is ours."""
        from nnmamba.client import BackendError

        with self._lock:
            sessions, self._sessions = list(self._sessions.values()), {}
        if self.server is None:
            for session in sessions:
                try:
                    self.client.delete_session(session)
                except BackendError:
                    pass
        else:
            self.server.stop()

    # -- volumes and jobs -----------------------------------------------------------------------------------
    @staticmethod
    def upload_key(volume_nodes):
        """What identifies one upload: per node its ID, its voxels' modification time and its IJK->RAS matrix.
        Not the node's own MTime: that changes with every attribute (a classification result, a rename), which
        does not change what the server needs."""
        import vtk

        key = []
        for node in volume_nodes:
            image = node.GetImageData()
            matrix = vtk.vtkMatrix4x4()
            node.GetIJKToRASMatrix(matrix)
            placement = tuple(matrix.GetElement(r, c) for r in range(4) for c in range(4))
            key.append((node.GetID(), image.GetMTime() if image is not None else 0, placement))
        return tuple(key)

    def upload_for(self, volume_nodes, snapshot=True):
        """An :class:`Upload` of these volumes (channels in order), read from the scene now (GUI thread); its
        :meth:`Upload.session` does the network part anywhere. Without ``snapshot`` a volume the server already
        has is not copied (clicks): if the server forgot it meanwhile, that raises UploadExpired."""
        volume_nodes = _as_node_list(volume_nodes)
        key = self.upload_key(volume_nodes)
        with self._lock:
            known = self._sessions.get(key)
        if known is not None and not snapshot:
            return Upload(self, key, known)
        array, geometry = stacked_input(volume_nodes)
        return Upload(self, key, known, array, geometry, volume_nodes[0].GetName())

    def session_for(self, volume_nodes):
        """The server session holding these volumes, uploading them only when they are new, were modified since,
        or the server forgot them (sessions expire when unused). Reads the scene: call it on the GUI thread."""
        return self.upload_for(volume_nodes).session()

    def _remember(self, key, session):
        with self._lock:
            stale = [k for k in self._sessions if _same_nodes(k, key)]
            old = [self._sessions.pop(k) for k in stale]
            self._sessions[key] = session
        for old_session in old:
            if old_session != session:
                self._delete_quietly(old_session)

    def _delete_quietly(self, session):
        from nnmamba.client import BackendError

        try:
            self.client.delete_session(session)
        except BackendError:
            pass

    def start_job(self, volume_nodes, task, model, **options):
        """Upload (if needed) and queue ``task`` with ``model``; returns at once with a :class:`Job` to poll."""
        return self.submit(self.session_for(volume_nodes), task, model, **options)

    def submit(self, session, task, model, **options):
        """Queue ``task`` on an uploaded session (network only: any thread)."""
        if self.server is None and self.device not in (None, "", "auto"):
            options.setdefault("device", self.device)
        job_id = self.client.submit(session, task, model, **options)
        return Job(self.client, job_id, task, model, session)


class UploadExpired(RuntimeError):
    """The server forgot a volume that was not snapshot: read it from the scene again and retry."""


class Upload:
    """The voxels and geometry of one upload, copied from the scene on the GUI thread, so that the network part
    (:meth:`session`) can run in a worker thread while the user goes on editing."""

    def __init__(self, backend, key, known=None, array=None, geometry=None, name=None):
        self.backend = backend
        self.key = key
        self.known = known      # the session the server had for these voxels, if any
        self.array = array
        self.geometry = geometry
        self.name = name

    def session(self):
        """The session id: the known one while the server still has it, else a new upload."""
        from nnmamba.client import BackendRequestError

        client = self.backend.client
        if self.known is not None:
            try:
                client.session(self.known)
                return self.known
            except BackendRequestError as error:
                if error.status != 404:
                    raise
        if self.array is None:
            raise UploadExpired("The server no longer has the volume; it must be uploaded again.")
        session = client.upload_volume(self.array, self.geometry, name=self.name, timeout=LONG_REQUEST_TIMEOUT)
        self.backend._remember(self.key, session)
        self.array = None   # the server has it now: free the copy
        return session


class JobRun:
    """One task on some volumes, from Apply to scene nodes, in three steps that say where they may run:
    construction reads the scene (GUI thread: the checks and the :class:`Upload` copy), :meth:`run_to_end` talks to
    the server (any thread: upload, submit, poll, cancel, :meth:`fetch` the result), :meth:`finish` writes the
    scene (GUI thread; in subclasses). Scripts and self-tests call :meth:`wait`, which does the first two here.
    Subclasses set ``task``, ``error_class`` and ``what`` and implement :meth:`fetch` and ``finish``."""

    task = None
    error_class = RuntimeError
    what = "The job"

    def __init__(self, backend, volume_nodes, model, what_model="model", **options):
        if not model:
            raise ValueError(f"Select a {what_model} first (press Refresh if the list is empty).")
        self.volume_nodes = _as_node_list(volume_nodes)
        self.backend = backend
        self.model = model
        self.options = options
        self.upload = backend.upload_for(self.volume_nodes)
        self.job = None
        self.status = None
        self.result = None
        self.started = time.monotonic()

    @property
    def volume_node(self):
        return self.volume_nodes[0]

    # -- network: any thread --------------------------------------------------------------------------------
    def submit(self):
        """Upload (if the server lacks the volumes) and queue the job."""
        if self.job is None:
            session = self.upload.session()
            self.job = self.backend.submit(session, self.task, self.model, **self.options)
        return self.job

    def poll(self):
        self.status = self.submit().poll()
        return self.status

    @property
    def done(self):
        return self.status is not None and self.status.done

    def cancel(self):
        if self.job is not None:
            self.job.cancel()

    def fetch(self):
        """Download the finished job's result into ``self.result`` (subclasses; network only)."""
        raise NotImplementedError

    def run_to_end(self, cancelled=lambda: False, interval=0.2, timeout=None, process_events=None):
        """Submit, poll until the job ends (cancelling it on the server once ``cancelled()`` turns true, or after
        ``timeout`` s, which raises ``error_class``), and fetch the result of a job that succeeded. Returns the
        final status. ``process_events`` (e.g. slicer.app.processEvents) runs between polls when this runs on the
        GUI thread (scripts, self-tests: :meth:`wait`)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        asked = False
        while not self.poll().done:
            late = deadline is not None and time.monotonic() > deadline
            if (cancelled() or late) and not asked:
                self.cancel()
                asked = True
                if late:
                    raise self.error_class(f"{self.what} did not finish within {timeout:.0f} s; it was cancelled.")
            if process_events is not None:
                process_events()
            time.sleep(interval)
        if self.status.succeeded and self.result is None:
            self.fetch()
        return self.status

    def finished_status(self):
        """The final status of a job that ended well; ``error_class`` when it is running, failed or cancelled."""
        status = self.status if self.done else self.poll()
        if not status.done:
            raise self.error_class(f"{self.what} is still running; wait until it is done.")
        if status.state != "done":
            reason = getattr(status, "error", None) or status.message or status.state
            raise self.error_class(f"{self.what} {status.state}: {reason}")
        return status

    def wait(self, timeout=600.0, interval=0.2, process_events=None):
        """:meth:`run_to_end` on the calling thread (scripts, self-tests), the application kept responsive by
        ``process_events``."""
        return self.run_to_end(interval=interval, timeout=timeout, process_events=process_events)


def describe_eta(status):
    """"about 12 s left", or "" while unknown or finished."""
    if status is None or status.done or status.eta_seconds is None:
        return ""
    seconds = max(0.0, float(status.eta_seconds))
    return f"about {seconds:.0f} s left" if seconds < 90 else f"about {seconds / 60:.0f} min left"


def _as_node_list(volume_nodes):
    if volume_nodes is None:
        nodes = []
    elif hasattr(volume_nodes, "GetID"):
        nodes = [volume_nodes]
    else:
        nodes = list(volume_nodes)
    if not nodes or any(node is None for node in nodes):
        raise ValueError("Select the input volume(s) first.")
    return nodes


def _same_nodes(key_a, key_b):
    return [item[0] for item in key_a] == [item[0] for item in key_b]


def stacked_input(volume_nodes):
    """``(array, geometry)`` to upload: one volume as (K, J, I), several as channels (C, K, J, I), which must lie
    on the same voxel grid."""
    import numpy as np

    from .volumes import volume_array, volume_geometry

    volume_nodes = _as_node_list(volume_nodes)
    arrays = [volume_array(node) for node in volume_nodes]
    geometry = volume_geometry(volume_nodes[0])
    if len(arrays) == 1:
        return arrays[0], geometry
    first = volume_nodes[0].GetName()
    for node, array in zip(volume_nodes[1:], arrays[1:]):
        other = volume_geometry(node)
        same = (array.shape == arrays[0].shape
                and np.allclose(other.origin, geometry.origin, atol=_SAME_GRID_TOLERANCE)
                and np.allclose(other.spacing, geometry.spacing, rtol=_SAME_GRID_TOLERANCE)
                and np.allclose(other.direction, geometry.direction, atol=_SAME_GRID_TOLERANCE))
        if not same:
            raise ValueError(f"Volumes {first!r} and {node.GetName()!r} do not share one voxel grid (size, origin, "
                             "spacing or axes differ); the model needs co-registered channels on the same grid. "
                             f"Resample {node.GetName()!r} onto {first!r} first (e.g. with the Resample Scalar/Vector/"
                             "DWI Volume module).")
    common = np.result_type(*arrays)
    if common.kind in "iu" and common.itemsize == 8:
        common = np.float64
    return np.stack([a.astype(common, copy=False) for a in arrays]), geometry


# -- one backend for the whole application -----------------------------------------------------------------

def shared_backend():
    """The backend the NNMamba modules use, or None when none was started or connected."""
    return _shared


def set_shared_backend(backend):
    """Make ``backend`` (or None) the shared one; a previous, different backend is stopped (never blocks long:
    LocalServer.stop is bounded)."""
    global _shared
    with _state_lock:
        previous, _shared = _shared, backend
    if previous is not None and previous is not backend:
        previous.stop()
    return backend


def require_shared_backend():
    """The shared backend, or a clear error saying how to get one."""
    if _shared is None:
        raise BackendNotConnected("No NNMamba backend is running. Open the NNMamba module and press 'Start' (local "
                                  "server) or 'Connect' (remote server) in its Backend section.")
    return _shared


class BackendStarter:
    """Makes a backend in a thread (starting a local server: importing torch alone takes seconds; connecting to a
    remote one: up to the connect timeout), so that the GUI stays responsive. Poll :attr:`finished` from a QTimer;
    :meth:`result` returns the Backend or raises what stopped it. The new backend becomes the shared one as soon as
    it is up, from the thread itself: whoever asked may have gone away (module cleanup, Reload), and the server
    then still has an owner."""

    def __init__(self, factory, description="the NNMamba backend"):
        from .background import BackgroundCall

        self.description = description
        self._call = BackgroundCall(self._make, factory, name="nnmamba-backend-start")

    def _make(self, factory):
        return set_shared_backend(factory())

    @property
    def finished(self):
        return self._call.finished

    def result(self, timeout=None):
        return self._call.result(timeout, f"{self.description[:1].upper()}{self.description[1:]} is still starting.")


def starting_backend():
    """The BackendStarter still at work, or None."""
    with _state_lock:
        return _starter if _starter is not None and not _starter.finished else None


def start_backend(factory, description="the NNMamba backend"):
    """Start making the shared backend in the background, unless a start is under way already: then that one is
    returned (two modules asking at once get one server, not two)."""
    global _starter
    with _state_lock:
        if _starter is None or _starter.finished:
            _starter = BackendStarter(factory, description=description)
        return _starter


def start_local_backend(device="auto", models_dir=None, **options):
    """:func:`start_backend` of a private local server."""
    return start_backend(lambda: Backend.local(device=device, models_dir=models_dir, **options),
                         f"the local NNMamba backend ({device})")


def connect_remote_backend(url, token, device="auto"):
    """:func:`start_backend` of a connection to a remote server (the token is checked in the thread)."""
    return start_backend(lambda: Backend.remote(url, token, device=device), f"the connection to {url}")
