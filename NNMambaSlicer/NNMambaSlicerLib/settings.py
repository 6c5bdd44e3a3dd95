"""Machine preferences of the NNMamba modules (qt.QSettings, keys "NNMamba/..."), and starting the shared backend
from them, so that the Segmentation and Landmarks modules start or reach the same backend as the hub.

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


def start_shared_backend_from_settings():
    """For a module that needs a backend and finds none: connect to the remote server the user chose (returns the
    Backend), or start the local one in the background (returns a BackendStarter to poll; its result is shared)."""
    from .backend import Backend, BackendStarter, set_shared_backend

    chosen = read_backend_settings()
    if chosen["mode"] == "remote":
        if not chosen["url"]:
            raise ValueError("The NNMamba backend is set to a remote server but no URL is given: enter it in the "
                             "NNMamba module's Backend section and press Connect.")
        return set_shared_backend(Backend.remote(chosen["url"], chosen["token"], device=chosen["device"]))
    return BackendStarter(share=True, device=chosen["device"], models_dir=chosen["models_dir"])


class BackendRequest:
    """How the Segmentation and Landmarks widgets reach the shared backend before they act: a follow-up runs at once
    when a backend is connected, or when the hub's settings name a remote server (connected here); otherwise a local
    server starts in the background and the widget polls :meth:`finished` from its timer, then runs the follow-up
    that :meth:`take_follow_up` hands back. GUI-free: ``start`` is injectable for tests."""

    def __init__(self, start=None):
        self._start = start or start_shared_backend_from_settings
        self._starter = None
        self._follow_up = None

    @property
    def starting(self):
        return self._starter is not None

    def call(self, follow_up):
        """True when ``follow_up`` ran now; False when it waits for a backend that is starting (a second request
        while one starts is dropped: the first one's follow-up runs)."""
        from .backend import shared_backend

        if self._starter is not None:
            return False
        if shared_backend() is None:
            started = self._start()
            if hasattr(started, "finished"):   # a BackendStarter: the local server is on its way
                self._starter, self._follow_up = started, follow_up
                return False
        follow_up()
        return True

    def finished(self):
        """True once the background start is over (the backend is then the shared one); raises what stopped it."""
        if self._starter is None or not self._starter.finished:
            return False
        starter, self._starter = self._starter, None
        try:
            starter.result()
        except BaseException:
            self._follow_up = None
            raise
        return True

    def take_follow_up(self):
        follow_up, self._follow_up = self._follow_up, None
        return follow_up

    def drop_follow_up(self):
        """Cancel pressed while the server starts: it keeps starting (and is shared), but nothing runs after."""
        self._follow_up = None

    def forget(self):
        """The widget goes away: stop polling; a server still starting becomes the shared one on its own."""
        self._starter, self._follow_up = None, None
