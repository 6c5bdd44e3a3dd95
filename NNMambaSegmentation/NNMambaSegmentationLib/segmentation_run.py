"""One segmentation run, from Apply to segments, without Qt: the widget runs it through NNMambaSlicerLib's
JobPanel (network in a worker thread), scripts and self-tests call :meth:`SegmentationRun.wait`.

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
    """A segmentation job for ``volume_nodes`` (the model's channels, in order) with ``model``; :meth:`fetch`
    downloads and reads the .seg.nrrd (any thread), :meth:`finish` puts it into a segmentation node (GUI thread).
    ``options`` go to the server's job (overlap, mirroring, device)."""

    task = TASK
    error_class = SegmentationRunError
    what = "Segmentation"

    def __init__(self, backend, volume_nodes, model, **options):
        super().__init__(backend, volume_nodes, model, what_model="segmentation model", **options)

    def fetch(self):
        from nnmamba.formats import read_segmentation

        with tempfile.TemporaryDirectory(prefix="nnmamba-") as folder:
            self.result = read_segmentation(self.job.result_file(folder))

    def segmentation_file(self):
        """The finished job's :class:`nnmamba.formats.SegmentationFile`. Raises SegmentationRunError when the job
        failed or was cancelled."""
        self.finished_status()
        if self.result is None:
            self.fetch()
        return self.result

    def edited(self, segmentation_node):
        """Names of the result's structures whose segment in ``segmentation_node`` the user edited."""
        return edited_segments(segmentation_node, [segment["name"] for segment in self.segmentation_file().segments])

    def finish(self, segmentation_node=None, overwrite_edited=False, show_3d=False):
        """Write the result into ``segmentation_node`` (a new one when None); edited segments are kept unless
        ``overwrite_edited``. Returns (node, :class:`segments.WriteReport`)."""
        result = self.segmentation_file()
        node = segmentation_node or new_segmentation_node(self.volume_node)
        report = put_segmentation_file(node, self.volume_node, result, overwrite_edited=overwrite_edited,
                                       show_3d=show_3d)
        return node, report
