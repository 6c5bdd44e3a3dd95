"""The server's own temporary folder: partial uploads and result files live there, and nowhere else.

Each server makes ``<temp>/nnmamba-server-<user>/<pid>-<random>/`` and holds a lock on a file in it for as long as
it runs (``flock``, released by the kernel even after ``kill -9``). At start-up a server removes the folders of
servers that no longer hold their lock, so a crash never leaves partial uploads behind for good; at a normal stop
it removes its own.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import stat
import tempfile
import time
from pathlib import Path

log = logging.getLogger("nnmamba.server")

LOCK_NAME = "lock"
_GRACE = 60.0   # a folder without a lock file younger than this may be a server still starting


def _user_tag():
    if hasattr(os, "getuid"):
        return str(os.getuid())
    try:
        import getpass

        name = getpass.getuser()
    except Exception:  # no user name at all: still one shared parent, still private folders below it
        name = "user"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:40] or "user"


def _private_base(root):
    """``<root>/nnmamba-server-<user>``, made 0700; None when it exists but is not ours alone (a symlink, another
    user's folder): then the caller uses a fresh private folder and sweeps nothing."""
    base = Path(root) / f"nnmamba-server-{_user_tag()}"
    with contextlib.suppress(FileExistsError):
        base.mkdir(mode=0o700)
    try:
        info = os.lstat(base)
    except OSError:
        return None
    if not stat.S_ISDIR(info.st_mode):
        return None
    if hasattr(os, "getuid"):
        if info.st_uid != os.getuid():
            return None
        if stat.S_IMODE(info.st_mode) & 0o077:
            os.chmod(base, 0o700)
    return base


def _try_lock(path):
    """An open descriptor holding an exclusive lock on ``path``, or None when another process holds it."""
    descriptor = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        if os.name == "nt":
            import msvcrt

            msvcrt.locking(descriptor, msvcrt.LK_NBLCK, 1)
        else:
            import fcntl

            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(descriptor)
        return None
    return descriptor


class ScratchFolder:
    def __init__(self, root=None):
        root = Path(root) if root is not None else Path(tempfile.gettempdir())
        root.mkdir(parents=True, exist_ok=True)
        base = _private_base(root)
        self.swept = self._sweep(base) if base is not None else []
        if base is None:
            base = Path(tempfile.mkdtemp(prefix="nnmamba-server-", dir=root))
        self.path = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=base))
        self._lock = _try_lock(self.path / LOCK_NAME)

    @staticmethod
    def _sweep(base):
        """Remove the folders of servers that are gone; returns them."""
        swept = []
        for folder in base.iterdir():
            if not folder.is_dir() or folder.is_symlink():
                continue
            lock = folder / LOCK_NAME
            if lock.exists():
                descriptor = _try_lock(lock)
                if descriptor is None:
                    continue          # a running server's folder
                os.close(descriptor)
            else:
                with contextlib.suppress(OSError):
                    if time.time() - folder.stat().st_mtime < _GRACE:
                        continue
            shutil.rmtree(folder, ignore_errors=True)
            swept.append(folder)
        if swept:
            log.info("Removed %d temporary folder(s) left by server(s) that ended without cleaning up.", len(swept))
        return swept

    def cleanup(self):
        if self._lock is not None:
            with contextlib.suppress(OSError):
                os.close(self._lock)
            self._lock = None
        shutil.rmtree(self.path, ignore_errors=True)
