"""Click-to-segment as a person does it: the demo CT in a real Slicer slice view, the module's click tool
(NNMambaSegmentationLib.click_tool, the same code the module runs) in place mode, mouse clicks injected into the
view's interactor -> Slicer's markups widget places the point -> the click tool -> the local backend -> the segment,
and the rendered view shows it. A Ctrl-click (which place mode ignores) removes the structure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
CT = ROOT / "Resources" / "SampleData" / "NNMambaDemoAbdomenCT.nrrd"
MODEL = "demo-abdomen-ct"


@pytest.fixture(scope="module")
def liver_ras(backend):
    from slice_views import liver_centre

    return liver_centre(backend, CT, MODEL)


def colour_distance(a, b):
    return float(np.linalg.norm(np.asarray(a, float) - np.asarray(b, float)))


def in_segment(segmentation, segment_id, volume, ras):
    """Whether the voxel at ``ras`` belongs to the segment (read back from the node, on the volume's grid)."""
    import slicer.util
    import vtk

    labels = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, segment_id, volume)
    matrix = vtk.vtkMatrix4x4()
    volume.GetRASToIJKMatrix(matrix)
    i, j, k = (int(round(v)) for v in matrix.MultiplyPoint([*ras, 1.0])[:3])
    return bool(labels[k, j, i])


def test_a_click_on_the_liver_in_a_slice_view_segments_it(views, backend, liver_ras, tmp_path):
    from NNMambaSegmentationLib.click_tool import ClickTool
    from NNMambaSegmentationLib.clicks import ClickSession
    from NNMambaSegmentationLib.segments import find_segment

    volume = views.load_volume(CT, window_level=(400, 40))
    segmentation = views.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "CT segmentation")
    segmentation.CreateDefaultDisplayNodes()
    session = ClickSession(backend, [volume], MODEL, segmentation)
    before_persistence = views.interaction.GetPlaceModePersistence()
    before_mode = views.interaction.GetCurrentInteractionMode()
    mine = views.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "my points")
    views.selection.SetActivePlaceNodeID(mine.GetID())
    lines = []
    tool = ClickTool(lambda: session, lines.append, views.interaction, views.selection, views.app.markups_logic,
                     views=lambda: [views.click_tool_view()])

    xy = views.show_point(liver_ras)
    probe = (xy[0] + 25, xy[1])                            # a liver pixel beside the click point's own glyph
    plain = views.pixel(probe)
    points = tool.start()
    views.click(xy)                                        # Slicer's markups widget places the point
    assert points.GetNumberOfControlPoints() == 1 and tool.pending is not None
    placed = [0.0, 0.0, 0.0]
    points.GetNthControlPointPositionWorld(0, placed)
    np.testing.assert_allclose(placed, views.ras_of(xy), atol=1e-6)
    first = tool.wait(timeout=300)
    assert first.structure == "liver" and first.changed > 1000 and first.network_passes > 0
    liver = find_segment(segmentation, "liver")
    colour = 255 * np.array(segmentation.GetSegmentation().GetSegment(liver).GetColor())
    assert in_segment(segmentation, liver, volume, views.ras_of(probe))
    shown = views.pixel(probe)
    assert colour_distance(shown, colour) < colour_distance(plain, colour) - 20, (plain, shown, colour)
    views.save_png(tmp_path / "liver-clicked.png")

    again = views.click(views.xy_of(np.add(liver_ras, (3.0, 3.0, 0.0)))) or tool.wait(timeout=300)
    assert again.structure == "liver" and again.network_passes == 0   # the second click comes from the cache

    views.click(xy, control=True)                          # Ctrl-click: place mode ignores it, the tool does not
    removal = tool.wait(timeout=300)
    assert not removal.positive and removal.structure == "liver" and removal.changed == first.changed
    assert colour_distance(views.pixel(probe), plain) < 1.0   # the overlay is gone
    assert points.GetNthControlPointDescription(points.GetNumberOfControlPoints() - 1) == "negative"

    tool.undo(session)                                     # back to the liver as the first click made it
    assert colour_distance(views.pixel(probe), shown) < 1.0

    tool.stop()
    assert views.interaction.GetCurrentInteractionMode() == before_mode
    assert views.interaction.GetPlaceModePersistence() == before_persistence
    assert views.selection.GetActivePlaceNodeID() == mine.GetID()
    assert "liver" in lines[-1]
