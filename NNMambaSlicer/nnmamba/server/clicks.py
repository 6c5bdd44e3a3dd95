"""Click-to-segment sessions, one per (volume session, model), kept so that the next click reuses the prepared
volume and the windows already computed. Bounded: each holds a prepared copy of the volume and a window cache."""

from __future__ import annotations

import base64
import threading
from collections import OrderedDict

import numpy as np

from ..geometry import ras_to_lps

MAX_CLICK_SESSIONS = 4
WINDOW_CACHE_BYTES = 256 * 2**20


class ClickCache:
    def __init__(self, limit=MAX_CLICK_SESSIONS):
        self.limit = limit
        self._entries = OrderedDict()   # (session id, package key) -> ClickSession
        self._lock = threading.Lock()

    def get(self, key, create):
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
        click_session = create()
        with self._lock:
            self._entries[key] = click_session
            while len(self._entries) > self.limit:
                self._entries.popitem(last=False)
        return click_session

    def drop_session(self, session_id):
        with self._lock:
            for key in [k for k in self._entries if k[0] == session_id]:
                del self._entries[key]

    def drop_predictor(self, predictor):
        with self._lock:
            for key in [k for k, v in self._entries.items() if v.predictor is predictor]:
                del self._entries[key]


def points_lps(points, coordinates):
    array = np.asarray(points, dtype=float).reshape(-1, 3)
    return ras_to_lps(array) if coordinates == "RAS" else array


def click_answer(result):
    mask = np.ascontiguousarray(result.mask, dtype=np.uint8)
    return {"label": int(result.label), "name": result.name, "offset": [int(v) for v in result.offset],
            "shape": [int(n) for n in mask.shape],
            "mask": base64.b64encode(np.packbits(mask.reshape(-1) != 0).tobytes()).decode("ascii"),
            "network_passes": int(result.network_passes), "seconds": round(float(result.seconds), 4),
            "notes": list(result.notes)}
