"""The demo volumes shipped with the extension, as Slicer sample data sources (category "NNMamba").

They are local files, so the URIs are file:// URLs into the installed Resources; the SHA-256 from checksums.json lets
Slicer's SampleData module check the copy it caches. Kept GUI-free so that the list can be tested without Slicer.
"""

from __future__ import annotations

import json
from pathlib import Path

CATEGORY = "NNMamba"
SAMPLES = ("NNMambaDemoBrainAtrophy", "NNMambaDemoFetalBrain", "NNMambaDemoAbdomenCT")
CHECKSUMS_FILE = "checksums.json"


def sample_data_dir():
    """``Resources/SampleData`` of the source tree or of the installed extension, or None."""
    from nnmamba.modelpkg import bundled_resource_dir

    return bundled_resource_dir("SampleData")


def sample_data_sources(folder=None):
    """Keyword arguments for ``SampleDataLogic.registerCustomSampleDataSource``, one dict per demo volume present."""
    folder = Path(folder) if folder is not None else sample_data_dir()
    if folder is None or not (folder / CHECKSUMS_FILE).is_file():
        return []
    checksums = json.loads((folder / CHECKSUMS_FILE).read_text(encoding="utf-8"))
    sources = []
    for name in SAMPLES:
        file_name = f"{name}.nrrd"
        path = folder / file_name
        if not path.is_file() or file_name not in checksums:
            continue
        sources.append({"category": CATEGORY, "sampleName": name, "uris": path.resolve().as_uri(),
                        "fileNames": file_name, "nodeNames": name, "checksums": f"SHA256:{checksums[file_name]}"})
    return sources


def register_sample_data(thumbnail=None):
    """Register the demo volumes with Slicer's SampleData module (called at startupCompleted)."""
    import SampleData
    import slicer

    known = getattr(slicer.modules, "sampleDataSources", {}).get(CATEGORY, [])
    registered = {getattr(source, "sampleName", None) for source in known}
    for source in sample_data_sources():
        if source["sampleName"] not in registered:   # a self-test registers again after start-up did
            SampleData.SampleDataLogic.registerCustomSampleDataSource(thumbnailFileName=thumbnail, **source)
