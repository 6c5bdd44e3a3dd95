"""Reading, checking and writing the images a model runs on, as float32 channel arrays with their exact geometry.

Everything downstream (reorientation, resampling, sliding window, writing results back) relies on two facts checked
here once: the voxels are finite 3D data with at least two voxels along each axis, and ``Volume.geometry`` says where
each voxel lies in LPS millimetres. Arrays are ``(C, K, J, I)``: channels first, then exactly
``sitk.GetArrayFromImage``'s order. The model-specific steps live next door: ``orientation.py`` (exact axis
permutation/flip), ``resampling.py`` (network grid and the way back), ``normalization.py`` (intensities).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple, Optional, Sequence

import numpy as np
import SimpleITK as sitk

from .geometry import Geometry

FORMATS_HELP = "a .nii/.nii.gz, .nrrd/.nhdr or .mha/.mhd file, or a folder holding one DICOM series"

class ImageError(ValueError):
    """An input image that cannot be used; the message says what is wrong with it and what to do."""


class Volume(NamedTuple):
    """A (multi-channel) 3D image: float32 voxels ``(C, K, J, I)`` and the geometry they lie on."""

    array: np.ndarray
    geometry: Geometry

    @property
    def shape_ijk(self):
        """Grid size in ITK order (I, J, K), like ``GetSize()``."""
        return tuple(int(n) for n in self.array.shape[:0:-1])

    @property
    def num_channels(self):
        return int(self.array.shape[0])


# ---------------------------------------------------------------------------------------------------------- checks


def check_volume(volume: Volume, name: str = "image", expected_channels: Optional[int] = None) -> Volume:
    """Refuse what would make inference silently wrong or crash deep inside: not 3D, empty, a single slice, a wrong
    number of channels, NaN/Inf voxels, or a blank (constant) channel. Returns the volume unchanged."""
    array = volume.array
    if array.ndim != 4:
        raise ImageError(f"The {name} must be a 3D volume with channels (C, K, J, I), got an array of shape "
                         f"{tuple(array.shape)}.")
    if array.size == 0:
        raise ImageError(f"The {name} is empty (size {volume.shape_ijk}, {array.shape[0]} channels): the file holds "
                         f"no voxels. Check that the right file was chosen.")
    if min(volume.shape_ijk) < 2:
        raise ImageError(f"The {name} has size {volume.shape_ijk} (I, J, K): it is 2D or a single slice. The model "
                         f"needs a 3D volume with at least 2 voxels along every axis; load the whole series.")
    if expected_channels is not None and array.shape[0] != expected_channels:
        raise ImageError(f"The {name} has {array.shape[0]} channel(s) but the model expects {expected_channels}. "
                         f"Give one single-channel volume per model input"
                         + (" (a 4D or vector image counts its 4th axis / components as channels)."
                            if array.shape[0] > 1 else "."))
    for channel in range(array.shape[0]):
        values = array[channel]
        finite = np.isfinite(values)
        if not finite.all():
            bad = int(values.size - np.count_nonzero(finite))
            raise ImageError(f"The {name} has {bad} NaN or infinite voxel(s) in channel {channel} (of "
                             f"{values.size}). Fix or mask them (e.g. set them to 0) before running the model.")
        low, high = values.min(), values.max()
        if low == high:
            raise ImageError(f"The {name} is blank: every voxel of channel {channel} equals {float(low):g}. "
                             f"Choose an image that holds data.")
    return volume


def volume_from_array(array, geometry: Geometry, name: str = "image", expected_channels: Optional[int] = None):
    """A checked float32 volume from raw voxels ``(K, J, I)`` or ``(C, K, J, I)`` (the Slicer/server path)."""
    array = np.asarray(array)
    if array.ndim == 3:
        array = array[np.newaxis]
    if array.ndim != 4:
        raise ImageError(f"The {name} voxels must be a 3D array (K, J, I) or channels (C, K, J, I), got shape "
                         f"{tuple(array.shape)}.")
    if not isinstance(geometry, Geometry):
        raise TypeError("geometry must be an nnmamba.geometry.Geometry")
    volume = Volume(np.ascontiguousarray(array, dtype=np.float32), geometry)
    return check_volume(volume, name, expected_channels)


# --------------------------------------------------------------------------------------------------------- reading


def _read_sitk(path: Path):
    if not path.exists():
        raise ImageError(f"Image not found: {path}. Check the path; give {FORMATS_HELP}.")
    try:
        if path.is_dir():
            return _read_dicom_folder(path)
        return sitk.ReadImage(str(path))
    except RuntimeError as error:
        first_line = next((line for line in str(error).splitlines() if line.strip()), "unknown error")
        raise ImageError(f"Could not read {path} as an image ({first_line.strip()[:300]}). Give {FORMATS_HELP}."
                         ) from None


def _read_dicom_folder(folder: Path):
    """One DICOM series, never a guess between several (that would silently pick the wrong scan)."""
    series_ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not series_ids:
        raise ImageError(f"No DICOM series found in the folder {folder}. Give {FORMATS_HELP}.")
    if len(series_ids) > 1:
        listing = "; ".join(f"{sid} ({len(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), sid))} files)"
                            for sid in series_ids)
        raise ImageError(f"The folder {folder} holds {len(series_ids)} DICOM series: {listing}. Put the series to "
                         f"use in a folder of its own (or convert it to .nrrd / .nii.gz) and give that.")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series_ids[0]))
    return reader.Execute()


def _to_volume(image, path) -> Volume:
    """SimpleITK image -> Volume: vector components and a 4th axis become channels; anything else is refused."""
    dimension = image.GetDimension()
    components = image.GetNumberOfComponentsPerPixel()
    size = image.GetSize()
    if dimension == 2:
        raise ImageError(f"{path} is a 2D image (size {size}). The model needs a 3D volume; give the whole series.")
    if dimension not in (3, 4):
        raise ImageError(f"{path} is a {dimension}D image (size {size}); only 3D volumes (or 4D volumes whose 4th "
                         f"axis holds the channels) can be used.")
    if dimension == 4 and components > 1:
        raise ImageError(f"{path} is a 4D image with {components} components per voxel; give 3D volumes.")
    if "complex" in image.GetPixelIDTypeAsString():
        raise ImageError(f"{path} has complex voxels; give a magnitude image.")
    origin = np.asarray(image.GetOrigin(), dtype=float)[:3]
    spacing = np.asarray(image.GetSpacing(), dtype=float)[:3]
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(dimension, dimension)[:3, :3]
    try:
        geometry = Geometry.create(origin, spacing, direction)
    except ValueError as error:
        raise ImageError(f"{path} has an unusable geometry: {error}") from None
    array = sitk.GetArrayViewFromImage(image)
    if components > 1:
        array = np.moveaxis(array, -1, 0)  # (K, J, I, C) -> (C, K, J, I)
    elif dimension == 3:
        array = array[np.newaxis]
    # A 4D image is (T, K, J, I) already: its 4th axis (slowest) becomes the channels. Always a copy: the view
    # dies with the SimpleITK image.
    return Volume(np.array(array, dtype=np.float32, order="C", copy=True), geometry)


def read_image(path, expected_channels: Optional[int] = None, name: Optional[str] = None) -> Volume:
    """Read a NIfTI, NRRD or MetaImage file, or a folder with one DICOM series, as a checked float32 Volume.
    Vector images and the 4th axis of 4D images become channels."""
    path = Path(path)
    volume = _to_volume(_read_sitk(path), path)
    if expected_channels is not None and volume.num_channels != expected_channels and volume.num_channels > 1:
        raise ImageError(f"{path} holds {volume.num_channels} volumes (a 4D or vector image) but the model expects "
                         f"{expected_channels} channel(s). Give "
                         + ("one 3D volume." if expected_channels == 1 else f"{expected_channels} 3D volumes."))
    return check_volume(volume, name or str(path), expected_channels)


def _grid_difference(a: Geometry, size_a, b: Geometry, size_b) -> Optional[str]:
    """What differs between two voxel grids, or None. Tolerances are relative to the voxel size, so that headers
    rounded by different tools still count as the same grid."""
    if tuple(size_a) != tuple(size_b):
        return f"size {tuple(size_a)} vs {tuple(size_b)}"
    if not np.allclose(a.spacing, b.spacing, rtol=1e-3, atol=0):
        return f"spacing {a.spacing.round(6).tolist()} vs {b.spacing.round(6).tolist()} mm"
    shift = float(np.linalg.norm(a.origin - b.origin))
    if shift > 0.1 * float(min(a.spacing.min(), b.spacing.min())):
        return (f"origin {a.origin.round(4).tolist()} vs {b.origin.round(4).tolist()} mm "
                f"({shift:.3g} mm apart, more than a tenth of a voxel)")
    if np.abs(a.direction - b.direction).max() > 1e-3:
        return f"direction {a.direction.round(5).tolist()} vs {b.direction.round(5).tolist()}"
    return None


def read_channels(paths: Sequence, names: Optional[Sequence[str]] = None,
                  expected_channels: Optional[int] = None) -> Volume:
    """Several single-channel files stacked as channels (e.g. BraTS T1/T1ce/T2/FLAIR) on the first file's grid.
    The grids must agree: voxel-wise stacking of misaligned scans would feed the network nonsense."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise ImageError("No input images given.")
    if expected_channels is not None and len(paths) != expected_channels:
        raise ImageError(f"{len(paths)} image(s) given but the model expects {expected_channels} channel(s), one "
                         f"single-channel volume each, in the model's order.")
    names = list(names) if names is not None else [str(p) for p in paths]
    volumes = []
    for path, name in zip(paths, names):
        volume = _to_volume(_read_sitk(path), path)
        if volume.num_channels != 1:
            raise ImageError(f"{path} holds {volume.num_channels} volumes; each input channel must be a single 3D "
                             f"volume.")
        check_volume(volume, name)
        if volumes:
            difference = _grid_difference(volumes[0].geometry, volumes[0].shape_ijk, volume.geometry,
                                          volume.shape_ijk)
            if difference is not None:
                raise ImageError(f"The inputs {paths[0]} and {path} are not on the same voxel grid ({difference}). "
                                 f"Resample (register) them onto one grid first.")
        volumes.append(volume)
    if len(volumes) == 1:
        return volumes[0]
    return Volume(np.concatenate([v.array for v in volumes], axis=0), volumes[0].geometry)


# --------------------------------------------------------------------------------------------------------- writing


def write_image(path, array_kji, geometry: Geometry, compress: bool = True) -> Path:
    """Write voxels ``(K, J, I)`` (or channels ``(C, K, J, I)`` as a vector image) with their geometry. The file
    appears complete or not at all: written to a temporary file in the same folder, then renamed."""
    path = Path(path)
    array = np.asarray(array_kji)
    if array.ndim == 3:
        image = sitk.GetImageFromArray(array)
    elif array.ndim == 4:
        image = sitk.GetImageFromArray(np.moveaxis(array, 0, -1), isVector=True)
    else:
        raise ValueError(f"Can only write 3D arrays (K, J, I) or (C, K, J, I), got shape {array.shape}.")
    geometry.apply_to_sitk(image)
    from .formats.atomic import atomic_path

    with atomic_path(path) as temporary:
        sitk.WriteImage(image, str(temporary), compress)
    return path
