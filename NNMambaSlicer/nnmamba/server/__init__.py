"""``nnmamba serve``: the backend as an HTTP service (API v1), so that Slicer on a laptop can use a GPU elsewhere,
and several users can share one loaded model.

Needs FastAPI and uvicorn (``pip install -e '.[server]'`` in the checkout); they are imported only by :mod:`.app` and
:mod:`.main`, so the settings here import without them. Entry points: ``create_app(settings)``
(:mod:`nnmamba.server.app`), ``serve(args)`` and ``BackgroundServer(settings)`` (:mod:`nnmamba.server.main`).
"""

from ..api import API_VERSION
from .settings import ServerSettings, resolve_token

__all__ = ["API_VERSION", "ServerSettings", "resolve_token"]
