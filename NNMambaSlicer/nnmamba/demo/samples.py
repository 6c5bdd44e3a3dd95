"""The three sample volumes of the demo (one per task): plain NRRD files in ``Resources/SampleData`` with their
sha256 in ``checksums.json``, so that Slicer can register them as sample data and anyone can check them.

Each sample is a phantom with a fixed seed outside every training, validation and test range, stored as int16
(Hounsfield units for CT, scanner-like units for MR). Its ground truth is the same phantom, regenerated from the
seed, so the demo can score the predictions without shipping label files.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable, NamedTuple, Optional

import numpy as np

from .phantoms import Phantom, abdomen_ct, brain_atrophy, fetal_brain
from .recipes import CT_PHANTOM_SIZE

CHECKSUMS_FILE = "checksums.json"


class Sample(NamedTuple):
    name: str            # Slicer sample-data name and file stem
    task: str
    model_id: str        # the demo model that runs on it
    make: Callable[[int], Phantom]
    seed: int

    @property
    def filename(self):
        return f"{self.name}.nrrd"


SAMPLES = (
    Sample("NNMambaDemoAbdomenCT", "segmentation", "demo-abdomen-ct",
           lambda seed: abdomen_ct(seed, size=CT_PHANTOM_SIZE), 9001),
    Sample("NNMambaDemoFetalBrain", "landmarks", "demo-fetal-landmarks", fetal_brain, 9002),
    Sample("NNMambaDemoBrainAtrophy", "classification", "demo-brain-atrophy",
           lambda seed: brain_atrophy(seed, atrophy=1), 9003),
)


class SampleDataError(ValueError):
    """A sample file that is missing or not the one published (its checksum differs)."""


def sample_phantom(sample: Sample) -> Phantom:
    """The sample's phantom with its image rounded to int16, exactly the voxels stored in the NRRD file."""
    phantom = sample.make(sample.seed)
    image = np.clip(np.round(phantom.image), -32768, 32767).astype(np.int16)
    return phantom._replace(image=image)


def sample_data_dir() -> Optional[Path]:
    from ..modelpkg import bundled_resource_dir

    return bundled_resource_dir("SampleData")


def sha256_of(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def write_samples(folder) -> dict:
    """Write the three sample NRRD files and ``checksums.json`` into ``folder``; returns {file name: sha256}."""
    from ..formats.atomic import write_json
    from ..imaging import write_image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    checksums = {}
    for sample in SAMPLES:
        phantom = sample_phantom(sample)
        path = write_image(folder / sample.filename, phantom.image, phantom.geometry)
        checksums[sample.filename] = sha256_of(path)
    write_json(folder / CHECKSUMS_FILE, checksums)
    return checksums


def sample_file(sample: Sample, folder=None) -> Optional[Path]:
    """The sample's NRRD in ``folder`` (default: the bundled SampleData), checked against ``checksums.json``;
    None when there is no such file (the caller then generates the phantom)."""
    folder = Path(folder) if folder is not None else sample_data_dir()
    if folder is None or not (folder / sample.filename).is_file():
        return None
    path = folder / sample.filename
    try:
        expected = json.loads((folder / CHECKSUMS_FILE).read_text(encoding="utf-8"))[sample.filename]
    except (OSError, ValueError, KeyError) as error:
        raise SampleDataError(f"{folder / CHECKSUMS_FILE} does not list {sample.filename} ({error}); restore the "
                              "file from the release, or rebuild the folder with write_samples().") from None
    actual = sha256_of(path)
    if actual != expected:
        raise SampleDataError(f"{path} has sha256 {actual[:12]}..., not the published {expected[:12]}...: the file "
                              "was changed. Restore it from the release, or rebuild the folder with write_samples().")
    return path
