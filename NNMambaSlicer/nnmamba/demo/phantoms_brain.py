"""Adult brain T1-weighted MRI phantom for the demo classifier: "normal" or "atrophy" (as in NC vs AD, spec §8).

Atrophy is drawn as a continuous severity whose distributions overlap between the classes, and shows the way a
radiologist reads it: larger lateral and third ventricles, wider sulci, Sylvian fissures and extra-axial space, a
thinner cortex and smaller hippocampi with wider temporal horns. Head size, pose, contrast, bias field and noise vary
independently of the class, so that a classifier has to look at anatomy.
"""

from __future__ import annotations

import math

import numpy as np

from .phantoms_common import (
    HalfSpace,
    ObjectGrid,
    Phantom,
    Region,
    Solid,
    grid_size,
    obliquity_degrees,
    plain,
    random_tilt,
    rotation_about,
    rotation_degrees,
    synthesize_mr,
)

BRAIN_LABELS = {
    1: "csf",
    2: "gray_matter",
    3: "white_matter",
    4: "ventricles",
    5: "hippocampus",
    6: "deep_gray_matter",
    7: "cerebellum",
    8: "brainstem",
}
CLASS_NAMES = ("normal", "atrophy")

INF = math.inf
# tissue -> (T1-like signal relative to white matter, spread between phantoms, output label)
TISSUES = {
    "air": (0.0, 0.0, 0),
    "scalp": (0.75, 0.06, 0),
    "skull": (0.08, 0.02, 0),
    "csf": (0.15, 0.03, 1),
    "gray_matter": (0.55, 0.03, 2),
    "white_matter": (1.0, 0.0, 3),
    "ventricle": (0.13, 0.03, 4),
    "hippocampus": (0.58, 0.03, 5),
    "deep_gray_matter": (0.72, 0.04, 6),
    "cerebellar_cortex": (0.57, 0.03, 7),
    "cerebellar_white_matter": (0.92, 0.03, 7),
    "brainstem": (0.85, 0.03, 8),
}
TISSUE_IDS = {name: index for index, name in enumerate(TISSUES)}


def brain_atrophy(seed: int, atrophy=None, size=(64, 64, 64), spacing=None) -> Phantom:
    """A brain MRI phantom drawn from ``seed``; ``label`` is 1 for atrophy, 0 for normal (drawn with equal odds when
    ``atrophy`` is None). ``size`` is in voxels (I, J, K); by default the spacing fits the head (about 3 mm at 64)."""
    rng = np.random.default_rng(seed)
    atrophy = bool(rng.random() < 0.5) if atrophy is None else bool(atrophy)
    severity = float(np.clip(rng.normal(0.55, 0.17) if atrophy else rng.normal(0.2, 0.14), 0.0, 1.0))
    anatomy, steps, head = _anatomy(rng, severity)

    anatomy_rotation, residual = random_tilt(rng, 10.0), random_tilt(rng, 8.0)
    size = grid_size(size)
    extent = np.array([2 * np.linalg.norm(np.asarray(head.radii) * residual[:, axis]) for axis in range(3)])
    isotropic = np.max(extent / size) * rng.uniform(1.05, 1.15)
    spacing = isotropic * rng.uniform(0.95, 1.0, 3) if spacing is None else np.asarray(spacing, dtype=float)
    centre = residual @ (rng.uniform(-0.4, 0.4, 3) * np.maximum(size * spacing - extent, 0))
    grid = ObjectGrid(size, spacing, anatomy_rotation, rng.uniform(-20, 20, 3), residual, centre)

    image, labels, drawn = synthesize_mr(rng, grid, steps, TISSUES, TISSUE_IDS, (0.05, 0.2), (300, 1000),
                                          (0.015, 0.04))
    voxel_ml = float(np.prod(grid.geometry.spacing)) / 1000
    info = {
        "kind": "brain_atrophy",
        "seed": seed,
        "class_name": CLASS_NAMES[int(atrophy)],
        "severity": severity,
        "size": size.tolist(),
        "spacing_mm": grid.geometry.spacing,
        "object_to_lps": grid.object_to_lps(),
        "anatomy_tilt_deg": rotation_degrees(anatomy_rotation),
        "residual_rotation_deg": rotation_degrees(residual),
        "obliquity_deg": obliquity_degrees(grid.geometry.direction),
        "volumes_ml": {
            name: float(np.count_nonzero(labels == value)) * voxel_ml for value, name in BRAIN_LABELS.items()
        },
        **drawn,
        **anatomy,
    }
    return Phantom(image, grid.geometry, labels=labels, label=int(atrophy), info=plain(info))


def _sulcal_field(rng, wavelength_mm):
    """A smooth random field (sum of plane waves) whose near-zero set is a network of sheets: the sulci."""
    directions = rng.normal(size=(16, 3))
    frequencies = (2 * math.pi / wavelength_mm) * directions / np.linalg.norm(directions, axis=1, keepdims=True)
    phases = rng.uniform(0, 2 * math.pi, 16)
    norm = math.sqrt(2 / 16)

    def field(x, y, z):
        total = 0.0
        for (fx, fy, fz), phase in zip(frequencies.astype(np.float32), phases):
            total = total + np.cos(fx * x + fy * y + fz * z + np.float32(phase))
        return total * np.float32(norm)

    # gradient size of such a field ~ frequency: a sheet |field| < w is about 2 w / frequency wide
    return field, 2 * math.pi / wavelength_mm


def _anatomy(rng, s):
    """Paint steps and drawn sizes for atrophy severity ``s`` in [0, 1], and the outer head shape."""
    head_scale = float(np.clip(rng.normal(1.0, 0.05), 0.88, 1.12))
    h = head_scale
    intracranial = Solid((0, 0, 0), np.array([68, 86, 60]) * h)
    extra_axial = 1.5 + 4.5 * s
    cortex = 3.0 - 0.9 * s
    brain = intracranial.grown(-extra_axial)
    head = intracranial.grown(6 + rng.uniform(4, 7))
    steps = [
        ("scalp", head, (), ()),
        ("skull", intracranial.grown(6), (), ()),
        ("csf", intracranial, (), ()),
        ("gray_matter", brain, (), ()),
        ("white_matter", brain.grown(-cortex), (), ()),
    ]

    field, gradient = _sulcal_field(rng, rng.uniform(18, 26))
    sulcal_width = 0.8 + 3.5 * s
    band = (brain,)
    core = (brain.grown(-(cortex + 12)),)
    gyral_gray = Region(lambda x, y, z: np.abs(field(x, y, z)) < gradient * (sulcal_width / 2 + 1.6 * cortex))
    sulci = Region(lambda x, y, z: np.abs(field(x, y, z)) < gradient * sulcal_width / 2)
    steps += [("gray_matter", gyral_gray, core, band), ("csf", sulci, core, band)]
    fissure = Solid((0, 0, 0), (0.8 + 1.5 * s, INF, INF))
    steps.append(("csf", fissure, (), (brain, HalfSpace((0, 0, 22 * h), (0, 0, -1)))))
    steps.append(("csf", fissure, (), (brain, HalfSpace((0, 40 * h, 0), (0, -1, 0)))))
    for side in (-1, 1):
        sylvian = Solid(
            (side * (brain.radii[0] - 10), -10 * h, -5 * h),
            (14, 25 * h, 2 + 3 * s),
            rotation_about((0, 1, 0), side * 20),
        )
        steps.append(("csf", sylvian, (), (brain,)))

    widen = 1 + 2 * s
    for side in (-1, 1):
        steps.append(("deep_gray_matter", Solid((side * 15 * h, 2 * h, 3 * h), np.array([10, 17, 10]) * h), (), ()))
        hippocampus = Solid(
            (side * 28 * h, 8 * h, -20 * h),
            np.array([6, 18, 5]) * h * (1 - 0.35 * s, 1, 1 - 0.35 * s),
            rotation_about((0, 0, 1), -side * 15),
        )
        steps.append(("hippocampus", hippocampus, (), ()))
        horns = (
            Solid(
                (side * (4 + 3.5 * s) * h, 2 * h, 16 * h),
                (3.5 * widen * h, 30 * h, 5 * (1 + 0.7 * s) * h),
                rotation_about((0, 0, 1), -side * 8),
            ),
            Solid((side * (5 + 3 * s) * h, -26 * h, 12 * h), (4 * widen * h, 11 * h, 7 * (1 + 0.5 * s) * h)),
            Solid((side * (14 + 2 * s) * h, 30 * h, 8 * h), (4 * widen * h, 12 * h, 6 * (1 + 0.5 * s) * h)),
            Solid(hippocampus.point((side * 4 * h, 0, 5 * h)), (2 + 4 * s, 15 * h, 2 + 3 * s), hippocampus.rotation),
        )
        steps.append(("ventricle", horns, (), ()))
    steps.append(("ventricle", Solid((0, 2 * h, 2 * h), (1 + 3 * s, 12 * h, 9 * h)), (), ()))

    centre = np.array([0, 42, -34]) * h
    steps += [
        ("csf", Solid(centre, np.array([46, 26, 22]) * h), (), (intracranial,)),
        (
            "brainstem",
            Solid(np.array([0, 14, -30]) * h, np.array([11, 11, 24]) * h, rotation_about((1, 0, 0), 15)),
            (),
            (intracranial,),
        ),
        ("cerebellar_cortex", Solid(centre, np.array([42, 22, 18]) * h * (1 - 0.1 * s)), (), (brain,)),
        ("cerebellar_white_matter", Solid(centre, np.array([21, 11, 9]) * h), (), ()),
        ("ventricle", Solid(np.array([0, 24, -30]) * h, np.array([5, 3, 5]) * h), (), ()),
    ]
    anatomy = {
        "head_scale": head_scale,
        "extra_axial_csf_mm": extra_axial,
        "cortical_thickness_mm": cortex,
        "sulcal_width_mm": sulcal_width,
        "ventricle_widening": widen,
    }
    return anatomy, steps, head
