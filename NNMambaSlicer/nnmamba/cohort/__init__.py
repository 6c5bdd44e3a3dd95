"""Whole cohorts: one model over many cases, with a manifest that can be stopped, resumed and scaled out.

- :mod:`.cases`: which cases a folder or a CSV list holds (image files, DICOM series folders, multi-channel rows)
  and the hash that tells whether an input changed;
- :mod:`.manifest`: ``results.csv`` and ``results.jsonl``, rewritten atomically as cases finish;
- :mod:`.runner`: one case from input files to the same result files a single ``nnmamba predict`` writes, and the
  measurements people analyse (the model is loaded once);
- :mod:`.engines`: the local engine (the next case is read while the current one runs) and the Ray engine (one
  actor per GPU or per group of CPU cores, on this machine or a cluster).
"""

from .cases import Case, CaseListError, find_cases, input_hash
from .engines import CohortSummary, run_local, run_ray
from .manifest import Manifest
from .runner import CaseRunner

__all__ = ["Case", "CaseListError", "CaseRunner", "CohortSummary", "Manifest", "find_cases", "input_hash",
           "run_local", "run_ray"]
