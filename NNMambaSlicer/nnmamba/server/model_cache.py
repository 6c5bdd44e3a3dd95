"""Loaded networks kept between jobs, least recently used first out when they exceed a memory budget.

Loading a model (hashing and reading the weights, building and preparing the network) costs seconds; a Slicer user
runs the same model again and again. The budget counts parameters and buffers, the part that stays resident; the
one model in use is always kept, even alone over budget.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict

log = logging.getLogger("nnmamba.server")


def predictor_bytes(predictor):
    """Resident size of a loaded network: its parameters and buffers."""
    model = predictor.model
    tensors = list(model.parameters()) + list(model.buffers())
    return int(sum(t.numel() * t.element_size() for t in tensors))


class PredictorCache:
    def __init__(self, budget_bytes, load, on_evict=None):
        """``load(package, device) -> NetworkPredictor``; ``on_evict(predictor)`` lets holders drop references."""
        self.budget = int(budget_bytes)
        self._load = load
        self._on_evict = on_evict or (lambda predictor: None)
        self._entries = OrderedDict()   # key -> (predictor, bytes, model id)
        self._lock = threading.RLock()

    @staticmethod
    def key(package, device):
        return str(package.root), package.meta["weights"]["sha256"], str(device)

    def get(self, package, device):
        """The loaded predictor for ``package`` on ``device``, loading it (and evicting others) when needed. Callers
        serialise on the device lock, so two loads of one model do not race."""
        key = self.key(package, device)
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key][0]
        predictor = self._load(package, device)
        size = predictor_bytes(predictor)
        with self._lock:
            self._entries[key] = (predictor, size, package.id)
            self._entries.move_to_end(key)
            self._shrink(keep=key)
        log.info("Loaded model %s on %s (%.1f MB)", package.id, device, size / 2**20)
        return predictor

    def discard(self, package, device):
        with self._lock:
            entry = self._entries.pop(self.key(package, device), None)
        if entry is not None:
            self._evicted(entry)

    def _shrink(self, keep):
        while self.total_bytes() > self.budget and len(self._entries) > 1:
            oldest = next(k for k in self._entries if k != keep)
            self._evicted(self._entries.pop(oldest))

    def _evicted(self, entry):
        predictor, size, model_id = entry
        log.info("Unloaded model %s (%.1f MB) to stay within the model memory budget", model_id, size / 2**20)
        self._on_evict(predictor)
        if getattr(getattr(predictor, "device", None), "type", None) == "cuda":
            import torch

            torch.cuda.empty_cache()

    def total_bytes(self):
        with self._lock:
            return sum(size for _, size, _ in self._entries.values())

    def stats(self):
        with self._lock:
            loaded = [{"id": model_id, "device": key[2], "bytes": size}
                      for key, (_, size, model_id) in self._entries.items()]
        return {"models_loaded": loaded, "model_bytes": sum(m["bytes"] for m in loaded),
                "model_budget_bytes": self.budget}
