"""Reading, checking and writing images: real NIfTI / NRRD / MetaImage / DICOM files written by SimpleITK, and a
clear ImageError for each kind of bad input."""

import numpy as np
import pytest

from nnmamba.geometry import Geometry
from nnmamba.imaging import (
    ImageError,
    Volume,
    check_volume,
    read_channels,
    read_image,
    volume_from_array,
    write_image,
)

from geometry_cases import rotation

sitk = pytest.importorskip("SimpleITK")




OBLIQUE = Geometry.create((-12.5, 30.25, 7.0), (0.7, 1.3, 3.5), rotation(0.3, -0.2, 0.9))


def ramp(shape_kji=(5, 6, 7), dtype=np.int16):
    return np.arange(np.prod(shape_kji)).reshape(shape_kji).astype(dtype)


def sitk_image(array, geometry=OBLIQUE, is_vector=False):
    return geometry.apply_to_sitk(sitk.GetImageFromArray(array, isVector=is_vector))


def assert_geometry_close(a, b, atol=1e-5):
    for x, y in zip(a, b):
        assert np.allclose(x, y, atol=atol), (x, y)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd"])
def test_formats_keep_voxels_and_oblique_geometry(tmp_path, suffix):
    array = ramp()
    path = tmp_path / f"image{suffix}"
    sitk.WriteImage(sitk_image(array), str(path))
    volume = read_image(path)
    assert volume.array.dtype == np.float32 and volume.array.shape == (1, 5, 6, 7)
    assert volume.shape_ijk == (7, 6, 5)
    assert np.array_equal(volume.array[0], array)
    assert_geometry_close(volume.geometry, OBLIQUE)  # NIfTI stores single precision


def test_vector_image_components_become_channels(tmp_path):
    array = np.stack([ramp(), -ramp(), ramp() * 2], axis=-1)  # (K, J, I, C)
    path = tmp_path / "vector.nrrd"
    sitk.WriteImage(sitk_image(array, is_vector=True), str(path))
    volume = read_image(path, expected_channels=3)
    assert volume.array.shape == (3, 5, 6, 7)
    assert np.array_equal(volume.array[1], -ramp())


def test_4d_image_axis_becomes_channels_and_is_refused_for_a_single_channel_model(tmp_path):
    images = [sitk_image(ramp() + 100 * c) for c in range(4)]
    path = tmp_path / "brats_msd.nii.gz"
    sitk.WriteImage(sitk.JoinSeries(images), str(path))
    volume = read_image(path, expected_channels=4)
    assert volume.array.shape == (4, 5, 6, 7)
    assert np.array_equal(volume.array[3], ramp() + 300)
    assert_geometry_close(volume.geometry, OBLIQUE)
    with pytest.raises(ImageError, match=r"holds 4 volumes \(a 4D or vector image\).*expects 1"):
        read_image(path, expected_channels=1)


def write_dicom_series(folder, array, geometry, series_uid, description="test series"):
    """One file per slice with the tags GDCM needs to rebuild the volume (position, orientation, series UID)."""
    folder.mkdir(parents=True, exist_ok=True)
    image = sitk_image(array, geometry)
    d = geometry.direction
    orientation = "\\".join(f"{v:.10f}" for v in (d[0, 0], d[1, 0], d[2, 0], d[0, 1], d[1, 1], d[2, 1]))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(array.shape[0]):
        plane = image[:, :, k]
        tags = {
            "0008|0060": "CT", "0008|0008": "DERIVED\\SECONDARY", "0008|103e": description,
            "0020|000d": "1.2.826.0.1.3680043.2.1125.1", "0020|000e": series_uid,
            "0008|0018": f"{series_uid}.{k + 1}", "0020|0013": str(k + 1), "0020|0037": orientation,
            "0020|0032": "\\".join(f"{v:.10f}" for v in image.TransformIndexToPhysicalPoint((0, 0, k))),
            "0018|0050": f"{geometry.spacing[2]:.10f}",
        }
        for tag, value in tags.items():
            plane.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
        writer.Execute(plane)


def test_dicom_series_folder(tmp_path):
    geometry = Geometry.create((-40.0, 12.5, -3.0), (0.8, 0.8, 2.5), rotation(0.1, 0.05, -0.2))
    array = ramp((6, 9, 8))
    write_dicom_series(tmp_path / "ct", array, geometry, "1.2.826.0.1.3680043.2.1125.77")
    volume = read_image(tmp_path / "ct")
    assert np.array_equal(volume.array[0], array)
    assert_geometry_close(volume.geometry, geometry, atol=1e-4)


def test_folder_with_two_dicom_series_is_refused_with_a_listing(tmp_path):
    write_dicom_series(tmp_path / "mixed", ramp((3, 4, 5)), OBLIQUE, "1.2.826.0.1.3680043.2.1125.11")
    write_dicom_series(tmp_path / "mixed" / "sub", ramp((4, 4, 5)), OBLIQUE, "1.2.826.0.1.3680043.2.1125.12")
    for path in (tmp_path / "mixed" / "sub").iterdir():
        path.rename(tmp_path / "mixed" / f"b_{path.name}")
    with pytest.raises(ImageError) as error:
        read_image(tmp_path / "mixed")
    message = str(error.value)
    assert "2 DICOM series" in message
    assert "1.2.826.0.1.3680043.2.1125.11 (3 files)" in message and "1.2.826.0.1.3680043.2.1125.12 (4 files)" in message


def test_folder_without_dicom(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ImageError, match="No DICOM series found"):
        read_image(tmp_path)


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(ImageError, match=r"Image not found: .*nope\.nii\.gz"):
        read_image(tmp_path / "nope.nii.gz")
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"this is not a NIfTI file at all" * 10)
    with pytest.raises(ImageError, match=r"Could not read .*broken\.nii\.gz.*\.nrrd"):
        read_image(broken)


def test_2d_and_single_slice_images_are_refused(tmp_path):
    flat = tmp_path / "flat.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(ramp((6, 7))), str(flat))
    with pytest.raises(ImageError, match="2D image"):
        read_image(flat)
    single = tmp_path / "single.nrrd"
    sitk.WriteImage(sitk_image(ramp((1, 6, 7))), str(single))
    with pytest.raises(ImageError, match=r"size \(7, 6, 1\).*single slice"):
        read_image(single)


def test_nan_inf_constant_and_channel_count_checks(tmp_path):
    array = ramp().astype(np.float32)
    array[0, 0, :3] = np.nan
    array[1, 1, 1] = np.inf
    path = tmp_path / "nan.mha"
    sitk.WriteImage(sitk_image(array), str(path))
    with pytest.raises(ImageError, match="4 NaN or infinite voxel"):
        read_image(path)
    with pytest.raises(ImageError, match="blank: every voxel of channel 0 equals 3"):
        volume_from_array(np.full((4, 5, 6), 3.0), OBLIQUE)
    with pytest.raises(ImageError, match="has 2 channel.*expects 4"):
        volume_from_array(np.stack([ramp(), ramp() + 1]), OBLIQUE, expected_channels=4)
    with pytest.raises(ImageError, match="empty"):
        check_volume(Volume(np.zeros((1, 0, 4, 4), np.float32), OBLIQUE))
    with pytest.raises(ImageError, match="shape"):
        volume_from_array(np.zeros((2, 2)), OBLIQUE)


def test_volume_from_array_is_float32_with_channels():
    volume = volume_from_array(ramp(), OBLIQUE, expected_channels=1)
    assert volume.array.shape == (1, 5, 6, 7) and volume.array.dtype == np.float32
    assert volume.geometry is OBLIQUE


def test_read_channels_stacks_matching_grids(tmp_path):
    paths = []
    for c in range(3):
        path = tmp_path / f"mod{c}.nii.gz"
        sitk.WriteImage(sitk_image(ramp() * (c + 1)), str(path))
        paths.append(path)
    volume = read_channels(paths, expected_channels=3)
    assert volume.array.shape == (3, 5, 6, 7)
    assert np.array_equal(volume.array[2], ramp() * 3)
    with pytest.raises(ImageError, match="3 image.*expects 4"):
        read_channels(paths, expected_channels=4)
    four_d = tmp_path / "4d.nii.gz"
    sitk.WriteImage(sitk.JoinSeries([sitk_image(ramp()), sitk_image(ramp() + 1)]), str(four_d))
    with pytest.raises(ImageError, match="4d.nii.gz holds 2 volumes"):
        read_channels([paths[0], four_d])


@pytest.mark.parametrize("change, expected", [
    (lambda g: (ramp((5, 6, 8)), g), r"size \(7, 6, 5\) vs \(8, 6, 5\)"),
    (lambda g: (ramp(), g._replace(spacing=g.spacing * [1, 1, 1.01])), "spacing"),
    (lambda g: (ramp(), g._replace(origin=g.origin + [0.5, 0, 0])), "origin"),
    (lambda g: (ramp(), g._replace(direction=rotation(0.3, -0.2, 0.95))), "direction"),
])
def test_read_channels_refuses_grid_mismatch_naming_both_files(tmp_path, change, expected):
    first, second = tmp_path / "t1.nrrd", tmp_path / "flair.nrrd"
    sitk.WriteImage(sitk_image(ramp()), str(first))
    array, geometry = change(OBLIQUE)
    sitk.WriteImage(sitk_image(array, geometry), str(second))
    with pytest.raises(ImageError, match=f"t1.nrrd and .*flair.nrrd are not on the same voxel grid.*{expected}"):
        read_channels([first, second])


def test_read_channels_tolerates_header_rounding(tmp_path):
    first, second = tmp_path / "a.nrrd", tmp_path / "b.nrrd"
    sitk.WriteImage(sitk_image(ramp()), str(first))
    sitk.WriteImage(sitk_image(ramp(), OBLIQUE._replace(origin=OBLIQUE.origin + 1e-4)), str(second))
    assert read_channels([first, second]).array.shape[0] == 2


def test_write_image_is_atomic_and_keeps_geometry(tmp_path):
    labels = (ramp() % 3).astype(np.uint8)
    path = write_image(tmp_path / "out" / "labels.nii.gz", labels, OBLIQUE)
    back = sitk.ReadImage(str(path))
    assert back.GetPixelID() == sitk.sitkUInt8
    assert np.array_equal(sitk.GetArrayFromImage(back), labels)
    assert_geometry_close(Geometry.from_sitk(back), OBLIQUE)
    assert sorted(p.name for p in path.parent.iterdir()) == ["labels.nii.gz"]

    heatmaps = np.stack([ramp().astype(np.float32), -ramp().astype(np.float32)])
    path = write_image(tmp_path / "heat.nrrd", heatmaps, OBLIQUE)
    assert read_image(path, expected_channels=2).array.shape == (2, 5, 6, 7)

    target = tmp_path / "kept.xyz"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        write_image(target, labels, OBLIQUE)  # no writer for this extension: the old file must survive intact
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["heat.nrrd", "kept.xyz", "out"]
