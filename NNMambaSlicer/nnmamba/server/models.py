"""Model packages the server offers, found by id only.

Never by path: ``resolve_model`` also opens paths, which would let a client make the server open any folder on its
disk (or pick up a folder in the working directory that happens to carry a model's id).
"""

from __future__ import annotations

import re
from pathlib import Path

from ..modelpkg import bundled_models_dir, find_packages, models_dirs
from .errors import ServiceError

MODEL_ID = re.compile(r"[a-z0-9][a-z0-9._-]{0,127}")


def _version_key(version):
    return tuple(int(part) for part in re.findall(r"\d+", str(version).split("-")[0].split("+")[0]))


class ModelIndex:
    """``models_dir`` replaces the user models folder (like $NNMAMBA_MODELS_DIR); bundled models stay available."""

    def __init__(self, models_dir=None):
        self.models_dir = Path(models_dir) if models_dir is not None else None

    def folders(self):
        if self.models_dir is None:
            return [folder for _, folder in models_dirs()]
        folders = [self.models_dir]
        bundled = bundled_models_dir()
        if bundled is not None and bundled.resolve() != self.models_dir.resolve():
            folders.append(bundled)
        return folders

    def packages(self):
        """Every valid package, user folder first; invalid ones are skipped (``nnmamba models list`` shows why)."""
        found = []
        for folder in self.folders():
            found += find_packages(folder)
        return found

    def find(self, model_id):
        """The package with that id (highest version; the user folder wins a tie); 404 when there is none."""
        if not isinstance(model_id, str) or not MODEL_ID.fullmatch(model_id):
            raise ServiceError(404, f"No model {str(model_id)[:80]!r}: model ids are lowercase letters, digits and "
                                    "._- (GET /models lists the installed ones).")
        packages = self.packages()
        matches = [(index, p) for index, p in enumerate(packages) if p.id == model_id]
        if not matches:
            installed = sorted({p.id for p in packages})
            raise ServiceError(404, f"No model {model_id!r} on this server (installed: "
                                    f"{', '.join(installed) if installed else 'none'}). Import it with "
                                    "`nnmamba models import` on the server machine.")
        return max(matches, key=lambda item: (_version_key(item[1].version), -item[0]))[1]

    def summaries(self):
        """One row per package. ``where`` is ``bundled/<folder>`` or ``models/<folder>``: never a path on the server's
        disk (it would tell clients the install location and the user's home)."""
        bundled = bundled_models_dir()
        bundled = bundled.resolve() if bundled is not None else None

        def where(package):
            root = Path(package.root).resolve()
            kind = "bundled" if bundled is not None and (root == bundled or bundled in root.parents) else "models"
            return f"{kind}/{root.name}"

        return [{"id": p.id, "name": p.name, "version": p.version, "task": p.task,
                 "inputs": [channel["name"] for channel in p.input["channels"]], "where": where(p)}
                for p in self.packages()]
