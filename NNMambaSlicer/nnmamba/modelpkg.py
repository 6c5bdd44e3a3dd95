"""Model packages: a folder or .zip holding ``model.json`` and safetensors weights (``schemas/model.schema.json``).

Official checkpoints are imported into this form once (``importers.py``); inference then reads only JSON and
safetensors, never a pickle. Opening a package checks model.json against the schema *and* against the cross-field
rules a schema cannot state, and reports every problem at once with its JSON path, so that one round of edits fixes a
hand-written file. Weights are checked against their SHA-256 before they are used.

No torch import at module level: listing models (Slicer start-up, ``nnmamba models list``) must not pay for it.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import shutil
import tempfile
import uuid
import zipfile
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import List, Optional

MODEL_JSON = "model.json"
WEIGHTS_FILE = "weights.safetensors"
CATALOG_FILE = "catalog.json"
USER_MODELS_ENV = "NNMAMBA_MODELS_DIR"
SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
DEFAULT_ACTIVATION = {"segmentation": "softmax", "landmarks": "relu", "classification": "none"}
INFERENCE_DEFAULTS = {"overlap": 0.5, "mirroring": False}
DECODING_DEFAULTS = {"method": "argmax", "refine": "none"}
_CHUNK = 1 << 20


class ModelPackageError(ValueError):
    """A model package (or model.json) that cannot be used; ``problems`` lists every issue found."""

    def __init__(self, message, problems=()):
        super().__init__(message)
        self.problems = list(problems)


def _report(what, problems):
    """One line for one problem (the usual case, e.g. tampered weights); a list when there are several."""
    if len(problems) == 1:
        return f"{what} is not a valid model package: {problems[0]}"
    return f"{what} is not a valid model package ({len(problems)} problems):\n" + "\n".join(
        f"  - {p}" for p in problems)


# ----------------------------------------------------------------------------------------------------- hashing

def sha256_file(path):
    """SHA-256 of a file, read in chunks (weights can be hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _sha256_stream(handle):
    digest = hashlib.sha256()
    for chunk in iter(lambda: handle.read(_CHUNK), b""):
        digest.update(chunk)
    return digest.hexdigest()


# -------------------------------------------------------------------------------------------------- validation

@cache
def load_schema(name="model"):
    """The JSON Schema ``schemas/<name>.schema.json`` ('model' or 'catalog')."""
    return json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text(encoding="utf-8"))


@cache
def _validator(name):
    from jsonschema import Draft202012Validator

    return Draft202012Validator(load_schema(name))


def json_path(parts):
    """``['input', 'patch_size', 2]`` -> ``$.input.patch_size[2]``."""
    text = "$"
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(part)):
            text += f".{part}"
        else:
            text += f"[{json.dumps(part)}]"
    return text


def _path_key(error):
    return [(isinstance(p, str), p if isinstance(p, int) else 0, p if isinstance(p, str) else "")
            for p in error.absolute_path]


def schema_problems(instance, schema="model"):
    """Every schema violation as ``'$.json.path: message'``, sorted by path. Where jsonschema is not installed (a
    fresh Slicer lists its models before 'Install dependencies') only the rule checks run; the server, which has
    jsonschema, checks the schema too before it runs a model."""
    try:
        validator = _validator(schema)
    except ImportError:
        return []
    problems = []
    for error in sorted(validator.iter_errors(instance), key=lambda e: (_path_key(e), e.message)):
        problem = f"{json_path(error.absolute_path)}: {error.message}"
        if problem not in problems:
            problems.append(problem)
    return problems


def _as_dict(value):
    return value if isinstance(value, dict) else {}


def _as_list(value):
    return value if isinstance(value, list) else []


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _duplicates(items, path, what):
    """Problems for repeated values in ``items`` (a list of (index, value))."""
    seen, problems = {}, []
    for index, value in items:
        if value in seen:
            problems.append(f"{path}[{index}]: {what} {value!r} is used twice (also at [{seen[value]}])")
        else:
            seen[value] = index
    return problems


def semantic_problems(meta):
    """The cross-field rules the schema cannot express. Tolerates malformed data (the schema reports that)."""
    if not isinstance(meta, dict):
        return []
    network, inputs, outputs = (_as_dict(meta.get(key)) for key in ("network", "input", "outputs"))
    in_channels, out_channels = network.get("in_channels"), network.get("out_channels")
    problems = []
    channels = inputs.get("channels")
    if _is_int(in_channels) and isinstance(channels, list) and len(channels) != in_channels:
        problems.append(f"$.input.channels: {len(channels)} channel(s) listed but network.in_channels is "
                        f"{in_channels}; list one entry per network input, in input order")
    problems += _duplicates([(i, c.get("name")) for i, c in enumerate(_as_list(channels)) if isinstance(c, dict)],
                            "$.input.channels", "channel name")
    problems += _range_problems(_as_dict(inputs.get("normalization")))
    task = meta.get("task")
    out_channels = out_channels if _is_int(out_channels) else None
    if task == "segmentation":
        regions = _as_dict(_as_dict(inputs.get("nnunet_v2")).get("regions"))
        problems += _label_problems(outputs, None if regions else out_channels)
        problems += _region_order_problems(regions, outputs, out_channels) if regions else []
    elif task == "landmarks":
        problems += _landmark_problems(outputs, out_channels)
    elif task == "classification":
        problems += _class_problems(outputs, out_channels)
    return problems


def _range_problems(normalization):
    problems = []
    for key in ("clip", "range"):
        pair = normalization.get(key)
        if (isinstance(pair, list) and len(pair) == 2 and all(isinstance(v, (int, float)) for v in pair)
                and not pair[0] < pair[1]):
            problems.append(f"$.input.normalization.{key}: low {pair[0]} must be below high {pair[1]}")
    return problems


def _label_problems(outputs, out_channels):
    labels = [(i, label) for i, label in enumerate(_as_list(outputs.get("labels"))) if isinstance(label, dict)]
    values = [(i, label.get("value")) for i, label in labels if _is_int(label.get("value"))]
    problems = _duplicates(values, "$.outputs.labels", "label value")
    problems += _duplicates([(i, label.get("name")) for i, label in labels], "$.outputs.labels", "label name")
    if out_channels is not None:
        for i, value in values:
            if value >= out_channels:
                problems.append(f"$.outputs.labels[{i}].value: {value} is not below network.out_channels "
                                f"({out_channels}); label values are output channels 1..{out_channels - 1}")
        missing = sorted(set(range(1, out_channels)) - {v for _, v in values})
        if missing and labels:
            problems.append(f"$.outputs.labels: no label for output channel(s) {', '.join(map(str, missing))}; "
                            f"every foreground channel 1..{out_channels - 1} needs a name and colour")
    known = {v for _, v in values}
    for r, region in enumerate(_as_list(outputs.get("regions"))):
        for j, value in enumerate(_as_list(_as_dict(region).get("labels"))):
            if _is_int(value) and value not in known:
                problems.append(f"$.outputs.regions[{r}].labels[{j}]: {value} is not one of the label values")
    regions = [(i, _as_dict(region).get("name")) for i, region in enumerate(_as_list(outputs.get("regions")))]
    return problems + _duplicates(regions, "$.outputs.regions", "region name")


def _region_order_problems(regions, outputs, out_channels):
    """nnU-Net v2 region-based models: one output per region, and a label for each value the regions write."""
    order = _as_list(regions.get("class_order"))
    problems = []
    if out_channels is not None and len(order) != out_channels:
        problems.append(f"$.input.nnunet_v2.regions.class_order: {len(order)} region(s) but network.out_channels "
                        f"is {out_channels}; one sigmoid output per region")
    values = {_as_dict(label).get("value") for label in _as_list(outputs.get("labels"))}
    missing = [v for v in order if v not in values]
    if missing:
        problems.append(f"$.outputs.labels: no label for region value(s) {', '.join(map(str, missing))}")
    return problems


def _landmark_problems(outputs, out_channels):
    landmarks = _as_list(outputs.get("landmarks"))
    names = [(i, _as_dict(landmark).get("name")) for i, landmark in enumerate(landmarks)]
    problems = _duplicates(names, "$.outputs.landmarks", "landmark name")
    if out_channels is not None and landmarks and len(landmarks) != out_channels:
        problems.append(f"$.outputs.landmarks: {len(landmarks)} landmark(s) but network.out_channels is "
                        f"{out_channels}; one landmark per output channel, in channel order")
    known = {name for _, name in names}
    lines = _as_list(outputs.get("lines"))
    shape = _as_dict(_as_dict(outputs.get("decoding")).get("shape"))
    pairs = _as_list(shape.get("pairs"))
    for where, entries, what in (("$.outputs.lines", lines, "a line"),
                                 ("$.outputs.decoding.shape.pairs", pairs, "a distance")):
        for i, entry in enumerate(entries):
            entry = _as_dict(entry)
            for end in ("from", "to"):
                name = entry.get(end)
                if isinstance(name, str) and name not in known:
                    problems.append(f"{where}[{i}].{end}: {name!r} is not a landmark name "
                                    f"({', '.join(str(n) for _, n in names)})")
            if entry.get("from") is not None and entry.get("from") == entry.get("to"):
                problems.append(f"{where}[{i}]: {what} needs two different landmarks")
    correlation = _as_list(shape.get("correlation"))
    if correlation and (len(correlation) != len(pairs) or any(len(_as_list(row)) != len(pairs) for row in correlation)):
        problems.append(f"$.outputs.decoding.shape.correlation: {len(pairs)} x {len(pairs)} numbers expected, one row "
                        "and one column per pair")
    midline = _as_dict(_as_dict(outputs.get("decoding")).get("midline"))
    for key in ("across", "on"):
        unknown = [name for name in _as_list(midline.get(key)) if isinstance(name, str) and name not in known]
        if unknown:
            problems.append(f"$.outputs.decoding.midline.{key}: {', '.join(map(repr, unknown))} not landmark "
                            f"name(s) ({', '.join(str(n) for _, n in names)})")
    across = _as_list(midline.get("across"))
    if len(across) == 2 and across[0] == across[1]:
        problems.append("$.outputs.decoding.midline.across: two different landmarks define the midline")
    if {n for n in across if isinstance(n, str)} & {n for n in _as_list(midline.get("on")) if isinstance(n, str)}:
        problems.append("$.outputs.decoding.midline: a landmark that defines the midline cannot be moved onto it")
    return problems + _duplicates([(i, _as_dict(line).get("name")) for i, line in enumerate(lines)],
                                  "$.outputs.lines", "line name")


def _class_problems(outputs, out_channels):
    classes = outputs.get("classes")
    rule = _as_dict(outputs.get("decision")).get("rule")
    if out_channels is None or not isinstance(classes, list):
        return []
    problems = []
    if out_channels == 1:
        if len(classes) != 2:
            problems.append(f"$.outputs.classes: a single logit (network.out_channels 1) means exactly 2 classes "
                            f"(p(classes[1]) = sigmoid(logit)), got {len(classes)}")
        if rule is not None and rule != "sigmoid-threshold":
            problems.append(f"$.outputs.decision.rule: a single logit needs 'sigmoid-threshold', not {rule!r}")
    else:
        if len(classes) != out_channels:
            problems.append(f"$.outputs.classes: {len(classes)} classes but network.out_channels is {out_channels}; "
                            "one class per logit")
        if rule is not None and rule != "argmax":
            problems.append(f"$.outputs.decision.rule: {out_channels} logits need 'argmax' (softmax), not {rule!r}")
    return problems


def validate_meta(meta, what="model.json"):
    """Raise :class:`ModelPackageError` listing every schema and cross-field problem of ``meta``."""
    problems = schema_problems(meta) + semantic_problems(meta)
    if problems:
        raise ModelPackageError(_report(what, problems), problems)
    return meta


# ------------------------------------------------------------------------------------------------ the package

class ModelPackage:
    """An opened, validated model package. Use :meth:`open`, :func:`resolve_model` or :func:`write_package`."""

    def __init__(self, root, meta, zip_prefix=None):
        self.root = Path(root)
        self.meta = meta
        self._zip_prefix = zip_prefix   # None for a folder; the member prefix ('' or 'name/') inside a zip
        self.origin = None              # 'user' | 'bundled' when found by find_packages

    def __repr__(self):
        return f"ModelPackage({self.id!r}, version {self.version!r}, {str(self.root)!r})"

    # -- opening -------------------------------------------------------------------------------------------
    @classmethod
    def open(cls, path, verify=True):
        """Open a package folder, its model.json, or a .zip; ``verify`` also checks the weights' SHA-256."""
        path = Path(path).expanduser()
        if path.is_file() and path.name == MODEL_JSON:
            path = path.parent
        if path.is_dir():
            if not (path / MODEL_JSON).is_file():
                raise ModelPackageError(f"{path} has no {MODEL_JSON}: not a model package folder. Import a "
                                        "checkpoint with `nnmamba models import` to make one.")
            text, prefix = (path / MODEL_JSON).read_bytes(), None
        elif path.is_file() and zipfile.is_zipfile(path):
            text, prefix = _read_zip_meta(path)
        elif not path.exists():
            raise ModelPackageError(f"Model package not found: {path}")
        else:
            raise ModelPackageError(f"{path} is neither a model package folder nor a .zip of one.")
        try:
            meta = json.loads(text)   # bytes: UTF-8 (or UTF-16/32 with a BOM), as the JSON spec allows
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ModelPackageError(f"{path}: {MODEL_JSON} is not valid JSON ({error}).") from None
        package = cls(path, meta, prefix)
        problems = schema_problems(meta) + semantic_problems(meta)
        problems += package._weights_problems(verify)
        if problems:
            raise ModelPackageError(_report(str(path), problems), problems)
        return package

    def _weights_problems(self, verify):
        weights = _as_dict(_as_dict(self.meta).get("weights"))
        name, expected = weights.get("file"), weights.get("sha256")
        if not isinstance(name, str) or "/" in name or "\\" in name:
            return []   # reported by the schema
        if not self._weights_exist(name):
            return [f"$.weights.file: {name} is missing from the package"]
        if verify and isinstance(expected, str) and re.fullmatch(r"[0-9a-f]{64}", expected):
            actual = self._hash_weights(name)
            if actual != expected:
                return [_tampered(name, actual, expected)]
        return []

    def _weights_exist(self, name):
        if self._zip_prefix is None:
            return (self.root / name).is_file()
        with zipfile.ZipFile(self.root) as archive:
            return self._zip_prefix + name in archive.namelist()

    def _hash_weights(self, name):
        if self._zip_prefix is None:
            return sha256_file(self.root / name)
        with zipfile.ZipFile(self.root) as archive, archive.open(self._zip_prefix + name) as handle:
            return _sha256_stream(handle)

    # -- fields ------------------------------------------------------------------------------------------
    id = property(lambda self: self.meta["id"])
    name = property(lambda self: self.meta["name"])
    version = property(lambda self: self.meta["version"])
    task = property(lambda self: self.meta["task"])
    network = property(lambda self: self.meta["network"])
    input = property(lambda self: self.meta["input"])
    provenance = property(lambda self: self.meta.get("provenance", {}))
    is_zip = property(lambda self: self._zip_prefix is not None)

    @property
    def outputs(self):
        """``outputs``, with the landmark decoding defaults filled in."""
        outputs = dict(self.meta["outputs"])
        if self.task == "landmarks":
            outputs["decoding"] = dict(DECODING_DEFAULTS, **outputs.get("decoding", {}))
        return outputs

    @property
    def inference(self):
        """``inference`` with defaults: overlap 0.5, no mirroring, the task's activation."""
        defaults = dict(INFERENCE_DEFAULTS, activation=DEFAULT_ACTIVATION[self.task])
        return dict(defaults, **self.meta.get("inference", {}))

    @property
    def architecture(self):
        from .checkpoints import Architecture

        net = self.network
        return Architecture(net["class"], net["variant"], net["in_channels"], net["out_channels"], net["channels"])

    # -- weights -----------------------------------------------------------------------------------------
    def verify(self):
        """Re-check the weights' SHA-256 (raises :class:`ModelPackageError` when they were modified)."""
        name, expected = self.meta["weights"]["file"], self.meta["weights"]["sha256"]
        actual = self._hash_weights(name)
        if actual != expected:
            raise ModelPackageError(_report(str(self.root), [_tampered(name, actual, expected)]))
        return True

    def load_state_dict(self):
        """The weights as tensors, after checking their SHA-256 (a zip is read in memory, never extracted)."""
        from safetensors.torch import load, load_file

        name, expected = self.meta["weights"]["file"], self.meta["weights"]["sha256"]
        if self._zip_prefix is None:
            self.verify()
            return load_file(str(self.root / name))
        with zipfile.ZipFile(self.root) as archive:
            data = archive.read(self._zip_prefix + name)
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected:
            raise ModelPackageError(_report(str(self.root), [_tampered(name, actual, expected)]))
        return load(data)

    def build_model(self, device="cpu", **network_kwargs):
        """The network with the package weights loaded strictly, in eval mode, on ``device`` ('auto' allowed).

        ``network_kwargs`` go to the network constructor (e.g. ``scan_backend``). Deep-supervision outputs of the
        nnU-Net variant are switched off: a package is for inference.
        """
        from .checkpoints import load_weights
        from .environment import resolve_device

        source = f"{self.root} ({self.meta['weights']['file']})"
        if self.network.get("ensemble"):   # nnU-Net v2 folds: the mean of their logits
            from .nnunetv2.ensemble import build_ensemble

            model = build_ensemble(self.architecture, self.load_state_dict(), self.network["ensemble"], source,
                                   **network_kwargs)
        else:
            model = self.architecture.build(**network_kwargs)
            load_weights(model, self.load_state_dict(), source)
        if getattr(model, "do_ds", False):
            model.do_ds = False
        return model.to(resolve_device(str(device))).eval()


def _tampered(name, actual, expected):
    return (f"$.weights.sha256: {name} was modified or is corrupt (sha256 {actual[:12]}..., model.json expects "
            f"{expected[:12]}...). Re-import the model or download the package again.")


def _read_zip_meta(path):
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        if MODEL_JSON in names:
            return archive.read(MODEL_JSON), ""
        nested = [n for n in names if n.count("/") == 1 and n.endswith("/" + MODEL_JSON)]
        if len(nested) == 1:
            return archive.read(nested[0]), nested[0][:-len(MODEL_JSON)]
    raise ModelPackageError(f"{path} holds no {MODEL_JSON} (at its top level or in one top-level folder): "
                            "not a model package.")


# ---------------------------------------------------------------------------------------------------- writing

def write_package(folder, meta, weights, overwrite=False):
    """Write ``folder`` = model.json + weights.safetensors, atomically, and return the opened package.

    ``weights``: a state_dict, a ``checkpoints.LoadedCheckpoint`` or an ``nn.Module`` of the architecture in
    ``meta['network']`` (loaded strictly, so a mismatch is an error). ``meta['weights']`` is filled in here. The
    package is assembled in a hidden folder next to ``folder`` and renamed into place only once it validates.
    """
    folder = Path(folder).expanduser()
    if folder.exists() and not overwrite:
        raise ModelPackageError(f"{folder} already exists. Remove it, choose another id/folder, or overwrite it "
                                "(overwrite=True; CLI: --force).")
    meta = _canonical_order(dict(copy.deepcopy(meta), weights={"file": WEIGHTS_FILE, "sha256": "0" * 64}))
    validate_meta(meta, f"model.json for {folder}")
    ensemble = meta["network"].get("ensemble")
    checkpoint = None if ensemble else _as_checkpoint(weights, ModelPackage(folder, meta).architecture)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".partial", dir=folder.parent))
    try:
        from .checkpoints import save_safetensors

        header = {"model_id": meta["id"], "model_version": meta["version"]}
        if ensemble:   # a FoldEnsemble of network.ensemble networks (nnmamba.nnunetv2.ensemble)
            from .nnunetv2.ensemble import save_ensemble

            if len(getattr(weights, "fold", ())) != ensemble:
                raise ModelPackageError(f"network.ensemble is {ensemble}: the weights must be a FoldEnsemble of "
                                        f"{ensemble} networks.")
            save_ensemble(weights, staging / WEIGHTS_FILE, metadata=header)
        else:
            save_safetensors(checkpoint, staging / WEIGHTS_FILE, metadata=header)
        meta["weights"]["sha256"] = sha256_file(staging / WEIGHTS_FILE)
        (staging / MODEL_JSON).write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        ModelPackage.open(staging, verify=True)
        _move_into_place(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ModelPackage.open(folder, verify=False)


_KEY_ORDER = ("format_version", "id", "name", "version", "task", "description", "network", "weights", "input",
              "inference", "outputs", "provenance", "card")


def _canonical_order(meta):
    """The keys in the order a reader expects (what it is, what runs, how to feed it, what comes out)."""
    ordered = {key: meta[key] for key in _KEY_ORDER if key in meta}
    ordered.update((key, value) for key, value in meta.items() if key not in ordered)
    return ordered


def _as_checkpoint(weights, architecture):
    from .checkpoints import LoadedCheckpoint, extract_state_dict

    if isinstance(weights, LoadedCheckpoint):
        if tuple(weights.architecture) != tuple(architecture):
            raise ModelPackageError(f"The weights are a {weights.architecture} but model.json describes "
                                    f"{architecture}; they must match.")
        return weights
    if hasattr(weights, "state_dict") and callable(weights.state_dict):
        weights = weights.state_dict()
    state_dict = extract_state_dict(dict(weights), "weights")
    return LoadedCheckpoint(state_dict, architecture, None, None, "weights")


def _move_into_place(staging, folder):
    """Rename ``staging`` to ``folder``; an existing ``folder`` is kept aside until the rename succeeded."""
    backup = None
    if folder.exists():
        backup = folder.with_name(f".{folder.name}.{uuid.uuid4().hex[:8]}.old")
        folder.rename(backup)
    try:
        staging.rename(folder)
    except OSError:
        if backup is not None:
            backup.rename(folder)
        raise
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)


def zip_package(folder, zip_path=None):
    """Zip a (verified) package folder as ``<id>/model.json`` + weights; written atomically, then re-opened."""
    package = ModelPackage.open(folder, verify=True)
    if package.is_zip:
        raise ModelPackageError(f"{folder} is already a zip.")
    zip_path = Path(zip_path) if zip_path else package.root.with_name(package.root.name + ".zip")
    tmp = zip_path.with_name(zip_path.name + ".partial")
    try:
        with zipfile.ZipFile(tmp, "w") as archive:
            archive.write(package.root / MODEL_JSON, f"{package.id}/{MODEL_JSON}", zipfile.ZIP_DEFLATED)
            weights = package.meta["weights"]["file"]
            archive.write(package.root / weights, f"{package.id}/{weights}", zipfile.ZIP_STORED)
        ModelPackage.open(tmp, verify=True)
        os.replace(tmp, zip_path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return zip_path


# ------------------------------------------------------------------------------------------- finding packages

def bundled_resource_dir(name):
    """``Resources/<name>`` of the source tree (or next to the package in a Slicer install), if present."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parents[1] / "Resources" / name, here.parent / "Resources" / name):
        if candidate.is_dir():
            return candidate
    return None


def bundled_models_dir():
    """The bundled model packages (demo models and the catalog)."""
    return bundled_resource_dir("Models")


def user_models_dir():
    """Where imported models go: ``$NNMAMBA_MODELS_DIR``, else ``~/.nnmamba/models``."""
    return Path(os.environ.get(USER_MODELS_ENV) or Path.home() / ".nnmamba" / "models").expanduser()


def models_dirs(user_dir=None):
    """``[(origin, folder)]`` searched for packages: the user folder (``user_dir``, else :func:`user_models_dir`)
    first, then the bundled one."""
    dirs = [("user", Path(user_dir).expanduser() if user_dir else user_models_dir())]
    bundled = bundled_models_dir()
    if bundled is not None and bundled.resolve() != dirs[0][1].resolve():
        dirs.append(("bundled", bundled))
    return dirs


def find_packages(models_dir=None, problems=None):
    """Packages (folders with model.json, or .zip files) directly inside ``models_dir`` (default: all
    :func:`models_dirs`). Weights are not hashed here. Invalid ones are skipped; pass a list as ``problems`` to
    receive ``(path, message)`` for each."""
    dirs = [("custom", Path(models_dir))] if models_dir is not None else models_dirs()
    packages = []
    for origin, folder in dirs:
        if not folder.is_dir():
            continue
        for entry in sorted(folder.iterdir()):
            if entry.name.startswith(".") or not ((entry / MODEL_JSON).is_file() or entry.suffix == ".zip"):
                continue
            try:
                package = ModelPackage.open(entry, verify=False)
            except ModelPackageError as error:
                if problems is not None:
                    problems.append((entry, str(error)))
                continue
            package.origin = origin
            packages.append(package)
    return packages


def _version_key(version):
    return tuple(int(part) for part in re.findall(r"\d+", version.split("-")[0].split("+")[0]))


def resolve_model(id_or_path, verify=True):
    """A package from a path (folder, model.json or .zip) or an installed model id (highest version wins; the
    user folder before the bundled one)."""
    candidate = Path(str(id_or_path)).expanduser()
    if candidate.exists():
        return ModelPackage.open(candidate, verify)
    matches = [p for p in find_packages() if p.id == id_or_path]
    if not matches:
        installed = sorted({p.id for p in find_packages()})
        message = (f"No model package {id_or_path!r}: not a path, and no installed model has that id "
                   f"(searched {', '.join(str(d) for _, d in models_dirs())}). "
                   f"Installed: {', '.join(installed) if installed else 'none'}.")
        entry = next((e for e in _catalog_or_empty() if e["id"] == id_or_path), None)
        if entry is not None:
            message += (f" It is in the catalog: {entry['obtain']['instructions']} Then run "
                        f"`nnmamba models import <downloaded file> --catalog {entry['id']}`.")
        raise ModelPackageError(message)
    order = {"user": 0, "bundled": 1}
    best = max(matches, key=lambda p: (_version_key(p.version), -order.get(p.origin, 2)))
    return ModelPackage.open(best.root, verify)


# ------------------------------------------------------------------------------------------------------ catalog

def catalog_path():
    bundled = bundled_models_dir()
    return bundled / CATALOG_FILE if bundled is not None else None


def load_catalog(path=None):
    """The catalog entries (``Resources/Models/catalog.json``), validated; [] when there is no catalog file."""
    path = Path(path) if path is not None else catalog_path()
    if path is None or not path.is_file():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ModelPackageError(f"{path}: not valid JSON ({error}).") from None
    problems = schema_problems(data, "catalog")
    entries = _as_list(_as_dict(data).get("models"))
    problems += _duplicates([(i, _as_dict(e).get("id")) for i, e in enumerate(entries)], "$.models", "id")
    if problems:
        raise ModelPackageError(f"{path} is not a valid catalog ({len(problems)} problem(s)):\n"
                                + "\n".join(f"  - {p}" for p in problems), problems)
    return entries


def _catalog_or_empty():
    try:
        return load_catalog()
    except ModelPackageError:
        return []


def catalog_entry(model_id, path=None):
    """The catalog entry with id ``model_id`` (an error lists the known ids)."""
    entries = load_catalog(path)
    for entry in entries:
        if entry["id"] == model_id:
            return entry
    known = ", ".join(e["id"] for e in entries) or "none"
    raise ModelPackageError(f"{model_id!r} is not in the model catalog (known: {known}).")


@dataclass
class ModelRow:
    """One line of a model list (``nnmamba models list``, the NNMamba module's Models table)."""

    id: str
    name: str
    version: Optional[str]
    task: Optional[str]
    source: str                       # "user", "bundled", "catalog" or "invalid"
    installed: bool
    where: str                        # package path, or how to obtain a catalog model
    verified: Optional[bool] = None   # None: weights not hashed yet
    preset: Optional[str] = None      # catalog models: the preset to import them with
    inputs: List[str] = field(default_factory=list)
    problem: Optional[str] = None

    @property
    def state(self):
        """What a status column says."""
        if self.problem:
            return "invalid"
        if not self.installed:
            return "not installed"
        return {True: "verified", False: "modified"}.get(self.verified, "installed")


def package_row(package, source):
    return ModelRow(id=package.id, name=package.name, version=package.version, task=package.task, source=source,
                    installed=True, where=str(package.root),
                    inputs=[channel["name"] for channel in package.input["channels"]])


def list_models(user_dir=None, task=None, include_catalog=True, catalog=None):
    """Every model a user can pick, in one list for the CLI and the Slicer hub: installed packages (the user folder
    first, then the bundled ones), invalid package folders with their problem, then the catalog's models not
    installed yet. ``task`` keeps one task only."""
    rows = []
    for source, folder in models_dirs(user_dir):
        problems = []
        rows += [package_row(package, source) for package in find_packages(folder, problems)]
        rows += [ModelRow(id=path.name, name=path.name, version=None, task=None, source="invalid", installed=False,
                          where=str(path), problem=message) for path, message in problems]
    if include_catalog:
        installed = {row.id for row in rows}
        for entry in load_catalog(catalog):
            if entry["id"] in installed:
                continue
            obtain = entry["obtain"]
            rows.append(ModelRow(id=entry["id"], name=entry.get("name", entry["id"]), version=entry["version"],
                                 task=entry["task"], source="catalog", installed=False,
                                 where=obtain.get("url") or obtain["instructions"], preset=entry["preset"],
                                 inputs=list(entry.get("inputs", []))))
    return [row for row in rows if task is None or row.task == task]
