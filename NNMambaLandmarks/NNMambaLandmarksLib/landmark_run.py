"""One landmark run, from Apply to scene nodes, without Qt: the widget runs it through NNMambaSlicerLib's JobPanel
(network in a worker thread), scripts and self-tests call :meth:`LandmarkRun.wait`."""

from __future__ import annotations

from NNMambaSlicerLib.backend import JobRun

from .landmark_nodes import update_landmark_nodes

TASK = "landmarks"


class LandmarkRunError(RuntimeError):
    """The job ended without landmarks (failed or cancelled on the server)."""


def landmark_models(backend):
    """[(model id, display name)] of the backend's landmark models, in the server's order."""
    models = backend.models(task=TASK)
    return [(m["id"], f"{m.get('name') or m['id']} ({m['id']}, v{m.get('version', '?')})") for m in models]


class LandmarkRun(JobRun):
    """A landmark job for ``volume_node`` with ``model``; :meth:`fetch` downloads the answer (any thread),
    :meth:`finish` turns it into nodes (GUI thread).

    ``points_node``: an existing point list to update (a re-run), else a new one is made on :meth:`finish`.
    ``options``: passed to the server's job (e.g. ``refine="quadratic"``).
    """

    task = TASK
    error_class = LandmarkRunError
    what = "Landmark detection"

    def __init__(self, backend, volume_node, model, points_node=None, **options):
        if volume_node is None:
            raise ValueError("Select an input volume first.")
        super().__init__(backend, [volume_node], model, what_model="landmark model", **options)
        self.points_node = points_node

    def fetch(self):
        self.result = self.job.result_json()

    def finish(self, scene=None):
        """The :class:`LandmarkNodes` of the finished job. Raises LandmarkRunError when the job failed or was
        cancelled."""
        self.finished_status()
        if self.result is None:
            self.fetch()
        scene = scene or self.volume_node.GetScene()
        return update_landmark_nodes(scene, self.result, points_node=self.points_node,
                                     volume_node=self.volume_node, model=self.job.model)

    def wait(self, timeout=600.0, interval=0.2, process_events=None):
        """Poll until the job ends (scripts and self-tests); returns the nodes, as :meth:`finish`."""
        super().wait(timeout, interval, process_events)
        return self.finish()
