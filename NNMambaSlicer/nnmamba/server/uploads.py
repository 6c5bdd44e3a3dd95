"""Turning an upload (raw voxels + geometry header, or an image file) into a checked Volume.

Everything that can be refused from the request line and headers is refused before a byte of the body is read:
an over-large volume is answered at once instead of after gigabytes arrive. The body then goes straight into a
buffer of the declared size (or a temporary file), never into an unbounded one.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from pathlib import Path

import numpy as np

from ..geometry import Geometry
from ..imaging import ImageError, read_image, volume_from_array
from .errors import ServiceError

DTYPES = {"int8": "<i1", "uint8": "<u1", "int16": "<i2", "uint16": "<u2", "int32": "<i4", "uint32": "<u4",
          "float32": "<f4", "float64": "<f8"}
FILE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")
_HEADER_BYTES = 1 << 16


def parse_dtype(text):
    if text not in DTYPES:
        raise ServiceError(422, f"Unknown dtype {text!r}; use one of {', '.join(DTYPES)} (little-endian voxels).")
    return np.dtype(DTYPES[text])


def parse_shape(text, channels=1):
    """``"K,J,I"`` and a channel count -> ``(C, K, J, I)``."""
    parts = [p.strip() for p in str(text).split(",")]
    if len(parts) != 3:
        raise ServiceError(422, f"shape must be three sizes K,J,I (a 3D volume), got {len(parts)} ({text!r}). "
                                "Give more channels with channels=C, not a 4th size; 2D images cannot be used.")
    if not all(re.fullmatch(r"\d{1,12}", p) for p in parts):
        raise ServiceError(422, f"shape must be three positive integers K,J,I, got {text!r}.")
    sizes = [int(p) for p in parts]
    if min(sizes) < 2:
        raise ServiceError(422, f"shape {sizes} (K, J, I) has an axis shorter than 2 voxels: the model needs a 3D "
                                "volume with at least 2 voxels along every axis.")
    if not isinstance(channels, int) or channels < 1:
        raise ServiceError(422, f"channels must be a positive integer, got {channels!r}.")
    return (channels, *sizes)


def check_voxel_limit(shape, max_voxels):
    voxels = math.prod(shape)
    if voxels > max_voxels:
        raise ServiceError(413, f"The volume has {voxels:,} voxels ({' x '.join(map(str, shape))}), more than this "
                                f"server's limit of {max_voxels:,}. Crop or downsample it, or restart the server "
                                "with a larger --max-voxels.")
    return voxels


def check_upload_size(size, max_bytes, what="The upload"):
    if size > max_bytes:
        raise ServiceError(413, f"{what} is {size / 2**20:,.1f} MB, more than this server's limit of "
                                f"{max_bytes / 2**20:,.1f} MB. Crop or downsample the volume, or restart the server "
                                "with a larger --max-upload-mb.")


def content_length(headers):
    """The declared body size, or None when the client streams without one."""
    value = headers.get("content-length")
    if value is None:
        return None
    if not re.fullmatch(r"\s*\d{1,18}\s*", value):
        raise ServiceError(400, f"Content-Length {value!r} is not a byte count.")
    return int(value)


def parse_geometry(text):
    """The ``X-Geometry`` header: ``{"origin": [3], "spacing": [3], "direction": [9]}`` (LPS, ITK order)."""
    example = '{"origin": [0, 0, 0], "spacing": [1, 1, 1], "direction": [1, 0, 0, 0, 1, 0, 0, 0, 1]}'
    if not text:
        raise ServiceError(422, f"The X-Geometry header is missing; send the volume's LPS geometry, e.g. {example}.")
    try:
        data = json.loads(text)
    except ValueError:
        raise ServiceError(422, f"The X-Geometry header is not JSON; send e.g. {example}.") from None
    if not isinstance(data, dict) or set(data) != {"origin", "spacing", "direction"}:
        raise ServiceError(422, f"The X-Geometry header must be an object with exactly origin, spacing and "
                                f"direction, e.g. {example}.")
    values = {}
    for key, count in (("origin", 3), ("spacing", 3), ("direction", 9)):
        value = data[key]
        if (not isinstance(value, list) or len(value) != count
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
            raise ServiceError(422, f"X-Geometry {key} must be a list of {count} numbers, got {value!r:.200}.")
        values[key] = value
    try:
        return Geometry.create(values["origin"], values["spacing"], values["direction"])
    except ValueError as error:
        raise ServiceError(422, f"X-Geometry is not a usable geometry: {error}") from None


def volume_from_bytes(data, shape, dtype, geometry, name="upload"):
    """Raw little-endian C-order voxels ``(C, K, J, I)`` -> a checked float32 Volume."""
    expected = math.prod(shape) * dtype.itemsize
    if len(data) != expected:
        raise ServiceError(422, body_size_problem(len(data), expected, shape, dtype))
    array = np.frombuffer(data, dtype=dtype).reshape(shape)
    try:
        return volume_from_array(array, geometry, name=name)
    except ImageError as error:
        raise ServiceError(422, str(error)) from None


def body_size_problem(received, expected, shape, dtype):
    how = "truncated" if received < expected else "too long"
    return (f"The body has {received:,} bytes but shape {list(shape)} (C, K, J, I) of {dtype.name} needs "
            f"{expected:,}: the upload is {how}. Send every voxel, little-endian, in C order.")


async def receive_into_buffer(chunks, expected):
    """Exactly ``expected`` bytes from an async iterator of chunks, into one preallocated buffer."""
    buffer = bytearray(expected)
    view, received = memoryview(buffer), 0
    async for chunk in chunks:
        end = received + len(chunk)
        if end > expected:
            raise ServiceError(422, f"The body is longer than the {expected:,} bytes its shape and dtype declare. "
                                    "Check shape, channels and dtype.")
        view[received:end] = chunk
        received = end
    if received != expected:
        raise ServiceError(422, f"The body ended after {received:,} of {expected:,} bytes: the upload is truncated. "
                                "Send every voxel.")
    return buffer


async def receive_into_file(chunks, handle, max_bytes):
    received = 0
    async for chunk in chunks:
        received += len(chunk)
        check_upload_size(received, max_bytes)
        handle.write(chunk)
    if received == 0:
        raise ServiceError(422, "The upload is empty; send the image file's bytes as the body.")
    return received


def file_suffix(filename):
    lowered = (filename or "").lower()
    for suffix in FILE_SUFFIXES:
        if lowered.endswith(suffix) and len(lowered) > len(suffix):
            return suffix
    raise ServiceError(422, f"Cannot tell the image format from filename {filename!r}; name a .nii.gz, .nii, .nrrd "
                            "or .mha file (DICOM: convert it to one of those, or send raw voxels to POST /sessions).")


def temporary_upload(suffix):
    """A temporary file to receive an upload in: (open binary handle, path)."""
    handle, path = tempfile.mkstemp(prefix="nnmamba-upload-", suffix=suffix)
    return os.fdopen(handle, "wb"), Path(path)


def _check_self_contained(path, suffix):
    """Refuse headers that point at other files (NRRD 'data file', MetaImage ElementDataFile): they would make the
    server read files on its own disk."""
    if suffix not in (".nrrd", ".mha"):
        return
    with open(path, "rb") as handle:
        head = handle.read(_HEADER_BYTES).split(b"\n\n" if suffix == ".nrrd" else b"ElementDataFile", 1)
    if suffix == ".nrrd":
        lines = head[0].decode("latin-1").lower().splitlines()
        if any(re.match(r"\s*data\s*file\s*:", line) for line in lines):
            raise ServiceError(422, "The NRRD header names a separate data file; upload a self-contained .nrrd "
                                    "(voxels in the same file).")
    elif len(head) == 2:
        value = head[1].split(b"\n", 1)[0].strip(b" =\r\t").decode("latin-1")
        if value.upper() != "LOCAL":
            raise ServiceError(422, "The MetaImage header names a separate data file; upload a self-contained .mha "
                                    "(ElementDataFile = LOCAL).")


def read_volume_file(path, suffix, max_voxels, name):
    """A checked Volume from an uploaded image file; the voxel limit is checked from the header first."""
    import SimpleITK as sitk

    _check_self_contained(path, suffix)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        raise ServiceError(422, f"{name!r} could not be read as a {suffix} image: the file is damaged or not of "
                                "that format.") from None
    size = [int(n) for n in reader.GetSize()]
    check_voxel_limit([*size, max(int(reader.GetNumberOfComponents()), 1)], max_voxels)
    try:
        return read_image(path, name=name)
    except ImageError as error:
        raise ServiceError(422, str(error).replace(str(path), repr(name))) from None
