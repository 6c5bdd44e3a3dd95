"""Uploaded volumes, kept between requests so that several jobs and clicks reuse one upload.

A session lives while it is used: each access restarts its idle timer, and a queued or running job (or a click)
holds it. Expiry is checked on every access (an expired session is gone even if no sweep ran yet) and by a periodic
sweep that frees the memory of sessions nobody asks about any more.

All sessions together have a memory budget (their float32 voxels). An upload reserves its room before its voxels
are read; when the budget is full, sessions left unused for a while are evicted, least recently used first, and
when that is not enough the upload is refused (507) instead of the server running out of memory.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Optional

from .errors import ServiceError

MB = 2**20
_REMEMBERED = 4096    # ids of evicted sessions remembered, so that their 404 can say why


@dataclass
class Session:
    id: str
    volume: object              # nnmamba.imaging.Volume (float32 (C, K, J, I) + Geometry)
    name: Optional[str]
    last_used: float            # monotonic clock
    holds: int = 0              # jobs queued or running on it, clicks running on it

    @property
    def shape(self):
        return [int(n) for n in self.volume.array.shape]

    @property
    def nbytes(self):
        return int(self.volume.array.nbytes)


class Reservation:
    """Room for one session's voxels, taken before they are read; :meth:`SessionStore.add` turns it into the
    session, :meth:`release` gives it back (harmless twice)."""

    def __init__(self, store, nbytes):
        self.store, self.nbytes = store, int(nbytes)

    def release(self):
        store, self.store = self.store, None
        if store is not None:
            store._unreserve(self.nbytes)


class SessionStore:
    def __init__(self, ttl, on_remove=None, clock=time.monotonic, budget_bytes=None, evict_idle=60.0,
                 restarted_note=""):
        self.ttl = float(ttl)
        self.budget = None if budget_bytes is None else int(budget_bytes)
        self.evict_idle = float(evict_idle)
        self.restarted_note = restarted_note     # appended to 404s: sessions of an earlier run are gone
        self._sessions = {}
        self._bytes = 0
        self._reserved = 0
        self._evicted = OrderedDict()
        self._lock = threading.Lock()
        self._on_remove = on_remove or (lambda session_id: None)
        self._clock = clock

    # -- room ---------------------------------------------------------------------------------------------
    def reserve(self, nbytes):
        """Room for a session of ``nbytes``, evicting idle sessions (least recently used first) if that makes
        enough room; 507 with the figures when it does not."""
        nbytes = int(nbytes)
        if self.budget is None:
            return Reservation(self, 0)
        if nbytes > self.budget:
            raise ServiceError(507, f"The volume needs {nbytes / MB:,.1f} MB as float32 voxels, more than this "
                                    f"server's whole session memory of {self.budget / MB:,.1f} MB. Crop or "
                                    "downsample it, or restart the server with a larger --max-session-memory-gb.")
        now, evicted = self._clock(), []
        with self._lock:
            missing = self._bytes + self._reserved + nbytes - self.budget
            if missing > 0:
                idle = sorted((s for s in self._sessions.values()
                               if s.holds == 0 and now - s.last_used >= self.evict_idle), key=lambda s: s.last_used)
                if sum(s.nbytes for s in idle) < missing:
                    held = self._bytes
                    raise ServiceError(507, f"This server's session memory is full: sessions hold {held / MB:,.1f} "
                                            f"MB and uploads in progress {self._reserved / MB:,.1f} MB of "
                                            f"{self.budget / MB:,.1f} MB, and this volume needs {nbytes / MB:,.1f} "
                                            "MB. Delete sessions you no longer need (DELETE /sessions/{id}) or try "
                                            "again later; the operator can raise --max-session-memory-gb.",
                                       {"Retry-After": "30"})
                for session in idle:
                    if missing <= 0:
                        break
                    self._pop(session.id)
                    self._evicted[session.id] = None
                    missing -= session.nbytes
                    evicted.append(session.id)
                while len(self._evicted) > _REMEMBERED:
                    self._evicted.popitem(last=False)
            self._reserved += nbytes
        for session_id in evicted:
            self._on_remove(session_id)
        return Reservation(self, nbytes)

    def _unreserve(self, nbytes):
        with self._lock:
            self._reserved = max(self._reserved - nbytes, 0)

    def _pop(self, session_id):
        session = self._sessions.pop(session_id, None)
        if session is not None:
            self._bytes -= session.nbytes
        return session

    # -- sessions -----------------------------------------------------------------------------------------
    def add(self, volume, name=None, reservation=None):
        session = Session(uuid.uuid4().hex, volume, name, self._clock())
        with self._lock:
            self._sessions[session.id] = session
            self._bytes += session.nbytes
        if reservation is not None:
            reservation.release()
        return session

    def _expired(self, session, now):
        return session.holds == 0 and now - session.last_used > self.ttl

    def _missing(self, session_id):
        if session_id in self._evicted:
            return ServiceError(404, f"No session {session_id[:80]!r}: it was removed to make room for newer uploads "
                                     "(the server's session memory was full and it had not been used for a while). "
                                     "Upload the volume again (POST /sessions).")
        return ServiceError(404, f"No session {session_id[:80]!r}: it expired (sessions end after {self.ttl:g} s "
                                 f"unused), was deleted, or never existed{self.restarted_note}. Upload the volume "
                                 "again (POST /sessions).")

    def get(self, session_id, touch=True):
        """The session, its idle timer restarted; 404 when unknown or expired."""
        now = self._clock()
        with self._lock:
            session = self._sessions.get(session_id)
            if session is not None and self._expired(session, now):
                self._pop(session_id)
                expired, session = session, None
            else:
                expired = None
            if session is not None and touch:
                session.last_used = now
            missing = self._missing(session_id) if session is None else None
        if expired is not None:
            self._on_remove(expired.id)
        if missing is not None:
            raise missing
        return session

    def exists(self, session_id):
        with self._lock:
            return session_id in self._sessions

    def expires_in(self, session):
        if session.holds:
            return self.ttl
        return max(round(self.ttl - (self._clock() - session.last_used), 1), 0.0)

    def delete(self, session_id):
        with self._lock:
            session = self._pop(session_id)
            missing = self._missing(session_id) if session is None else None
        if missing is not None:
            raise missing
        self._on_remove(session_id)
        return session

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
                self._pop(sid)
        for sid in gone:
            self._on_remove(sid)
        return gone

    def stats(self):
        with self._lock:
            return {"sessions": len(self._sessions), "session_bytes": self._bytes}

    def budget_stats(self):
        with self._lock:
            return {"session_budget_bytes": self.budget, "session_reserved_bytes": self._reserved}
