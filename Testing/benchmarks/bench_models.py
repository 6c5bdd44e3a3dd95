"""Inputs for the benchmarks: a CT-like volume and random-weight model packages (shared with the tests)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parents[1] / "python"))
from model_packages import segmentation_package  # noqa: E402


def write_synthetic_ct(path, size_ijk, spacing=(0.8, 0.8, 1.5), seed=0):
    """Write an int16 image: air, an elliptic body (soft tissue ~40 HU with noise) and a few denser blobs.
    Built slice by slice so that making it costs little memory."""
    import SimpleITK as sitk

    ni, nj, nk = size_ijk
    rng = np.random.default_rng(seed)
    volume = np.full((nk, nj, ni), -1000, dtype=np.int16)
    j, i = np.mgrid[:nj, :ni]
    body = ((i - ni / 2) / (0.42 * ni)) ** 2 + ((j - nj / 2) / (0.32 * nj)) ** 2 <= 1
    blobs = [((0.35 * ni, 0.45 * nj, 0.5 * nk), 0.12 * ni, 60), ((0.65 * ni, 0.5 * nj, 0.45 * nk), 0.06 * ni, 45),
             ((0.5 * ni, 0.7 * nj, 0.5 * nk), 0.04 * ni, 400)]
    for k in range(nk):
        plane = np.where(body, 40, -1000).astype(np.float32)
        for (ci, cj, ck), radius, hu in blobs:
            r2 = ((i - ci) ** 2 + (j - cj) ** 2 + ((k - ck) * spacing[2] / spacing[0]) ** 2) / radius ** 2
            plane[r2 <= 1] = hu
        plane += rng.normal(0, 12, plane.shape).astype(np.float32)
        volume[k] = np.clip(plane, -1024, 3071)
    image = sitk.GetImageFromArray(volume)
    image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path), True)


def write_random_segmentation_package(folder, classes=16, channels=8, spacing=None, patch=(128, 128, 128)):
    normalization = {"scheme": "ct", "clip": [-1000.0, 1000.0], "mean": 40.0, "std": 300.0}
    return segmentation_package(folder, classes=classes, channels=channels, patch=patch, spacing=spacing,
                                normalization=normalization, model_id="bench-seg")


def click_inputs(folder, size_ijk, classes, channels, patch):
    """A synthetic CT (read back as a Volume) and a random segmentation package in ``folder/models/bench-seg``,
    the inputs of the click benchmarks."""
    from nnmamba.imaging import read_image

    folder = Path(folder)
    write_synthetic_ct(folder / "ct.nrrd", size_ijk)
    package = write_random_segmentation_package(folder / "models" / "bench-seg", classes, channels,
                                                patch=(patch,) * 3)
    return package, read_image(folder / "ct.nrrd")
