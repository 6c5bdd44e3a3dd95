"""Turning an upload (raw voxels + geometry header, or an image file) into a checked Volume.

Everything that can be refused from the request line and headers is refused before a byte of the body is read:
an over-large volume is answered at once instead of after gigabytes arrive. The body then fills a buffer as it
arrives (never more than its declared size, never allocated ahead of the bytes) or a file in the server's own
temporary folder; an upload that sends nothing for a while is dropped, and the bytes of all uploads in progress
are bounded together.

An image file is read only when its header has been parsed completely, line by line, and names no other file in
any form the readers understand (NRRD ``data file``, MetaImage ``ElementDataFile`` other than ``LOCAL``, a NIfTI
header/image pair): otherwise the server would read files on its own disk into a session. Those files are refused
alike whatever they name (no hint whether a path exists), and no message echoes a voxel value.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import logging
import math
import os
import re
import tempfile
import threading
import zlib
from pathlib import Path

import numpy as np

from ..geometry import Geometry, direction_problem
from ..imaging import ImageError, check_volume, volume_from_array
from .errors import ServiceError

log = logging.getLogger("nnmamba.server")

DTYPES = {"int8": "<i1", "uint8": "<u1", "int16": "<i2", "uint16": "<u2", "int32": "<i4", "uint32": "<u4",
          "float32": "<f4", "float64": "<f8"}
FILE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")
HEADER_LIMIT = 64 * 2**10      # bytes of a NRRD or MetaImage header; a longer one is refused, never half-read
IMAGE_IO = {".nii.gz": "NiftiImageIO", ".nii": "NiftiImageIO", ".nrrd": "NrrdImageIO", ".mha": "MetaImageIO"}
# NRRD field names (lower case, spaces removed) as teem/NrrdIO spells them, except "data file".
NRRD_FIELDS = {"content", "number", "type", "blocksize", "dimension", "space", "spacedimension", "sizes", "spacings",
               "thicknesses", "axismins", "axismaxs", "spacedirections", "centers", "centerings", "kinds", "labels",
               "units", "min", "max", "oldmin", "oldmax", "endian", "encoding", "lineskip", "byteskip",
               "sampleunits", "spaceunits", "spaceorigin", "measurementframe"}
METAIMAGE_LOCAL = ("LOCAL", "Local", "local")   # MetaIO's spellings of "the voxels follow in this file"


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
        geometry = Geometry.create(values["origin"], values["spacing"], values["direction"])
    except ValueError as error:
        raise ServiceError(422, f"X-Geometry is not a usable geometry: {error}") from None
    problem = direction_problem(geometry.direction)
    if problem:
        raise ServiceError(422, f"X-Geometry direction {geometry.direction.reshape(-1).round(6).tolist()} is not a "
                                f"rotation: {problem}. Send the unit direction vectors of the I, J and K axes (ITK's "
                                "direction matrix; the voxel size goes in spacing).")
    return geometry


def volume_from_bytes(data, shape, dtype, geometry, name="upload"):
    """Raw little-endian C-order voxels ``(C, K, J, I)`` -> a checked float32 Volume."""
    expected = math.prod(shape) * dtype.itemsize
    if len(data) != expected:
        raise ServiceError(422, body_size_problem(len(data), expected, shape, dtype))
    array = np.frombuffer(data, dtype=dtype).reshape(shape)
    try:
        return _checked(volume_from_array(_not_blank(array, "uploaded volume"), geometry, name=name), name)
    except ImageError as error:
        raise ServiceError(422, str(error)) from None


def _not_blank(array, name):
    """Refuse a constant channel without saying its value (the value is the user's data, not a diagnosis)."""
    for channel in range(array.shape[0]):
        values = array[channel]
        if values.size and values.min() == values.max() and not np.isnan(values.min()):
            raise ImageError(f"The {name} is blank: every voxel of channel {channel} has the same value. Choose an "
                             "image that holds data.")
    return array


def _checked(volume, name):
    problem = direction_problem(volume.geometry.direction)
    if problem:
        raise ImageError(f"The {name} has a direction matrix that is not a rotation: {problem}. Resample it onto an "
                         "unsheared grid (e.g. with Slicer's Resample Scalar Volume) and upload that.")
    return volume


def body_size_problem(received, expected, shape, dtype):
    how = "truncated" if received < expected else "too long"
    return (f"The body has {received:,} bytes but shape {list(shape)} (C, K, J, I) of {dtype.name} needs "
            f"{expected:,}: the upload is {how}. Send every voxel, little-endian, in C order.")


# ------------------------------------------------------------------------------------------- receiving the body


class ByteBudget:
    """Bytes of the uploads in progress, bounded together: beyond the limit an upload is answered 503 at once,
    before its bytes are taken in."""

    def __init__(self, limit):
        self.limit = int(limit)
        self.used = 0
        self._lock = threading.Lock()

    def take(self, count):
        with self._lock:
            if self.used + count > self.limit:
                busy = self.used
                raise ServiceError(503, f"Uploads of {busy / 2**20:,.1f} MB are in progress and this one needs "
                                        f"{count / 2**20:,.1f} MB more than the {self.limit / 2**20:,.1f} MB this "
                                        "server takes in at once; try again when they have finished.",
                                   {"Retry-After": "5"})
            self.used += count

    def give(self, count):
        with self._lock:
            self.used = max(self.used - count, 0)

    @contextlib.contextmanager
    def holding(self, count=0):
        """``with budget.holding(n) as grow:`` n bytes taken now; ``grow(m)`` takes m more; all given back after."""
        taken = [0]

        def grow(more):
            self.take(more)
            taken[0] += more

        grow(count)
        try:
            yield grow
        finally:
            self.give(taken[0])


async def body_chunks(request, idle_timeout):
    """The request body as it arrives. 408 when nothing came for ``idle_timeout`` seconds (a stalled client must
    not hold its buffer and connection for ever); ClientDisconnect when the client went away."""
    from starlette.requests import ClientDisconnect

    receive = request.receive
    while True:
        try:
            message = await asyncio.wait_for(receive(), idle_timeout)
        except asyncio.TimeoutError:
            raise ServiceError(408, f"The upload sent nothing for {idle_timeout:g} s and was dropped. Check the "
                                    "connection and upload again.", {"Connection": "close"}) from None
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        body = message.get("body", b"")
        if body:
            yield body
        if not message.get("more_body", False):
            return


async def receive_into_buffer(chunks, expected):
    """Exactly ``expected`` bytes from an async iterator of chunks. The buffer grows with the bytes that arrived:
    a client that declares gigabytes and sends a few bytes costs a few bytes."""
    buffer, received = bytearray(), 0
    async for chunk in chunks:
        received += len(chunk)
        if received > expected:
            raise ServiceError(422, f"The body is longer than the {expected:,} bytes its shape and dtype declare. "
                                    "Check shape, channels and dtype.")
        buffer += chunk
    if received != expected:
        raise ServiceError(422, f"The body ended after {received:,} of {expected:,} bytes: the upload is truncated. "
                                "Send every voxel.")
    return buffer


async def receive_into_file(chunks, handle, max_bytes, grow=None):
    """The body into ``handle``; ``grow(n)`` (a :meth:`ByteBudget.holding`) is told of every chunk."""
    received = 0
    async for chunk in chunks:
        received += len(chunk)
        check_upload_size(received, max_bytes)
        if grow is not None:
            grow(len(chunk))
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


def temporary_upload(suffix, folder=None):
    """A temporary file to receive an upload in (0600, in the server's own temporary folder): (handle, path)."""
    handle, path = tempfile.mkstemp(prefix="upload-", suffix=suffix, dir=folder)
    return os.fdopen(handle, "wb"), Path(path)


# ---------------------------------------------------------------------------------------- reading an image file


def _damaged(name, suffix, why="the file is damaged or not of that format"):
    return ServiceError(422, f"{name!r} could not be read as a {suffix} image: {why}.")


def _header_lines(head, total_size, what, name, suffix):
    """Yields ``(number, text)`` of each header line (``\n`` ends a line; a CRLF's ``\r`` is dropped) until the
    caller stops; refuses a header that does not end within ``head`` and a stray carriage return, on which the
    readers disagree (teem ends a line there, MetaIO does not)."""
    position, number = 0, 0
    while True:
        end = head.find(b"\n", position)
        if end < 0:
            if total_size > len(head):
                raise ServiceError(422, f"The {what} header of {name!r} is longer than {HEADER_LIMIT // 1024} KiB (or "
                                        "has no end); this server reads only shorter headers. Save the image again "
                                        "without the long comments or metadata.")
            raise _damaged(name, suffix, f"the {what} header does not end (no voxels follow it)")
        line = head[position:end]
        position, number = end + 1, number + 1
        if line.endswith(b"\r"):
            line = line[:-1]
        if b"\r" in line:
            raise _damaged(name, suffix, f"line {number} of the {what} header holds a stray carriage return")
        yield number, line.decode("latin-1")


def _squashed(text):
    return re.sub(r"\s+", "", text).lower()


def _check_nrrd_header(head, total_size, name):
    lines = _header_lines(head, total_size, "NRRD", name, ".nrrd")
    _, magic = next(lines)
    if not re.fullmatch(r"NRRD000[1-9]", magic):
        raise _damaged(name, ".nrrd")
    for number, line in lines:
        if line == "":
            return                          # the blank line: the voxels follow in this file
        if line.startswith("#"):
            continue
        if _squashed(line).startswith("datafile"):
            raise ServiceError(422, "The NRRD header names a separate data file; upload a self-contained .nrrd "
                                    "(voxels in the same file).")
        field, separator, _ = line.partition(": ")
        if separator and _squashed(field) in NRRD_FIELDS:
            continue
        if ":=" in line:
            continue                        # key:=value metadata
        raise _damaged(name, ".nrrd", f"line {number} of the NRRD header is not a known field, a key:=value pair "
                                      "or a # comment")


def _check_metaimage_header(head, total_size, name):
    for number, line in _header_lines(head, total_size, "MetaImage", name, ".mha"):
        if not line.strip():
            continue
        found = re.search(r"[=:]", line)
        key = line[:found.start()].strip() if found else ""
        if not key:
            raise _damaged(name, ".mha", f"line {number} of the MetaImage header is not 'Key = value'")
        if _squashed(key) == "elementdatafile":
            value = line[found.start():].lstrip("=: \t\v\f").rstrip()
            if key == "ElementDataFile" and value in METAIMAGE_LOCAL:
                return                      # the last header line: the voxels follow in this file
            raise ServiceError(422, "The MetaImage header names a separate data file; upload a self-contained .mha "
                                    "(ElementDataFile = LOCAL).")


def _check_nifti_header(path, suffix, name):
    try:
        if suffix == ".nii.gz":
            with gzip.open(path, "rb") as handle:
                head = handle.read(544)
        else:
            with open(path, "rb") as handle:
                head = handle.read(544)
    except (OSError, EOFError, zlib.error):
        raise _damaged(name, suffix) from None
    if len(head) >= 348 and head[344:348] == b"n+1\0":
        return
    if len(head) >= 540 and head[4:8] == b"n+2\0":
        return
    if head[344:348] == b"ni1\0" or head[4:8] == b"ni2\0":
        raise ServiceError(422, "The NIfTI header says its voxels are in a separate .img file (a header/image pair); "
                                "upload a single-file .nii or .nii.gz.")
    raise _damaged(name, suffix, "it is not a single-file NIfTI (.nii)")


def check_self_contained(path, suffix, name="upload"):
    """Refuse an image file whose header names another file, or that cannot be parsed completely."""
    if suffix in (".nii", ".nii.gz"):
        return _check_nifti_header(path, suffix, name)
    with open(path, "rb") as handle:
        head = handle.read(HEADER_LIMIT)
        total = os.fstat(handle.fileno()).st_size
    if suffix == ".nrrd":
        return _check_nrrd_header(head, total, name)
    return _check_metaimage_header(head, total, name)


def read_volume_file(path, suffix, max_voxels, name, reserve=None):
    """``(volume, reservation)``: a checked Volume from an uploaded image file. The header is checked first (no
    other file named, voxel limit, direction); then ``reserve(bytes)`` makes room for the float32 voxels (it raises
    when there is none) before they are read; the reservation is given back if reading fails."""
    import SimpleITK as sitk

    from ..imaging import _to_volume

    check_self_contained(path, suffix, name)
    reader = sitk.ImageFileReader()
    reader.SetImageIO(IMAGE_IO[suffix])       # that format's reader only, whatever the bytes look like
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as error:
        log.info("Upload %r: the %s reader refused its header: %s", name, suffix, str(error).strip()[:500])
        raise _damaged(name, suffix) from None
    size = [int(n) for n in reader.GetSize()]
    components = max(int(reader.GetNumberOfComponents()), 1)
    voxels = check_voxel_limit([*size, components], max_voxels)
    dimension = len(size)
    if dimension in (3, 4):
        direction = np.asarray(reader.GetDirection(), dtype=float).reshape(dimension, dimension)[:3, :3]
        problem = direction_problem(direction)
        if problem:
            raise ServiceError(422, f"The image {name!r} has a direction matrix that is not a rotation: {problem}. "
                                    "Resample it onto an unsheared grid and upload that.")
    reservation = reserve(voxels * 4) if reserve is not None else None
    try:
        try:
            image = reader.Execute()
        except RuntimeError as error:
            log.info("Upload %r: the %s reader failed: %s", name, suffix, str(error).strip()[:500])
            raise _damaged(name, suffix, "the file is damaged or truncated") from None
        try:
            volume = _to_volume(image, name)
            del image
            _not_blank(volume.array, name)
            volume = check_volume(_checked(volume, name), name)
        except ImageError as error:
            raise ServiceError(422, str(error)) from None
    except BaseException:
        if reservation is not None:
            reservation.release()
        raise
    return volume, reservation
