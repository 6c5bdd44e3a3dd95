"""Machine preferences of the NNMamba modules (qt.QSettings, keys "NNMamba/..."), and starting the shared backend
from them, so that the three modules start or reach the same backend.

qt is imported inside the functions: this package must import without a GUI.
"""

from __future__ import annotations

PREFIX = "NNMamba/Backend/"
MODELS_FOLDER_KEY = "NNMamba/ModelsFolder"
DEVICES = ("auto", "cpu", "cuda", "mps")


def _as_bool(value):
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def read_backend_settings():
    """``{"mode": "local"|"remote", "url", "token", "remember_token", "device", "models_dir"}``."""
    import qt

    settings = qt.QSettings()
    mode = str(settings.value(PREFIX + "Mode", "local") or "local")
    device = str(settings.value(PREFIX + "Device", "auto") or "auto")
    remember = _as_bool(settings.value(PREFIX + "RememberToken", "false"))
    return {"mode": mode if mode in ("local", "remote") else "local",
            "url": str(settings.value(PREFIX + "URL", "") or ""),
            "token": str(settings.value(PREFIX + "Token", "") or "") if remember else "",
            "remember_token": remember,
            "device": device if device in DEVICES else "auto",
            "models_dir": str(settings.value(MODELS_FOLDER_KEY, "") or "") or None}


def write_backend_settings(mode, url, token, remember_token, device):
    """Keep the choices for next time; the token only when the user asked for it (it is stored in plain text)."""
    import qt

    settings = qt.QSettings()
    settings.setValue(PREFIX + "Mode", mode)
    settings.setValue(PREFIX + "URL", url)
    settings.setValue(PREFIX + "Device", device)
    settings.setValue(PREFIX + "RememberToken", "true" if remember_token else "false")
    if remember_token:
        settings.setValue(PREFIX + "Token", token)
    else:
        settings.remove(PREFIX + "Token")


def start_shared_backend_from_settings(settings=None, ask=True):
    """For a module that needs a backend and finds none: a BackendStarter (poll it) that connects to the remote
    server the user chose or starts the local one, and shares the result. A start under way is joined, not doubled.
    The packages Slicer's own process needs (the client set) are installed first, with consent; a local backend
    is refused at once, saying what to install, when its packages are missing (nothing is imported to find out)."""
    from .backend import connect_remote_backend, start_local_backend, starting_backend
    from .install import check_local_backend, ensure_client

    running = starting_backend()
    if running is not None:
        return running
    chosen = settings or read_backend_settings()
    if chosen["mode"] == "remote":
        if not chosen["url"]:
            raise ValueError("The NNMamba backend is set to a remote server but no URL is given: enter it in the "
                             "NNMamba module's Backend section and press Connect.")
        ensure_client(ask=ask)
        return connect_remote_backend(chosen["url"], chosen["token"], device=chosen["device"])
    check_local_backend()
    ensure_client(ask=ask)
    return start_local_backend(device=chosen["device"], models_dir=chosen.get("models_dir"))
