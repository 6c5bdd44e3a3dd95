"""Read and write one segment's voxels inside a box of a volume's voxel grid, and fingerprint a segment.

Why boxes: a click changes a few thousand voxels of a volume of tens of millions, so reading and writing only the
changed box keeps a click fast (the anchors' best click UX does the same). Why the Segmentations logic
(``SetBinaryLabelmapToSegment``) and not numpy views of the internal labelmap: segments usually share one labelmap
with their neighbours, and only that call keeps the neighbours intact (it moves a segment to its own layer when a
write would overlap another segment) and converts the 3D surfaces after a change.

Arrays are KJI (numpy axis 0 = K), offsets are (i, j, k) voxel indices of the volume grid, as in nnmamba.
"""

from __future__ import annotations

import hashlib

LABELMAP = "Binary labelmap"


def volume_ijk_to_ras(volume_node):
    """The volume's IJK->RAS matrix as a 4x4 numpy array."""
    import numpy as np
    import vtk

    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def volume_shape(volume_node):
    """(K, J, I) size of the volume's voxel grid."""
    i, j, k = volume_node.GetImageData().GetDimensions()
    return k, j, i


def _vtk_matrix(array):
    import vtk

    matrix = vtk.vtkMatrix4x4()
    for row in range(4):
        for column in range(4):
            matrix.SetElement(row, column, float(array[row][column]))
    return matrix


def oriented_image(mask, ijk_to_ras, offset=(0, 0, 0)):
    """A uint8 vtkOrientedImageData holding ``mask`` (KJI, values 0/1) at voxel ``offset`` of the grid
    ``ijk_to_ras``."""
    import numpy as np
    import slicer
    import vtk
    from vtk.util import numpy_support

    mask = np.asarray(mask)
    k, j, i = mask.shape
    image = slicer.vtkOrientedImageData()
    image.SetImageToWorldMatrix(_vtk_matrix(ijk_to_ras))
    image.SetExtent(offset[0], offset[0] + i - 1, offset[1], offset[1] + j - 1, offset[2], offset[2] + k - 1)
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())[:] = (mask.reshape(-1) != 0)
    return image


def _image_array(image):
    """KJI numpy view of a vtkImageData's scalars, or None when its extent is empty."""
    from vtk.util import numpy_support

    x0, x1, y0, y1, z0, z1 = image.GetExtent()
    if x1 < x0 or y1 < y0 or z1 < z0 or image.GetPointData().GetScalars() is None:
        return None
    return numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(z1 - z0 + 1, y1 - y0 + 1, x1 - x0 + 1)


def _same_lattice(image, ijk_to_ras):
    import numpy as np
    import vtk

    matrix = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(matrix)
    found = np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])
    return np.allclose(found, ijk_to_ras, atol=1e-5)


def _internal_labelmap(segmentation_node, segment_id):
    segment = segmentation_node.GetSegmentation().GetSegment(segment_id)
    if segment is None:
        raise KeyError(f"Segment {segment_id!r} is not in segmentation {segmentation_node.GetName()!r}.")
    return segment, segment.GetRepresentation(LABELMAP)


def read_box(segmentation_node, segment_id, ijk_to_ras, offset, shape):
    """The segment's voxels (uint8 0/1, KJI ``shape``) in the box at ``offset`` of the grid ``ijk_to_ras``.

    Reads the shared internal labelmap in place when it lies on that grid (the usual case); otherwise resamples it
    (nearest neighbour), e.g. for a segmentation that was made on another volume."""
    import numpy as np
    import slicer

    segment, labelmap = _internal_labelmap(segmentation_node, segment_id)
    result = np.zeros(shape, dtype=np.uint8)
    if labelmap is None or _image_array(labelmap) is None:
        return result
    box = oriented_image(result, ijk_to_ras, offset)
    if not _same_lattice(labelmap, ijk_to_ras):
        resampled = slicer.vtkOrientedImageData()
        slicer.vtkOrientedImageDataResample.ResampleOrientedImageToReferenceOrientedImage(labelmap, box, resampled)
        labelmap = resampled
    values = _image_array(labelmap)
    if values is None:
        return result
    source = labelmap.GetExtent()
    target = box.GetExtent()
    lo = [max(source[2 * a], target[2 * a]) for a in range(3)]          # i, j, k
    hi = [min(source[2 * a + 1], target[2 * a + 1]) for a in range(3)]
    if any(h < low for low, h in zip(lo, hi)):
        return result
    src = tuple(slice(lo[a] - source[2 * a], hi[a] - source[2 * a] + 1) for a in (2, 1, 0))
    dst = tuple(slice(lo[a] - target[2 * a], hi[a] - target[2 * a] + 1) for a in (2, 1, 0))
    result[dst] = values[src] == segment.GetLabelValue()
    return result


def write_box(segmentation_node, segment_id, mask, ijk_to_ras, offset):
    """Make the segment's voxels inside the box at ``offset`` exactly ``mask``; voxels outside the box and other
    segments stay as they are (a write that would overlap another segment moves this one to its own layer)."""
    import slicer

    logic = slicer.vtkSlicerSegmentationsModuleLogic
    segmentation = segmentation_node.GetSegmentation()
    image = oriented_image(mask, ijk_to_ras, offset)
    extent = image.GetExtent()
    neighbours = [segmentation.GetNthSegmentID(n) for n in range(segmentation.GetNumberOfSegments())]
    neighbours = [sid for sid in neighbours if sid != segment_id]
    # Clearing never touches another segment's voxels, so it must not separate this segment from its layer.
    if not logic.SetBinaryLabelmapToSegment(image, segmentation_node, segment_id, logic.MODE_MERGE_MIN, extent,
                                            False, neighbours):
        raise RuntimeError(f"Slicer could not clear voxels of segment {segment_id!r}.")
    if not logic.SetBinaryLabelmapToSegment(image, segmentation_node, segment_id, logic.MODE_MERGE_MASK, extent):
        raise RuntimeError(f"Slicer could not write voxels of segment {segment_id!r}.")


def bounding_box(mask):
    """(first, stop) KJI index lists of the nonzero voxels of a 3D mask, or None when it is empty."""
    import numpy as np

    first, stop = [], []
    for axis in range(3):
        hit = np.flatnonzero(np.asarray(mask).any(axis=tuple(a for a in range(3) if a != axis)))
        if not len(hit):
            return None
        first.append(int(hit[0]))
        stop.append(int(hit[-1]) + 1)
    return first, stop


def segment_fingerprint(segmentation_node, segment_id):
    """A short hash of where the segment's voxels are: their bounding box (in the labelmap's voxel indices) and the
    bits inside it. Independent of how Slicer pads or shares the labelmap, so it survives a save and reload; any
    voxel the user paints or erases changes it."""
    import numpy as np

    segment, labelmap = _internal_labelmap(segmentation_node, segment_id)
    values = None if labelmap is None else _image_array(labelmap)
    digest = hashlib.sha256()
    if values is not None:
        mask = values == segment.GetLabelValue()
        box = bounding_box(mask)
        if box is not None:
            start = labelmap.GetExtent()[0::2]   # i, j, k of values[0, 0, 0]
            first, stop = box
            corner = [first[2] + start[0], first[1] + start[1], first[0] + start[2]]
            digest.update(np.array(corner + [b - a for a, b in zip(first, stop)], dtype="<i8").tobytes())
            digest.update(np.packbits(mask[first[0]:stop[0], first[1]:stop[1], first[2]:stop[2]]).tobytes())
    return digest.hexdigest()[:32]
