"""What an import preset is: the task metadata an official checkpoint does not carry (labels, landmarks, classes,
input preparation), merged with what nnU-Net plans and explicit overrides supply.

Priority for every input setting: explicit override > the checkpoint's plans > the preset's default. A setting the
preset has no safe default for (AMOS CT constants) is an error that says how to supply it.
"""

from __future__ import annotations

import colorsys

from ..modelpkg import ModelPackageError

GENERAL_ANATOMY = "Segmentation category and type - 3D Slicer General Anatomy list"
DICOM_MASTER = "Segmentation category and type - DICOM master list"
ANATOMIC_CONTEXT = "Anatomic codes - DICOM master list"

OFFICIAL_SOURCE = ("https://github.com/lhaof/nnMamba (weights: Google Drive folder "
                   "https://drive.google.com/drive/folders/1wYHVSvSU-wGJdU62WZ0B5rfv_bZ68bJl)")
OFFICIAL_LICENSE = ("NOASSERTION: the nnMamba repository states no license for code or weights; "
                    "ask the authors before any use beyond research")
NNMAMBA_CITATION = ("Gong H, Kang L, Wang Y, Wang Y, Wan X, Wu X, Li H. nnMamba: 3D Biomedical Image Segmentation, "
                    "Classification and Landmark Detection with State Space Model. ISBI 2025. arXiv:2402.03526")

# Keyword overrides an import accepts (CLI: --spacing, --patch-size, --ct-constants, --channel-names ...).
OVERRIDES = ("name", "version", "description", "spacing", "patch_size", "ct_constants", "channel_names")


class ModelImportError(ModelPackageError):
    """A checkpoint that cannot be turned into a model package as asked, with what to do instead."""


def terminology_entry(category, type_code, modifier=None, context=GENERAL_ANATOMY):
    """A Slicer TerminologyEntry string from (scheme, value, meaning) codes; no anatomic region."""
    def fmt(code):
        return "^".join(code) if code else "^^"

    return "~".join([context, fmt(category), fmt(type_code), fmt(modifier), ANATOMIC_CONTEXT, "^^", "^^"])


def rgb(red, green, blue):
    """0..255 (the terminology lists' recommendedDisplayRGBValue) -> 0..1 (Slicer segment colour)."""
    return [round(red / 255, 4), round(green / 255, 4), round(blue / 255, 4)]


def distinct_colors(count):
    """``count`` well separated colours (golden-ratio hue steps), the same for every call."""
    colors = []
    for i in range(count):
        r, g, b = colorsys.hsv_to_rgb((0.08 + i * 0.618034) % 1.0, 0.65, 0.92)
        colors.append([round(r, 4), round(g, 4), round(b, 4)])
    return colors


def generic_labels(count):
    """Labels 'Label 1'..'Label N' with distinct colours, for models no preset describes."""
    return [{"value": i + 1, "name": f"Label {i + 1}", "color": color}
            for i, color in enumerate(distinct_colors(count))]


def describe_architecture(arch):
    kind = "classifier" if arch.network == "NNMambaEncoder" else "segmentation/landmark network"
    return (f"an {arch.network} {kind} (variant {arch.variant}, {arch.in_channels} input(s), "
            f"{arch.num_classes} output(s), width {arch.channels})")


def _vector3(value, what, integer=False):
    try:
        values = [int(v) if integer else float(v) for v in value]
    except (TypeError, ValueError):
        values = []
    if len(values) != 3:
        raise ModelImportError(f"{what} needs three numbers (I J K), got {value!r}.")
    return values


class Preset:
    """Base: fixed architecture expectations plus hooks that produce model.json's input/outputs."""

    name = ""
    title = ""
    task = ""
    summary = ""
    network_class = "NNMambaSeg"
    variants = ("miccss", "nnunet")
    in_channels = None   # None: any
    out_channels = None
    default_id = ""
    default_name = ""
    uses_plans = False   # whether nnU-Net plans mean anything for this preset
    source = OFFICIAL_SOURCE
    license = OFFICIAL_LICENSE
    citation = NNMAMBA_CITATION
    card = ""

    def mismatches(self, arch):
        """Why ``arch`` does not fit this preset ([] when it does)."""
        problems = []
        if arch.network != self.network_class:
            problems.append(f"network {self.network_class}, not {arch.network}")
        elif arch.variant not in self.variants:
            problems.append(f"variant {' or '.join(self.variants)}, not {arch.variant}")
        if self.in_channels is not None and arch.in_channels != self.in_channels:
            problems.append(f"{self.in_channels} input channel(s), not {arch.in_channels}")
        if self.out_channels is not None and arch.num_classes != self.out_channels:
            problems.append(f"{self.out_channels} output channel(s), not {arch.num_classes}")
        return problems

    def expectation(self):
        parts = [f"an {self.network_class} ({'/'.join(self.variants)})"]
        if self.in_channels is not None:
            parts.append(f"{self.in_channels} input(s)")
        if self.out_channels is not None:
            parts.append(f"{self.out_channels} output(s)")
        return ", ".join(parts)

    def build_meta(self, arch, plans=None, overrides=None):
        """``(meta, notes)``: model.json without weights, and what was assumed (for the user and provenance)."""
        overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
        unknown = sorted(set(overrides) - set(OVERRIDES))
        if unknown:
            raise ModelImportError(f"Unknown import option(s) {', '.join(unknown)}; known: {', '.join(OVERRIDES)}.")
        notes = []
        if plans and not self.uses_plans:
            notes.append(f"nnU-Net plans were given but preset {self.name!r} does not use them; ignored.")
            plans = None
        meta = {
            "format_version": 1,
            "id": self.default_id,
            "name": overrides.get("name") or self.default_name,
            "version": overrides.get("version") or "1.0.0",
            "task": self.task,
            "description": overrides.get("description") or self.summary,
            "network": {"class": arch.network, "variant": arch.variant, "in_channels": arch.in_channels,
                        "out_channels": arch.num_classes, "channels": arch.channels},
            "input": self.input_fields(arch, plans or {}, overrides, notes),
        }
        inference = self.inference()
        if inference:
            meta["inference"] = inference
        meta["outputs"] = self.outputs(arch, plans or {}, notes)
        meta["provenance"] = {"source": self.source, "license": self.license, "citation": self.citation,
                              "preset": self.name}
        if self.card:
            meta["card"] = self.card
        return meta, notes

    def input_fields(self, arch, plans, overrides, notes):
        raise NotImplementedError

    def outputs(self, arch, plans, notes):
        raise NotImplementedError

    def inference(self):
        return {}


class SegmentationPreset(Preset):
    """nnU-Net-trained segmentation: spacing, patch size, normalisation and channel names come from the plans."""

    task = "segmentation"
    uses_plans = True
    default_channels = (("image", "other"),)   # (name, modality) per input channel
    default_spacing = None
    default_patch = None
    default_normalization = None
    labels = ()
    regions = ()

    def input_fields(self, arch, plans, overrides, notes):
        missing = []
        names = overrides.get("channel_names") or plans.get("channel_names")
        if not names:
            names = [name for name, _ in self.default_channels]
            if len(names) != arch.in_channels:   # generic preset, no plans: name the inputs by position
                names = [f"image {i + 1}" for i in range(arch.in_channels)]
        if len(names) != arch.in_channels:
            raise ModelImportError(f"{len(names)} channel name(s) ({', '.join(map(str, names))}) for a network "
                                   f"with {arch.in_channels} input(s); give one name per input.")
        channels = [{"name": str(name), "modality": self.modality(i, str(name))} for i, name in enumerate(names)]
        spacing = self._choose("spacing", overrides, plans, self.default_spacing, notes, missing,
                               "target spacing (--spacing X Y Z, mm)")
        patch = self._choose("patch_size", overrides, plans, self.default_patch, notes, missing,
                             "patch size (--patch-size X Y Z, multiples of 16)")
        normalization = self._normalization(overrides, plans, notes, missing)
        if missing:
            raise ModelImportError(
                f"Preset {self.name!r} needs the nnU-Net plans the model was trained with, for: {'; '.join(missing)}. "
                "Give the plans (--plans nnUNetPlansv2.1_plans_3D.pkl, or the plans.pkl of the nnU-Net result "
                "folder; a <checkpoint>.pkl next to the checkpoint is read automatically), or give the values "
                "listed above explicitly.")
        return {
            "channels": channels,
            "orientation": "as-stored",
            "resampling": {"mode": "spacing", "spacing": _vector3(spacing, "spacing")},
            "normalization": normalization,
            "patch_size": _vector3(patch, "patch size", integer=True),
        }

    def modality(self, index, name):
        if index < len(self.default_channels) and self.default_channels[index][1] != "other":
            return self.default_channels[index][1]
        return guess_modality(name)

    def _choose(self, key, overrides, plans, default, notes, missing, how):
        if overrides.get(key) is not None:
            return overrides[key]
        if plans.get(key) is not None:
            return plans[key]
        if default is not None:
            notes.append(f"No plans: assumed {key.replace('_', ' ')} {list(default)} (preset {self.name} default); "
                         "give the plans to use the trained value.")
            return default
        missing.append(how)
        return None

    def _normalization(self, overrides, plans, notes, missing):
        constants = overrides.get("ct_constants")
        if constants is not None:
            values = [float(v) for v in constants]
            if len(values) != 4:
                raise ModelImportError(f"CT constants are LOW HIGH MEAN STD (4 numbers), got {constants!r}.")
            return {"scheme": "ct", "clip": values[:2], "mean": values[2], "std": values[3]}
        if plans.get("normalization") is not None:
            return plans["normalization"]
        if self.default_normalization is not None:
            return dict(self.default_normalization)
        missing.append("CT normalisation constants (--ct-constants LOW HIGH MEAN STD: the 0.5/99.5 foreground "
                       "percentiles, mean and sd of the training set)")
        return None

    def outputs(self, arch, plans, notes):
        outputs = {"labels": [dict(label) for label in self.labels]}
        if self.regions:
            outputs["regions"] = [dict(region) for region in self.regions]
        return outputs


class GenericSegmentation(SegmentationPreset):
    """An nnU-Net result folder no preset describes: labels 'Label 1'.. with distinct colours; all else from plans."""

    name = "generic-segmentation"
    title = "Any nnU-Net v1 segmentation model (generic label names)"
    summary = "nnMamba segmentation model imported from an nnU-Net v1 result folder."
    default_id = "nnunet-model"
    default_name = "nnMamba segmentation model"
    source = "nnU-Net v1 result folder"
    license = "unknown"
    citation = NNMAMBA_CITATION

    def outputs(self, arch, plans, notes):
        labels = generic_labels(arch.num_classes - 1)   # nnU-Net v1 plans hold class numbers, not names
        notes.append("No preset: labels are named generically and coloured automatically; edit model.json to "
                     "give names, colours and terminology.")
        return {"labels": labels}


def guess_modality(name):
    """A DICOM modality for an nnU-Net channel name ('CT', 'T1w', 'FLAIR', 'ADC' ...)."""
    text = str(name).upper()
    if text.startswith("CT"):
        return "CT"
    if text.startswith("PET") or text == "PT":
        return "PT"
    if text in ("US", "ULTRASOUND"):
        return "US"
    markers = ("MR", "T1", "T2", "FLAIR", "ADC", "DWI", "PD", "SWI", "BOLD", "DIXON")
    return "MR" if any(marker in text for marker in markers) else "other"
