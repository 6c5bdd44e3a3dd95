"""One Slicer slice view rendered offscreen by trame-slicer, with the few things the tests (and the screenshot
script) do to it: load a volume, show a slice through a point, inject mouse events, render to PNG and read pixels."""

from __future__ import annotations

import types

import numpy as np


class SliceViews:
    def __init__(self, size=(512, 512), orientation="Axial"):
        import slicer
        from trame_slicer.core import SlicerApp
        from trame_slicer.views import DirectViewFactory, ViewLayoutDefinition, ViewProps, ViewType

        self.app = SlicerApp()
        self.app.view_manager.register_factory(DirectViewFactory(do_render_offscreen=True))
        self.view = self.app.view_manager.create_view(ViewLayoutDefinition(
            singleton_tag="Red", view_type=ViewType.SLICE_VIEW, properties=ViewProps(orientation=orientation)))
        self.view.update_size(*size)
        self.scene = self.app.scene
        slicer.mrmlScene = self.scene   # what our Lib code and slicer.util use, as in the application
        slicer.modules = types.SimpleNamespace(**{
            name: types.SimpleNamespace(logic=lambda logic=logic: logic) for name, logic in (
                ("segmentations", self.app.segmentations_logic), ("markups", self.app.markups_logic),
                ("volumes", self.app.volumes_logic))})
        self.interaction = self.app.app_logic.GetInteractionNode()
        self.selection = self.app.app_logic.GetSelectionNode()
        self.view.render()

    def close(self):
        self.scene.Clear(1)

    @property
    def slice_node(self):
        return self.view.get_view_node()

    @property
    def interactor(self):
        return self.view.interactor()

    def click_tool_view(self):
        """The view as NNMambaSegmentationLib.click_tool sees slice views."""
        from NNMambaSegmentationLib.click_tool import SliceView

        return SliceView(self.interactor, self.slice_node)

    def load_volume(self, path, window_level=None):
        volume = self.app.io_manager.load_volumes(str(path))[0]
        self.view.set_background_volume_id(volume.GetID())
        if window_level is not None:
            volume.GetDisplayNode().AutoWindowLevelOff()
            volume.GetDisplayNode().SetWindowLevel(*window_level)
        self.view.fit_view_to_content()
        self.view.render()
        return volume

    def show_point(self, ras):
        """Move the slice to contain ``ras`` (keeping the field of view), render; returns the point's XY pixel."""
        self.slice_node.JumpSliceByOffsetting(*ras)
        self.view.render()
        return self.xy_of(ras)

    def xy_of(self, ras):
        matrix = np.array([[self.slice_node.GetXYToRAS().GetElement(r, c) for c in range(4)] for r in range(4)])
        xy = np.linalg.inv(matrix) @ np.append(np.asarray(ras, float), 1.0)
        return int(round(xy[0])), int(round(xy[1]))

    def ras_of(self, xy):
        return self.slice_node.GetXYToRAS().MultiplyPoint([float(xy[0]), float(xy[1]), 0.0, 1.0])[:3]

    # -- a person's mouse ---------------------------------------------------------------------------------------------
    def _event(self, name, xy, control=False, shift=False):
        self.interactor.SetEventInformation(int(xy[0]), int(xy[1]), int(control), int(shift))
        self.interactor.InvokeEvent(name)

    def click(self, xy, control=False, shift=False):
        self._event("MouseMoveEvent", xy, control, shift)
        self._event("LeftButtonPressEvent", xy, control, shift)
        self._event("LeftButtonReleaseEvent", xy, control, shift)
        self.view.render()

    def drag(self, start, end, steps=10):
        self._event("MouseMoveEvent", start)
        self.view.render()
        self._event("MouseMoveEvent", start)
        self._event("LeftButtonPressEvent", start)
        for t in np.linspace(0.0, 1.0, steps)[1:]:
            self._event("MouseMoveEvent", np.round(np.asarray(start) + t * (np.asarray(end) - start)))
        self._event("LeftButtonReleaseEvent", end)
        self.view.render()

    # -- what a person sees -------------------------------------------------------------------------------------------
    def pixels(self):
        """The rendered view as an (H, W, 3) uint8 array, row 0 at the top (as in the PNG)."""
        from vtkmodules.util.numpy_support import vtk_to_numpy
        from vtkmodules.vtkRenderingCore import vtkWindowToImageFilter

        self.view.render()
        grab = vtkWindowToImageFilter()
        grab.SetInput(self.view.render_window())
        grab.ReadFrontBufferOff()
        grab.Update()
        image = grab.GetOutput()
        width, height, _ = image.GetDimensions()
        rgb = vtk_to_numpy(image.GetPointData().GetScalars()).reshape(height, width, -1)[..., :3]
        return rgb[::-1].copy()

    def pixel(self, xy):
        """The colour at view XY (origin bottom-left, as VTK's event positions)."""
        image = self.pixels()
        return image[image.shape[0] - 1 - int(xy[1]), int(xy[0])].astype(float)

    def save_png(self, path):
        from vtkmodules.vtkIOImage import vtkPNGWriter
        from vtkmodules.vtkRenderingCore import vtkWindowToImageFilter

        self.view.render()
        grab = vtkWindowToImageFilter()
        grab.SetInput(self.view.render_window())
        grab.ReadFrontBufferOff()
        grab.Update()
        writer = vtkPNGWriter()
        writer.SetFileName(str(path))
        writer.SetInputConnection(grab.GetOutputPort())
        writer.Write()
        return path


def liver_centre(backend, ct_path, model):
    """RAS of the voxel nearest the middle of the liver, from the model's own full segmentation of the CT."""
    import tempfile

    from nnmamba.formats import read_segmentation

    views = SliceViews()
    try:
        volume = views.load_volume(ct_path)
        job = backend.start_job([volume], "segmentation", model)
        job.wait(timeout=600)
        with tempfile.TemporaryDirectory() as folder:
            result = read_segmentation(job.result_file(folder))
        value = next(segment["value"] for segment in result.segments if segment["name"] == "liver")
        voxels = np.argwhere(result.labels == value)
        k, j, i = voxels[np.argmin(np.abs(voxels - voxels.mean(0)).sum(1))]
        return tuple(float(v) for v in (result.geometry.ijk_to_ras() @ np.array([i, j, k, 1.0]))[:3])
    finally:
        views.close()
