"""What the three modules' self-tests share: a private local backend that works on a fresh Slicer and on the
extensions build server, and never touches the user's own backend.

In testing mode (``Slicer --testing``, the factory's CTest runs) the dependencies are installed without asking, as
Slicer's own AI extensions do in their tests; where that is impossible (no PyTorch extension, no network) the test
skips with one line saying why. The backend is stopped when the test ends, also when it fails.
"""

from __future__ import annotations

import contextlib


@contextlib.contextmanager
def private_backend(test_case, device="cpu"):
    """``with private_backend(self) as backend:`` inside a ScriptedLoadableModuleTest."""
    from .backend import Backend
    from .install import ensure_dependencies, missing_for_local_backend, testing

    if missing_for_local_backend():
        if not testing():
            test_case.skipTest("NNMamba self-test skipped: " + _first_line(missing_for_local_backend()))
        try:
            ensure_dependencies(ask=False)
        except Exception as error:   # declined, no PyTorch extension, no network, pip failed: say it and skip
            test_case.skipTest(f"NNMamba self-test skipped: the dependencies could not be installed ({error}).")
    backend = Backend.local(device=device)
    try:
        yield backend
    finally:
        backend.stop()


def _first_line(missing):
    return (f"a local backend needs {', '.join(missing)}; press 'Install dependencies' in the NNMamba module, or run "
            "Slicer with --testing to install them without asking.")
