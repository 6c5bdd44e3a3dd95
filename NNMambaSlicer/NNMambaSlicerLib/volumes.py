"""Scalar volume nodes <-> (KJI numpy array, nnmamba Geometry), the one place where the Slicer modules cross the
RAS/LPS line.

The IJK->RAS matrix is converted by :mod:`nnmamba.geometry` (the formula is written there once and checked against
Slicer's reader), so the server sees exactly what SimpleITK would read from the NRRD Slicer saves. The geometry is
the node's own IJK->RAS; a parent transform is not applied (the result nodes go under the same transform).
"""

from __future__ import annotations


class VolumeNodeError(ValueError):
    """A node that cannot be sent to the backend as a scalar volume."""


def _check_scalar_volume(volume_node):
    if volume_node is None:
        raise VolumeNodeError("No input volume selected: choose a scalar volume.")
    if not volume_node.IsA("vtkMRMLScalarVolumeNode"):
        raise VolumeNodeError(f"{volume_node.GetName()!r} is a {volume_node.GetClassName()}, not a scalar volume; "
                              "choose a scalar (grey-level) volume.")
    image = volume_node.GetImageData()
    if image is None:
        raise VolumeNodeError(f"Volume {volume_node.GetName()!r} has no voxels (its image data is empty); load it "
                              "again.")
    components = image.GetNumberOfScalarComponents()
    if volume_node.IsA("vtkMRMLVectorVolumeNode") or components != 1:
        raise VolumeNodeError(f"Volume {volume_node.GetName()!r} has {components} components per voxel (a vector or "
                              "colour volume); NNMamba needs a scalar volume. Convert it first (Volumes module: "
                              "'Convert to scalar volume', or Vector to Scalar Volume).")
    return image


def volume_geometry(volume_node):
    """The node's geometry as an LPS :class:`nnmamba.geometry.Geometry` (origin, spacing, direction)."""
    import numpy as np
    import vtk

    from nnmamba.geometry import Geometry

    _check_scalar_volume(volume_node)
    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    ijk_to_ras = np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])
    try:
        return Geometry.from_ijk_to_ras(ijk_to_ras)
    except ValueError as error:
        raise VolumeNodeError(f"Volume {volume_node.GetName()!r} has an unusable geometry: {error}") from None


def volume_array(volume_node):
    """A KJI copy of the voxels (numpy axis 0 = K, the slowest axis), in the volume's own scalar type."""
    import numpy as np
    import slicer.util

    _check_scalar_volume(volume_node)
    return np.array(slicer.util.arrayFromVolume(volume_node), copy=True)


def add_volume(scene, array_kji, geometry, name, class_name="vtkMRMLScalarVolumeNode"):
    """A new volume node in ``scene`` holding ``array_kji`` (3D, KJI) with ``geometry`` (an LPS Geometry), with a
    display node so that it shows in the views. ``class_name``: vtkMRMLScalarVolumeNode or
    vtkMRMLLabelMapVolumeNode."""
    import numpy as np
    import slicer.util
    import vtk

    array = np.asarray(array_kji)
    if array.ndim != 3:
        raise VolumeNodeError(f"A volume needs a 3D (K, J, I) array, got shape {tuple(array.shape)}.")
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    elif array.dtype.kind in "iu" and array.dtype.itemsize == 8:   # VTK arrays from numpy refuse 64-bit ints
        array = array.astype(np.int32)
    node = scene.AddNewNodeByClass(class_name, name)
    matrix = vtk.vtkMatrix4x4()
    for row, values in enumerate(geometry.ijk_to_ras()):
        for column, value in enumerate(values):
            matrix.SetElement(row, column, float(value))
    node.SetIJKToRASMatrix(matrix)
    slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(array))
    node.CreateDefaultDisplayNodes()
    return node


def first_scalar_volume(scene):
    """The first scalar volume of ``scene`` that is not a labelmap: the default input of every NNMamba module (a
    labelmap is a vtkMRMLScalarVolumeNode too, but the input selectors do not show it)."""
    for index in range(scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")):
        node = scene.GetNthNodeByClass(index, "vtkMRMLScalarVolumeNode")
        if not node.IsA("vtkMRMLLabelMapVolumeNode"):
            return node
    return None
