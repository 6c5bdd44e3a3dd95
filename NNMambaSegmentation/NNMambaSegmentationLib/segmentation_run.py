"""One segmentation run, from Apply to segments, without Qt: the widget polls it from a QTimer, scripts and
self-tests call :meth:`SegmentationRun.wait`. The backend (NNMambaSlicerLib.backend) does the upload and the job.

Between "the job is done" and "the segments are written" the widget asks the user about edited segments:
:meth:`SegmentationRun.edited` says which segments a write would replace, :meth:`SegmentationRun.finish` writes.
"""

from __future__ import annotations

import tempfile

from NNMambaSlicerLib.backend import JobRun

from .segments import edited_segments, put_segmentation_file

TASK = "segmentation"


class SegmentationRunError(RuntimeError):
    """The job ended without a segmentation (failed or cancelled on the server)."""


def segmentation_models(backend):
    """[(model id, display name, input channel names)] of the backend's segmentation models, in the server's
    order."""
    return [(m["id"], f"{m.get('name') or m['id']} ({m['id']}, v{m.get('version', '?')})",
             list(m.get("inputs") or ["image"])) for m in backend.models(task=TASK)]


def describe_status(status):
    """One line for the status label, e.g. "running: tile 3 of 12"."""
    if status is None:
        return ""
    message = status.message or ""
    if not message:
        return status.state
    return message if message.startswith(status.state) else f"{status.state}: {message}"


def new_segmentation_node(volume_node):
    """A segmentation node named after the volume, next to it in the subject hierarchy."""
    import slicer

    scene = volume_node.GetScene()
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", scene.GetUniqueNameByString(
        f"{volume_node.GetName()} segmentation"))
    node.CreateDefaultDisplayNodes()
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    if hierarchy is not None:
        volume_item = hierarchy.GetItemByDataNode(volume_node)
        node_item = hierarchy.GetItemByDataNode(node)
        if volume_item and node_item:
            hierarchy.SetItemParent(node_item, hierarchy.GetItemParent(volume_item))
    return node


class SegmentationRun(JobRun):
    """Submit a segmentation job for ``volume_nodes`` (the model's channels, in order) with ``model`` at once;
    poll it; put its label map into a segmentation node. ``options`` go to the server's job (overlap, mirroring,
    device)."""

    error_class = SegmentationRunError
    what = "Segmentation"

    def __init__(self, backend, volume_nodes, model, **options):
        nodes = [volume_nodes] if hasattr(volume_nodes, "GetID") else list(volume_nodes or [])
        if not nodes or any(node is None for node in nodes):
            raise ValueError("Select the input volume(s) first.")
        if not model:
            raise ValueError("Select a segmentation model first (press Refresh if the list is empty).")
        self.volume_nodes = nodes
        super().__init__(backend.start_job(nodes, TASK, model, **options))
        self._result = None

    @property
    def volume_node(self):
        return self.volume_nodes[0]

    def result(self):
        """The finished job's :class:`nnmamba.formats.SegmentationFile` (downloaded once). Raises
        SegmentationRunError when the job failed or was cancelled."""
        from nnmamba.formats import read_segmentation

        if self._result is None:
            self.finished_status()
            with tempfile.TemporaryDirectory(prefix="nnmamba-") as folder:
                self._result = read_segmentation(self.job.result_file(folder))
        return self._result

    def edited(self, segmentation_node):
        """Names of the result's structures whose segment in ``segmentation_node`` the user edited."""
        return edited_segments(segmentation_node, [segment["name"] for segment in self.result().segments])

    def finish(self, segmentation_node=None, overwrite_edited=False, show_3d=False):
        """Write the result into ``segmentation_node`` (a new one when None); edited segments are kept unless
        ``overwrite_edited``. Returns (node, :class:`segments.WriteReport`)."""
        result = self.result()
        node = segmentation_node or new_segmentation_node(self.volume_node)
        report = put_segmentation_file(node, self.volume_node, result, overwrite_edited=overwrite_edited,
                                       show_3d=show_3d)
        return node, report
