"""Official nnMamba checkpoints: safe loading, architecture detection, conversion to safetensors (spec §9).

Safe by default: ``torch.load(weights_only=True)`` with an explicit allow-list for the numpy objects that
nnU-Net v1 ``.model`` files carry, and a restricted unpickler for ``.pkl`` plans that admits plain data only.
Anything else is refused with the name of the offending global; ``trust=True`` lifts that for files you trust.
"""

from __future__ import annotations

import codecs
import collections
import io
import json
import pickle
import warnings
from pathlib import Path
from typing import NamedTuple, Optional

import numpy as np
import torch

try:  # numpy >= 2
    from numpy._core import multiarray as _multiarray
except ImportError:  # numpy 1.x
    from numpy.core import multiarray as _multiarray


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded, with what was wrong and what to do."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint that needs globals beyond plain data: loading it could run arbitrary code."""


class Architecture(NamedTuple):
    network: str        # "NNMambaSeg" | "NNMambaEncoder"
    variant: str        # "miccss" | "nnunet" | "current" | "mamba_seq"
    in_channels: int
    num_classes: int
    channels: int

    def build(self, **kwargs):
        """A fresh network of this architecture (``kwargs`` go to the constructor, e.g. ``scan_backend``)."""
        from .networks import NNMambaEncoder, NNMambaSeg

        cls = NNMambaSeg if self.network == "NNMambaSeg" else NNMambaEncoder
        return cls(in_ch=self.in_channels, channels=self.channels, number_classes=self.num_classes,
                   variant=self.variant, **kwargs)


class LoadedCheckpoint(NamedTuple):
    state_dict: dict
    architecture: Architecture
    plans: Optional[dict]
    trainer: Optional[str]
    source: str

    def build_model(self, **kwargs):
        """The network with these weights loaded (strict), in eval mode."""
        model = self.architecture.build(**kwargs)
        load_weights(model, self.state_dict, self.source)
        return model.eval()


# ---------------------------------------------------------------------------------------------- safe unpickling

# numpy 1.x files name numpy.core.*, numpy 2.x files numpy._core.*: the same plain-data reconstructors.
_NUMPY_GLOBALS = {
    "numpy.core.multiarray.scalar": _multiarray.scalar,
    "numpy._core.multiarray.scalar": _multiarray.scalar,
    "numpy.core.multiarray._reconstruct": _multiarray._reconstruct,
    "numpy._core.multiarray._reconstruct": _multiarray._reconstruct,
    "numpy.ndarray": np.ndarray,
    "numpy.dtype": np.dtype,
}
_PLAIN_GLOBALS = dict(_NUMPY_GLOBALS, **{
    "collections.OrderedDict": collections.OrderedDict,
    "collections.defaultdict": collections.defaultdict,
    "builtins.set": set,
    "builtins.frozenset": frozenset,
    "builtins.complex": complex,
    "builtins.slice": slice,
    "builtins.range": range,
    "_codecs.encode": codecs.encode,
})
_DTYPE_CLASSES = [type(np.dtype(code)) for code in "?bBhHiIlLqQefdgFDGSUV"]


def _torch_safe_globals():
    entries = [(obj, name) for name, obj in _NUMPY_GLOBALS.items()]
    return entries + _DTYPE_CLASSES


class PlainDataUnpickler(pickle.Unpickler):
    """Admits only plain data types (containers, numbers, strings, numpy arrays and scalars)."""

    def find_class(self, module, name):
        qualified = f"{module}.{name}"
        if qualified in _PLAIN_GLOBALS:
            return _PLAIN_GLOBALS[qualified]
        if module in ("numpy.dtypes", "numpy") and name.endswith("DType"):
            return getattr(__import__("numpy.dtypes", fromlist=[name]), name)
        raise pickle.UnpicklingError(qualified)


def load_plans(path, trust=False):
    """Read an nnU-Net v1 ``.pkl`` (plans or a ``.model.pkl`` sidecar) with the plain-data unpickler."""
    path = Path(path)
    data = _require_file(path).read_bytes()
    try:
        if trust:
            return pickle.loads(data)
        return PlainDataUnpickler(io.BytesIO(data)).load()
    except pickle.UnpicklingError as error:
        if trust:
            raise CheckpointError(f"{path}: not a readable pickle ({error}).") from None
        raise UnsafeCheckpointError(
            f"{path} needs the global {error} to unpickle, which is not plain data; it could run code. "
            "Refused. If you trust where this file came from, load it with trust=True (CLI: --trust).") from None
    except Exception as error:
        raise CheckpointError(f"{path}: not a readable pickle ({type(error).__name__}: {error}).") from None


# What a file that is not a checkpoint usually is, told by its first bytes (a failed download is an HTML page).
_NOT_CHECKPOINTS = (
    ((b"<!doctype html", b"<html", b"<head", b"<body"),
     "an HTML page, not a checkpoint: the download failed (Google Drive and other hosts answer a large or "
     "rate-limited download with a web page). Download the file again, in a browser if need be, and check its size"),
    ((b"<?xml",), "an XML document, not a checkpoint: the download failed (a host's error page). Download it again"),
    ((b"{", b"["), "a JSON text file, not a checkpoint (a model package's model.json? give the package folder)"),
    ((b"\x1f\x8b",), "a gzip archive, not a checkpoint: unpack it first"),
    ((b"\x89hdf",), "an HDF5 file (Keras/TensorFlow?), not a PyTorch checkpoint"),
    ((b"version https://git-lfs",), "a Git LFS pointer, not the checkpoint: run `git lfs pull` to fetch the file"),
)


def identify_non_checkpoint(path):
    """What ``path`` is when its first bytes show it is not a PyTorch checkpoint (an HTML page, JSON, gzip...);
    None when it may be one (a zip or pickle file, or unknown bytes)."""
    with open(path, "rb") as handle:
        head = handle.read(512)
    if not head:
        return "an empty file, not a checkpoint: the download or copy did not finish. Get the file again"
    if head.startswith(b"PK\x03\x04") or head.startswith(b"\x80"):
        return None                                            # torch's zip format, or a pickle
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    for prefixes, what in _NOT_CHECKPOINTS:
        if text.startswith(prefixes):
            return what
    if all(32 <= byte < 127 or byte in b"\t\r\n" for byte in head):
        return "a text file, not a checkpoint (it starts with " + repr(head[:40].decode("ascii")) + ")"
    return "not a PyTorch checkpoint: neither a zip archive nor a pickle (unknown or damaged bytes). Download it again"


def _first_line(error):
    """The first line of a loader's message, without torch's advice to lift ``weights_only`` (never ours)."""
    line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    line = line.split("Weights only load failed")[0].split(". ")[0]
    return line.strip(" .(") or type(error).__name__


def _torch_load(path, trust):
    what = identify_non_checkpoint(path)
    if what is not None:
        raise CheckpointError(f"{path} is {what}.")
    if trust:
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except Exception as error:
            raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({_first_line(error)}). Download it "
                                  "again.") from None
    try:
        with torch.serialization.safe_globals(_torch_safe_globals()), warnings.catch_warnings():
            warnings.simplefilter("ignore")          # torch's notes on pickle protocols are not for the user
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        offending = _unsafe_globals(path)
        if offending is None and "GLOBAL" not in str(error):
            if _is_plain_pickle(path):
                raise CheckpointError(f"{path} is a pickle file, not a PyTorch checkpoint (nnU-Net plans? they "
                                      "belong next to the .model file, or to `models import --plans`).") from None
            raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (a damaged or unknown file: "
                                  f"{_unsafe_detail(error)}). Download it again.") from None
        names = ", ".join(offending) if offending else str(error).splitlines()[0]
        raise UnsafeCheckpointError(
            f"{path} needs globals beyond tensors and plain data to load ({names}); unpickling them could run "
            "code, so it was refused. If you trust where this file came from, load it with trust=True "
            "(CLI: --trust).") from None
    except Exception as error:   # truncated, damaged or not a torch file at all (torch raises many kinds here)
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (a damaged or unknown file: "
                              f"{_unsafe_detail(error)}). Download it again.") from None


def _is_plain_pickle(path):
    try:
        load_plans(path)
        return True
    except CheckpointError:
        return False


def _unsafe_detail(error):
    detail = _first_line(error)
    if isinstance(error, (KeyError, pickle.UnpicklingError)) or "weights_only" in detail.lower() \
            or detail == type(error).__name__:
        return "its pickle data is broken"
    return detail


def _unsafe_globals(path):
    try:
        allowed = set(_NUMPY_GLOBALS) | {f"{c.__module__}.{c.__name__}" for c in _DTYPE_CLASSES}
        found = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        return [name for name in found if name not in allowed] or None
    except Exception:
        return None


def _require_file(path):
    if not path.is_file():
        raise CheckpointError(f"Checkpoint file not found: {path}")
    return path


# ------------------------------------------------------------------------------------------ state_dict handling

def extract_state_dict(obj, source="checkpoint"):
    """The tensor mapping inside a loaded object: a raw state_dict, or one under 'state_dict' / 'model'.

    A leading ``module.`` (DataParallel) is stripped.
    """
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(torch.is_tensor(v) for v in obj.values()):
        raise CheckpointError(f"{source}: no state_dict found (expected a mapping of parameter names to tensors, "
                              "or a dict holding one under 'state_dict').")
    if all(key.startswith("module.") for key in obj):
        obj = {key[len("module."):]: value for key, value in obj.items()}
    return dict(obj)


def detect_architecture(state_dict, source="checkpoint"):
    """Which nnMamba network these weights belong to, with in/out channels and width read from shapes."""
    keys = set(state_dict)
    if any(key.startswith("mamba_layer_1.") for key in keys):
        raise CheckpointError(f"{source}: historical LayerNorm nnMamba variant (keys 'mamba_layer_1.*'); it was "
                              "never released with weights and is not supported.")
    try:
        stem = state_dict["in_conv.conv.0.weight"]
        if "mamba_layer_stem.nin.weight" in keys and "mlp.3.weight" in keys:
            variant = "mamba_seq" if any(key.startswith("mamba_seq.") for key in keys) else "current"
            return Architecture("NNMambaEncoder", variant, int(stem.shape[1]),
                                int(state_dict["mlp.3.weight"].shape[0]), int(stem.shape[0]))
        head = state_dict["conv8.conv.0.weight"]
    except KeyError as missing:
        raise CheckpointError(f"{source}: not an nnMamba checkpoint (no {missing} key).") from None
    if "layer1.1.mamba_layer.nin2.weight" in keys or "layer1.2.mamba_layer.nin2.weight" in keys:
        variant = "miccss"
    elif "ds1_cls_conv.weight" in keys:
        variant = "nnunet"
    else:
        raise CheckpointError(f"{source}: segmentation weights of an unknown nnMamba variant (neither the CSS "
                              "layers of nnMamba.py nor the deep-supervision heads of the nnU-Net network).")
    return Architecture("NNMambaSeg", variant, int(stem.shape[1]), int(head.shape[0]), int(stem.shape[0]))


def complete_shared_keys(state_dict, source="checkpoint"):
    """Blocks 1 and 2 of each stage share one Mamba layer: fill a missing copy, refuse copies that differ."""
    result = dict(state_dict)
    for key in list(state_dict):
        parts = key.split(".")
        if len(parts) > 3 and parts[0].startswith("layer") and parts[1] in ("1", "2") and parts[2] == "mamba_layer":
            twin = ".".join([parts[0], "2" if parts[1] == "1" else "1"] + parts[2:])
            if twin not in result:
                result[twin] = state_dict[key]
            elif parts[1] == "1" and not torch.equal(state_dict[key], state_dict[twin]):
                raise CheckpointError(f"{source}: '{key}' and '{twin}' must be the same shared tensor but differ; "
                                      "the file is corrupt or not an nnMamba checkpoint.")
    return result


def load_weights(model, state_dict, source="checkpoint"):
    """load_state_dict(strict) with one readable message listing every missing, extra or mis-shaped key."""
    state_dict = complete_shared_keys(state_dict, source)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    wrong = [f"{k} {tuple(state_dict[k].shape)} (expected {tuple(expected[k].shape)})"
             for k in expected if k in state_dict and state_dict[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        problems = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
            if items:
                problems.append(f"{len(items)} {label}: {', '.join(items[:5])}{' ...' if len(items) > 5 else ''}")
        raise CheckpointError(f"{source}: weights do not fit {type(model).__name__}; " + "; ".join(problems))
    model.load_state_dict(state_dict, strict=True)
    return model


# ----------------------------------------------------------------------------------------------------- loading

def load_checkpoint(path, trust=False, plans_path=None):
    """Load any official nnMamba checkpoint: nnU-Net v1 ``.model`` (+ ``.model.pkl``), or a plain state_dict.

    The plans come from ``plans_path`` or, for nnU-Net files, the ``<file>.pkl`` sidecar when present.
    """
    path = _require_file(Path(path))
    if path.suffix == ".safetensors":
        return load_safetensors(path)
    obj = _torch_load(path, trust)
    state_dict = extract_state_dict(obj, str(path))
    architecture = detect_architecture(state_dict, str(path))
    plans, trainer = None, None
    sidecar = Path(plans_path) if plans_path else path.with_name(path.name + ".pkl")
    if plans_path or sidecar.is_file():
        info = load_plans(sidecar, trust)
        if isinstance(info, dict) and "plans" in info:
            plans, trainer = info["plans"], info.get("name")
        else:
            plans = info
    return LoadedCheckpoint(state_dict, architecture, plans, trainer, str(path))


# ------------------------------------------------------------------------------------------------ safetensors

def save_safetensors(checkpoint, path, metadata=None):
    """Write the weights as safetensors (shared Mamba tensors stored once), the architecture in its header."""
    from safetensors.torch import save_model

    model = checkpoint.build_model()
    header = {"architecture": json.dumps(checkpoint.architecture._asdict()), "source": Path(checkpoint.source).name}
    header.update({str(k): str(v) for k, v in (metadata or {}).items()})
    path = Path(path)
    tmp = path.with_name(path.name + ".partial")
    try:
        save_model(model, str(tmp), metadata=header)
        _sort_metadata(tmp)
        tmp.replace(path)                      # never a half-written file under the final name
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _sort_metadata(path):
    """safetensors writes its metadata in hash-map order, which changes from run to run: sort it in place, so that
    the same weights give the same file (and the same sha256 in model.json). The header keeps its length."""
    import struct

    with open(path, "r+b") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
        header["__metadata__"] = dict(sorted(header.get("__metadata__", {}).items()))
        text = json.dumps(header, separators=(",", ":")).encode("utf-8")
        if len(text) > length:
            raise ValueError(f"{path}: unexpected safetensors header")   # cannot happen: same keys, same values
        handle.seek(8)
        handle.write(text.ljust(length, b" "))


def load_safetensors(path, architecture=None):
    """Weights written by :func:`save_safetensors` (or any safetensors file of an nnMamba network)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
        state_dict = load_file(str(path))
    except Exception as error:
        raise CheckpointError(f"{path}: not a readable safetensors file ({error}).") from None
    if architecture is None:
        architecture = (Architecture(**json.loads(header["architecture"])) if "architecture" in header
                        else detect_architecture(complete_shared_keys(state_dict, str(path)), str(path)))
    return LoadedCheckpoint(complete_shared_keys(state_dict, str(path)), architecture, None, None, str(path))
