"""One landmark run, from Apply to scene nodes, without Qt: the widget polls it from a QTimer, scripts and
self-tests call :meth:`LandmarkRun.wait`. The backend (NNMambaSlicerLib.backend) does the upload and the job."""

from __future__ import annotations

from NNMambaSlicerLib.backend import JobRun, describe_eta

from .landmark_nodes import update_landmark_nodes

TASK = "landmarks"


class LandmarkRunError(RuntimeError):
    """The job ended without landmarks (failed or cancelled on the server)."""


def landmark_models(backend):
    """[(model id, display name)] of the backend's landmark models, in the server's order."""
    models = backend.models(task=TASK)
    return [(m["id"], f"{m.get('name') or m['id']} ({m['id']}, v{m.get('version', '?')})") for m in models]


def describe_status(status):
    """One line for the status label, e.g. "running: tile 3 of 12 (45%, about 12 s left)"."""
    if status is None:
        return ""
    message = status.message or ""
    text = message if message.startswith(status.state) else f"{status.state}: {message}"
    text = text if message else status.state
    if status.done:
        return text
    details = [f"{100.0 * status.progress:.0f}%", describe_eta(status)]
    return f"{text} ({', '.join(d for d in details if d)})"


class LandmarkRun(JobRun):
    """Submit a landmark job for ``volume_node`` with ``model`` at once; poll it; turn its answer into nodes.

    ``points_node``: an existing point list to update (a re-run), else a new one is made on :meth:`finish`.
    ``options``: passed to the server's job (e.g. ``refine="quadratic"``).
    """

    error_class = LandmarkRunError
    what = "Landmark detection"

    def __init__(self, backend, volume_node, model, points_node=None, **options):
        if volume_node is None:
            raise ValueError("Select an input volume first.")
        if not model:
            raise ValueError("Select a landmark model first (press Refresh if the list is empty).")
        self.volume_node = volume_node
        self.points_node = points_node
        super().__init__(backend.start_job([volume_node], TASK, model, **options))

    def finish(self, scene=None):
        """The :class:`LandmarkNodes` of the finished job (call once ``poll().done``). Raises LandmarkRunError
        when the job failed or was cancelled."""
        self.finished_status()
        scene = scene or self.volume_node.GetScene()
        return update_landmark_nodes(scene, self.job.result_json(), points_node=self.points_node,
                                     volume_node=self.volume_node, model=self.job.model)

    def wait(self, timeout=600.0, interval=0.2, process_events=None):
        """Poll until the job ends (scripts and self-tests); returns the nodes, as :meth:`finish`."""
        super().wait(timeout, interval, process_events)
        return self.finish()
