"""A segmentation written in the format its file name asks for: ``.seg.nrrd`` (Slicer's segmentation file, with
names, colours and terminology) or a plain label map (``.nii.gz``, ``.nii``, ``.nrrd``, ``.mha``: one integer per
voxel on the input grid, what nnU-Net, ITK-SNAP and most pipelines read). Any other ending is refused before the
work starts (:func:`segmentation_format`), never written as bytes of another format under that name.

Overlapping regions (BraTS whole tumour) exist only in ``.seg.nrrd``; a plain label map holds the labels.
"""

from __future__ import annotations

import numpy as np

from nnmamba.formats.atomic import atomic_path
from nnmamba.formats.segmentation_file import write_segmentation

# file ending -> what it holds; the order is the order of the error message
SEGMENTATION_FORMATS = {
    ".seg.nrrd": "Slicer segmentation (names, colours, terminology)",
    ".nii.gz": "label map, NIfTI (compressed)",
    ".nii": "label map, NIfTI",
    ".nrrd": "label map, NRRD",
    ".mha": "label map, MetaImage",
}


def segmentation_format(path) -> str:
    """The ending of ``path`` that picks its format (a key of SEGMENTATION_FORMATS); ValueError for any other."""
    name = str(path).lower()
    for ending in SEGMENTATION_FORMATS:          # .seg.nrrd before .nrrd, .nii.gz before .nii
        if name.endswith(ending):
            return ending
    endings = ", ".join(SEGMENTATION_FORMATS)
    raise ValueError(f"{path}: a segmentation is written as {endings}; the file name must end with one of them "
                     "(.seg.nrrd opens in Slicer with segment names and colours).")


def write_segmentation_as(path, labels, geometry, segments, regions=(), offset=(0, 0, 0), reference_shape=None):
    """Write a KJI label map in the format of ``path``'s ending; the arguments are those of
    :func:`nnmamba.formats.write_segmentation`. Returns the format's ending."""
    ending = segmentation_format(path)
    if ending == ".seg.nrrd":
        write_segmentation(path, labels, geometry, segments, regions, offset=offset, reference_shape=reference_shape)
    else:
        write_labelmap(path, labels, geometry, offset=offset, reference_shape=reference_shape)
    return ending


def write_labelmap(path, labels, geometry, offset=(0, 0, 0), reference_shape=None):
    """Write a KJI integer label map as a plain image (uint8, or uint16 above 255) on ``geometry``: a cropped
    map (``offset`` = IJK index of its voxel (0, 0, 0)) is placed in a zero map of ``reference_shape`` (KJI)."""
    import SimpleITK as sitk

    from nnmamba.geometry import Geometry

    labels = np.asarray(labels)
    if labels.ndim != 3 or not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool):
        raise ValueError(f"A label map must be a 3-D integer array, got {labels.dtype} {labels.shape}.")
    if labels.size and labels.min() < 0:
        raise ValueError("The label map has negative values; label values must be 0 (background) or positive.")
    dtype = np.uint8 if not labels.size or labels.max() <= 255 else np.uint16
    shape = tuple(reference_shape) if reference_shape is not None else tuple(
        o + n for o, n in zip(tuple(offset)[::-1], labels.shape))
    full = np.zeros(shape, dtype)
    k, j, i = tuple(offset)[::-1]
    full[k:k + labels.shape[0], j:j + labels.shape[1], i:i + labels.shape[2]] = labels
    image = sitk.GetImageFromArray(full)
    Geometry.create(*geometry).apply_to_sitk(image)
    with atomic_path(path) as temporary:
        sitk.WriteImage(image, str(temporary), True)
