"""One network on one device, as a function from a batch of tiles (numpy) to probabilities (numpy).

It owns the device decisions: the inference rewrite (BN folded, fused convolutions, channels-last; see
``networks.inference_prep``), autocast on CUDA, mirroring test-time augmentation, and the out-of-memory
fallback (halve the tile batch, then move to the CPU), each announced through ``notify`` so that the user
knows why a run got slower.
"""

from __future__ import annotations

import itertools
import time

import numpy as np
import torch

from .environment import resolve_device
from .networks.inference_prep import prepare_for_inference

ACTIVATIONS = {
    "softmax": lambda x: torch.softmax(x, dim=1),
    "sigmoid": torch.sigmoid,
    "relu": torch.relu,
    "none": lambda x: x,
}


class NetworkPredictor:
    def __init__(self, model, device="auto", activation="softmax", mirroring=False, amp=True, notify=None):
        if activation not in ACTIVATIONS:
            raise ValueError(f"Unknown output activation {activation!r}; use one of {sorted(ACTIVATIONS)}.")
        self._source_model = model
        self.device = resolve_device(device)
        self.model = _prepare(model, self.device)
        self.activation = ACTIVATIONS[activation]
        self.mirroring = mirroring
        self.amp = amp
        self.notify = notify or (lambda message: None)
        self.max_batch = None  # learned from out-of-memory errors
        self.network_seconds = 0.0  # time inside network passes, to tell pre/post-processing cost apart
        self.passes = 0

    def __call__(self, batch):
        """numpy (B, C, *patch) → numpy probabilities."""
        return self.predict_tensor(batch).cpu().numpy()

    def predict_tensor(self, batch):
        """numpy (B, C, *patch) → float32 tensor on ``self.device`` (the CPU after an out-of-memory fallback)."""
        started = time.perf_counter()
        batch = np.asarray(batch, dtype=np.float32)
        size = len(batch) if self.max_batch is None else min(len(batch), self.max_batch)
        parts = [self._predict_with_fallback(batch[i:i + size]) for i in range(0, len(batch), size)]
        if self.device.type == "cuda":
            torch.cuda.synchronize()  # so that network_seconds is the network's time, not the launch's
        self.network_seconds += time.perf_counter() - started
        self.passes += len(batch)
        return parts[0] if len(parts) == 1 else torch.cat([p.to(self.device) for p in parts])

    def _predict_with_fallback(self, batch):
        while True:
            try:
                return self._predict(batch)
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
                if len(batch) > 1:
                    self.max_batch = max(1, len(batch) // 2)
                    self.notify(f"GPU out of memory with {len(batch)} tiles at once; retrying with {self.max_batch}.")
                    return torch.cat([self._predict_with_fallback(batch[i:i + self.max_batch]).cpu()
                                      for i in range(0, len(batch), self.max_batch)])
                self.notify("GPU out of memory with a single tile; continuing on the CPU (much slower). "
                            "Close other GPU programs or use a smaller patch size to stay on the GPU.")
                self.device = torch.device("cpu")
                self.model = _prepare(self._source_model, self.device)

    @torch.inference_mode()
    def _predict(self, batch):
        x = torch.from_numpy(batch).to(self.device)
        if x.ndim == 5:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        flips = _flip_sets(x.ndim - 2) if self.mirroring else [()]
        total = None
        for dims in flips:
            y = self._forward(torch.flip(x, dims) if dims else x)
            y = torch.flip(y, dims) if dims else y
            total = y if total is None else total + y
        if len(flips) > 1:
            total /= len(flips)
        return total.float()

    def _forward(self, x):
        # The network runs channels-last; the activation and everything after it are faster on the plain layout.
        if self.amp and self.device.type == "cuda":
            with torch.autocast("cuda", dtype=torch.float16):
                return self.activation(self.model(x).float().contiguous())
        return self.activation(self.model(x).contiguous())


def _prepare(model, device):
    prepared = prepare_for_inference(model, device)
    if getattr(prepared, "do_ds", False):
        prepared.do_ds = False  # deep-supervision heads are for training; inference wants the full-resolution map
    return prepared


def _flip_sets(spatial_dims):
    """All subsets of the spatial axes (8 in 3D), as torch dims of an (N, C, ...) tensor."""
    axes = range(2, 2 + spatial_dims)
    return [dims for r in range(len(axes) + 1) for dims in itertools.combinations(axes, r)]
