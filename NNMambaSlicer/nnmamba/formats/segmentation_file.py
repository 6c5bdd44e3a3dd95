"""Segmentation results as Slicer ``.seg.nrrd`` files (slicer-platform.md §3), written and read with slicerio.

A .seg.nrrd rather than a plain label map, because Slicer then loads it straight into a Segmentation node with our
segment names, colours and terminology instead of "Label_1" and random colours. Overlapping structures (BraTS whole
tumour = labels 1+2+3) go into extra layers of a 4-D file, as Slicer itself stores overlapping segments.

Axis orders: our arrays are KJI (numpy axis 0 = K, as SimpleITK and ``slicer.util.arrayFromVolume``); slicerio's are
IJK. The transposes live only in this module.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

import numpy as np

from nnmamba.formats.atomic import atomic_path
from nnmamba.geometry import Geometry

LABELMAP = "Binary labelmap"
REFERENCE_GEOMETRY = "Reference image geometry"
REFERENCE_GEOMETRY_DESCRIPTION = (
    "Geometry of the image the segmentation was computed on: IJK to RAS matrix (row-major) then the IJK extent."
)
TERMINOLOGY_TAG = "TerminologyEntry"
COMPRESSION_LEVEL = 6  # zlib's default: level 9 is ~2x slower for a few % smaller label maps
MAX_LABEL_VALUE = np.iinfo(np.uint16).max


@dataclass
class SegmentationFile:
    """What :func:`read_segmentation` returns. ``geometry`` is the reference grid; the file's voxel (0,0,0) is its IJK
    index ``offset``. ``reference_shape`` (KJI) is the reference image size when the file records it."""

    labels: np.ndarray
    layers: np.ndarray
    geometry: Geometry
    offset: tuple
    segments: list
    reference_shape: Optional[tuple] = None

    def mask(self, name_or_id):
        """Boolean KJI mask of one segment, found by ID or name."""
        for segment in self.segments:
            if name_or_id in (segment["id"], segment["name"]):
                return self.layers[segment["layer"]] == segment["value"]
        raise KeyError(f"No segment named {name_or_id!r}; segments: {[s['name'] for s in self.segments]}")


def write_segmentation(path, labels, geometry, segments, regions=(), offset=(0, 0, 0), reference_shape=None):
    """Write a KJI integer label map on ``geometry`` (LPS) as a .seg.nrrd.

    segments: [{"value": int > 0, "name", "color": [r, g, b] in 0..1, "terminology": TerminologyEntry str or None}],
    one per label value (values without voxels are still written). regions: overlapping segments, each
    {"name", "color", "terminology", "labels": [values]}, one extra layer each. offset: IJK index in the reference
    grid of the file's voxel (0,0,0), for a cropped mask. reference_shape: KJI size of the reference image.
    Segment IDs are the names reduced to letters, digits, ``_ . -`` (made unique with ``_2``, ``_3``).
    """
    import slicerio

    labels = _checked_labels(labels)
    geometry = Geometry.create(*geometry)
    offset = _checked_offset(offset)
    segments = [_checked_segment(entry, index) for index, entry in enumerate(segments)]
    _check_unique("segment value", [segment["value"] for segment in segments])
    _check_every_label_has_a_segment(labels, segments)
    regions = [_checked_region(entry, index, segments) for index, entry in enumerate(regions)]
    _check_unique("segment or region name", [entry["name"] for entry in segments + regions])
    if reference_shape is None:
        reference_shape = tuple(o + n for o, n in zip(offset[::-1], labels.shape))
    reference_shape = _checked_reference_shape(reference_shape, labels.shape, offset)

    largest_value = max([segment["value"] for segment in segments], default=1)
    dtype = np.uint8 if largest_value <= np.iinfo(np.uint8).max else np.uint16
    layers = [labels.astype(dtype, copy=False)]
    layers += [np.isin(labels, region["labels"]).astype(dtype) for region in regions]
    if len(layers) == 1:
        voxels_ijk = layers[0].transpose(2, 1, 0)
    else:
        voxels_ijk = np.stack(layers).transpose(0, 3, 2, 1)

    file_to_lps = geometry.ijk_to_lps()
    file_to_lps[:3, 3] = geometry.index_to_lps(offset)
    ids = _segment_ids([entry["name"] for entry in segments + regions])
    layer_of_entry = [0] * len(segments) + list(range(1, len(regions) + 1))
    value_of_entry = [segment["value"] for segment in segments] + [1] * len(regions)
    seg_entries = [
        _slicerio_segment(entry, segment_id, layer, value)
        for entry, segment_id, layer, value in zip(segments + regions, ids, layer_of_entry, value_of_entry)
    ]
    segmentation = {
        "voxels": voxels_ijk,
        "ijkToLPS": file_to_lps,
        "encoding": "gzip",
        "masterRepresentation": LABELMAP,
        "containedRepresentationNames": [LABELMAP],
        "referenceImageExtentOffset": list(offset),
        # Written as the raw header field: Slicer drops the last parameter unless it ends with '&', which slicerio's
        # own serialisation of "conversionParameters" leaves out.
        "Segmentation_ConversionParameters": (
            f"{REFERENCE_GEOMETRY}|{_serialize_image_geometry(geometry, reference_shape)}|"
            f"{REFERENCE_GEOMETRY_DESCRIPTION}&"
        ),
        "segments": seg_entries,
    }
    with atomic_path(path) as temp:
        slicerio.write_segmentation(str(temp), segmentation, compression_level=COMPRESSION_LEVEL)


def read_segmentation(path):
    """Read a .seg.nrrd (ours or Slicer's) into KJI arrays, the reference geometry (LPS) and segment metadata."""
    import slicerio
    from slicerio.segmentation import terminology_entry_to_string

    try:
        segmentation = slicerio.read_segmentation(str(path))
    except FileNotFoundError:
        raise
    except (OSError, ValueError, KeyError) as error:
        raise ValueError(f"{path} is not a readable .seg.nrrd segmentation file: {error}") from error
    voxels = np.asarray(segmentation["voxels"])
    if voxels.ndim == 3:
        layers = voxels.transpose(2, 1, 0)[np.newaxis]
    elif voxels.ndim == 4:
        layers = voxels.transpose(0, 3, 2, 1)
    else:
        raise ValueError(f"{path}: a segmentation must have 3 or 4 dimensions, found {voxels.ndim}.")
    layers = np.ascontiguousarray(layers)

    offset = tuple(int(v) for v in segmentation.get("referenceImageExtentOffset", (0, 0, 0)))
    file_to_lps = np.asarray(segmentation["ijkToLPS"], dtype=float)
    axes = file_to_lps[:3, :3]
    spacing = np.linalg.norm(axes, axis=0)
    geometry = Geometry.create(file_to_lps[:3, 3] - axes @ np.asarray(offset, dtype=float), spacing, axes / spacing)

    segments = []
    for entry in segmentation.get("segments", []):
        terminology = entry.get("terminology")
        segments.append(
            {
                "id": entry["id"],
                "name": entry.get("name", entry["id"]),
                "color": [float(c) for c in entry.get("color", (0.5, 0.5, 0.5))],
                "value": int(entry.get("labelValue", 1)),
                "layer": int(entry.get("layer", 0)),
                "terminology": terminology_entry_to_string(terminology) if terminology else None,
            }
        )
    return SegmentationFile(
        labels=layers[0],
        layers=layers,
        geometry=geometry,
        offset=offset,
        segments=segments,
        reference_shape=_reference_shape_from(segmentation.get("conversionParameters", [])),
    )


# --- checks: every message says what was wrong and what to do -------------------------------------------------------


def _checked_labels(labels):
    labels = np.asarray(labels)
    if labels.dtype == bool:
        labels = labels.astype(np.uint8)
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"The label map must hold integers, got {labels.dtype}; round and cast it first.")
    if labels.ndim != 3 or 0 in labels.shape:
        raise ValueError(f"The label map must be a non-empty 3-D KJI array, got shape {labels.shape}.")
    if labels.size and labels.min() < 0:
        raise ValueError("The label map has negative values; label values must be 0 (background) or positive.")
    return labels


def _checked_offset(offset):
    offset = tuple(offset)
    if len(offset) != 3 or not all(isinstance(v, (int, np.integer)) for v in offset) or min(offset) < 0:
        raise ValueError(f"offset must be 3 non-negative integer IJK indices, got {offset!r}.")
    return tuple(int(v) for v in offset)


def _checked_reference_shape(reference_shape, labels_shape, offset):
    shape = tuple(reference_shape)
    if len(shape) != 3 or not all(isinstance(v, (int, np.integer)) and v > 0 for v in shape):
        raise ValueError(f"reference_shape must be 3 positive integers (K, J, I), got {reference_shape!r}.")
    end = tuple(o + n for o, n in zip(offset[::-1], labels_shape))
    if any(e > s for e, s in zip(end, shape)):
        raise ValueError(
            f"The label map (KJI shape {tuple(labels_shape)}) at IJK offset {offset} reaches KJI {end}, beyond the "
            f"reference image of KJI shape {shape}; crop the mask or fix the offset."
        )
    return tuple(int(v) for v in shape)


def _checked_name(name, what):
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{what} needs a non-empty 'name' string, got {name!r}.")
    if not name.isascii() or any(c in name for c in "\r\n"):
        raise ValueError(f"{what} name {name!r} must be one line of ASCII text (NRRD headers are ASCII).")
    return name


def _checked_color(color, what):
    try:
        color = [float(c) for c in color]
    except (TypeError, ValueError):
        color = None
    if color is None or len(color) != 3 or not all(0.0 <= c <= 1.0 for c in color):
        raise ValueError(f"{what} needs 'color' = [r, g, b] with each value in 0..1.")
    return color


def _checked_terminology(terminology, what):
    if terminology is None:
        return None
    if not isinstance(terminology, str) or len(terminology.split("~")) != 7 or any(c in terminology for c in "|\r\n"):
        raise ValueError(
            f"{what}: 'terminology' must be a Slicer TerminologyEntry string of 7 '~'-separated parts "
            f"(context~category~type~modifier~anatomic context~region~region modifier) without '|', or None; "
            f"got {terminology!r}."
        )
    if not terminology.isascii():
        raise ValueError(f"{what}: 'terminology' must be ASCII text (NRRD headers are ASCII).")
    return terminology


def _checked_segment(entry, index):
    what = f"Segment {index} ({entry.get('name', '?')!r})" if isinstance(entry, dict) else f"Segment {index}"
    if not isinstance(entry, dict):
        raise ValueError(f"{what} must be a dict with 'value', 'name', 'color', 'terminology'.")
    value = entry.get("value")
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or not 0 < value <= MAX_LABEL_VALUE:
        raise ValueError(f"{what} needs an integer 'value' in 1..{MAX_LABEL_VALUE}, got {value!r}.")
    return {
        "value": int(value),
        "name": _checked_name(entry.get("name"), what),
        "color": _checked_color(entry.get("color"), what),
        "terminology": _checked_terminology(entry.get("terminology"), what),
    }


def _checked_region(entry, index, segments):
    what = f"Region {index} ({entry.get('name', '?')!r})" if isinstance(entry, dict) else f"Region {index}"
    if not isinstance(entry, dict):
        raise ValueError(f"{what} must be a dict with 'name', 'color', 'terminology', 'labels'.")
    known = {segment["value"] for segment in segments}
    values = entry.get("labels")
    if not values or not all(isinstance(v, (int, np.integer)) and int(v) in known for v in values):
        raise ValueError(f"{what}: 'labels' must list segment values among {sorted(known)}, got {values!r}.")
    return {
        "name": _checked_name(entry.get("name"), what),
        "color": _checked_color(entry.get("color"), what),
        "terminology": _checked_terminology(entry.get("terminology"), what),
        "labels": sorted({int(v) for v in values}),
    }


def _check_unique(what, values):
    duplicates = sorted({v for v in values if values.count(v) > 1})
    if duplicates:
        raise ValueError(f"Each {what} must be unique; repeated: {duplicates}.")


def _check_every_label_has_a_segment(labels, segments):
    values = {segment["value"] for segment in segments}
    largest = int(labels.max()) if labels.size else 0
    if largest <= len(values) and values.issuperset(range(1, largest + 1)):
        return   # every value up to the largest present has a segment: nothing to count (0.4 s on a CT)
    if labels.dtype.kind == "u" and labels.dtype.itemsize <= 2:
        present = {int(v) for v in np.flatnonzero(np.bincount(labels.reshape(-1)))} - {0}  # much faster than unique
    else:
        present = {int(v) for v in np.unique(labels)} - {0}
    missing = sorted(present - values)
    if missing:
        raise ValueError(
            f"Label values {missing} occur in the label map but have no entry in `segments`; "
            f"describe them (value, name, color) or set those voxels to 0."
        )


# --- header pieces ---------------------------------------------------------------------------------------------------


def _segment_ids(names):
    """Stable, readable IDs from names ('Whole tumor' -> 'Whole_tumor'), unique within the file."""
    ids = []
    for index, name in enumerate(names):
        base = re.sub(r"[^0-9A-Za-z_.-]+", "_", name).strip("_") or f"Segment_{index + 1}"
        candidate, number = base, 2
        while candidate in ids:
            candidate, number = f"{base}_{number}", number + 1
        ids.append(candidate)
    return ids


def _slicerio_segment(entry, segment_id, layer, value):
    tags = {TERMINOLOGY_TAG: entry["terminology"]} if entry["terminology"] else {}
    return {
        "id": segment_id,
        "name": entry["name"],
        "color": entry["color"],
        "colorAutoGenerated": False,
        "nameAutoGenerated": False,
        "labelValue": value,
        "layer": layer,
        "tags": tags,
    }


def _serialize_image_geometry(geometry, reference_shape):
    """Slicer's image geometry string: IJK→RAS matrix row-major, then the extent ``0;I-1;0;J-1;0;K-1``."""
    matrix = geometry.ijk_to_ras().reshape(-1)
    k, j, i = reference_shape
    extent = (0, i - 1, 0, j - 1, 0, k - 1)
    return "".join(f"{float(v):.17g};" for v in matrix) + "".join(f"{v};" for v in extent)


def _reference_shape_from(conversion_parameters):
    for parameter in conversion_parameters:
        if parameter.get("name") == REFERENCE_GEOMETRY:
            numbers = [v for v in parameter.get("value", "").split(";") if v.strip()]
            if len(numbers) == 22:
                i0, i1, j0, j1, k0, k1 = (int(float(v)) for v in numbers[16:])
                return (k1 - k0 + 1, j1 - j0 + 1, i1 - i0 + 1)
    return None
