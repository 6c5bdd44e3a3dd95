"""Uploaded volumes, kept between requests so that several jobs and clicks reuse one upload.

A session lives while it is used: each access restarts its idle timer, and a queued or running job holds it.
Expiry is checked on every access (an expired session is gone even if no sweep ran yet) and by a periodic sweep that
frees the memory of sessions nobody asks about any more.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass
from typing import Optional

from .errors import ServiceError


@dataclass
class Session:
    id: str
    volume: object              # nnmamba.imaging.Volume (float32 (C, K, J, I) + Geometry)
    name: Optional[str]
    last_used: float            # monotonic clock
    holds: int = 0              # jobs queued or running on it

    @property
    def shape(self):
        return [int(n) for n in self.volume.array.shape]

    @property
    def nbytes(self):
        return int(self.volume.array.nbytes)


class SessionStore:
    def __init__(self, ttl, on_remove=None, clock=time.monotonic):
        self.ttl = float(ttl)
        self._sessions = {}
        self._lock = threading.Lock()
        self._on_remove = on_remove or (lambda session_id: None)
        self._clock = clock

    def add(self, volume, name=None):
        session = Session(uuid.uuid4().hex, volume, name, self._clock())
        with self._lock:
            self._sessions[session.id] = session
        return session

    def _expired(self, session, now):
        return session.holds == 0 and now - session.last_used > self.ttl

    def get(self, session_id, touch=True):
        """The session, its idle timer restarted; 404 when unknown or expired."""
        now = self._clock()
        with self._lock:
            session = self._sessions.get(session_id)
            if session is not None and self._expired(session, now):
                del self._sessions[session_id]
                expired, session = session, None
            else:
                expired = None
            if session is not None and touch:
                session.last_used = now
        if expired is not None:
            self._on_remove(expired.id)
        if session is None:
            raise ServiceError(404, f"No session {session_id!r}: it expired (sessions end after {self.ttl:g} s "
                                    "unused) or never existed. Upload the volume again (POST /sessions).")
        return session

    def expires_in(self, session):
        if session.holds:
            return self.ttl
        return max(round(self.ttl - (self._clock() - session.last_used), 1), 0.0)

    def delete(self, session_id):
        with self._lock:
            session = self._sessions.pop(session_id, None)
        if session is None:
            raise ServiceError(404, f"No session {session_id!r} (already deleted or expired).")
        self._on_remove(session_id)

    def hold(self, session):
        with self._lock:
            session.holds += 1

    def release(self, session):
        with self._lock:
            session.holds = max(session.holds - 1, 0)
            session.last_used = self._clock()

    def sweep(self):
        """Drop expired sessions; returns their ids."""
        now = self._clock()
        with self._lock:
            gone = [sid for sid, session in self._sessions.items() if self._expired(session, now)]
            for sid in gone:
                del self._sessions[sid]
        for sid in gone:
            self._on_remove(sid)
        return gone

    def stats(self):
        with self._lock:
            sessions = list(self._sessions.values())
        return {"sessions": len(sessions), "session_bytes": sum(s.nbytes for s in sessions)}
