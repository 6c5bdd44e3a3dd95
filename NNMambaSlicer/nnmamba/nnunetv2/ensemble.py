"""nnU-Net's fold ensemble as one network: the mean of the folds' logits (``model.json`` ``network.ensemble``).

nnUNetPredictor runs the whole sliding window once per fold and averages the blended logits; blending is linear, so
averaging each tile's logits over the folds first gives the same result with one pass over the image. The weights are
stacked in one safetensors file under ``fold.<i>.``. Importing this module imports torch.
"""

from __future__ import annotations

from torch import nn

PREFIX = "fold."


class FoldEnsemble(nn.Module):
    def __init__(self, members):
        super().__init__()
        if len(members) < 2:
            raise ValueError("An ensemble needs at least two networks.")
        self.fold = nn.ModuleList(members)

    @property
    def do_ds(self):
        return any(getattr(member, "do_ds", False) for member in self.fold)

    @do_ds.setter
    def do_ds(self, value):
        for member in self.fold:
            member.do_ds = bool(value)

    def forward(self, x):
        total = None
        for member in self.fold:
            y = member(x)
            total = y if total is None else total + y
        return total / len(self.fold)


def split_state_dict(state_dict, folds, source="weights"):
    """The stacked ``fold.<i>.*`` tensors as one state_dict per fold."""
    parts = [{} for _ in range(folds)]
    for key, value in state_dict.items():
        head, _, rest = key.partition(".")
        index, _, name = rest.partition(".")
        if head + "." != PREFIX or not index.isdigit() or int(index) >= folds:
            raise ValueError(f"{source}: '{key}' is not a weight of one of the {folds} folds (fold.<i>.<name>).")
        parts[int(index)][name] = value
    return parts


def build_ensemble(architecture, state_dict, folds, source="weights", **network_kwargs):
    """The folds' networks with their weights (each loaded strictly), as one :class:`FoldEnsemble`."""
    from ..checkpoints import load_weights

    members = []
    for index, weights in enumerate(split_state_dict(state_dict, folds, source)):
        member = architecture.build(**network_kwargs)
        load_weights(member, weights, f"{source} (fold {index})")
        members.append(member)
    return FoldEnsemble(members)


def save_ensemble(ensemble, path, metadata=None):
    """Write the stacked weights as safetensors (shared Mamba tensors stored once), atomically."""
    from pathlib import Path

    from safetensors.torch import save_model

    path = Path(path)
    tmp = path.with_name(path.name + ".partial")
    try:
        save_model(ensemble, str(tmp), metadata={str(k): str(v) for k, v in (metadata or {}).items()})
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


__all__ = ["FoldEnsemble", "build_ensemble", "save_ensemble", "split_state_dict"]
