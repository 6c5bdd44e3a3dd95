"""Fetal brain MRI phantom (T2-like, mid-gestation) with the six cerebellar landmarks of the LFC task (spec §7).

The fetus lies any way in the mother, so the head's pose in scanner space is fully oblique; the slices follow the
head with a planning error, so the brain also appears turned in the voxel array. Landmarks are the axis ends of the
shapes the cerebellum is made of, hence exactly on its border: TCD1/TCD2 the right/left extremes of the cerebellar
hemispheres, HDV1/HDV2 the superior/inferior ends of the vermis, ADV1/ADV2 its anterior/posterior ends (ADV1 is
where the fourth ventricle's roof meets it).
"""

from __future__ import annotations

import math

import numpy as np

from .phantoms_common import (
    HalfSpace,
    ObjectGrid,
    Phantom,
    Solid,
    grid_size,
    obliquity_degrees,
    plain,
    random_rotation,
    random_tilt,
    rotation_about,
    rotation_degrees,
    synthesize_mr,
)

FETAL_LABELS = {
    1: "external_csf",
    2: "gray_matter",
    3: "white_matter",
    4: "ventricles",
    5: "cerebellar_hemispheres",
    6: "deep_gray_matter",
    7: "brainstem",
    8: "vermis",
}
LANDMARK_NAMES = ("TCD1", "TCD2", "HDV1", "HDV2", "ADV1", "ADV2")

INF = math.inf
# tissue -> (T2-like signal relative to amniotic fluid, spread between phantoms, output label)
TISSUES = {
    "amniotic_fluid": (1.0, 0.0, 0),
    "maternal_tissue": (0.42, 0.05, 0),
    "scalp": (0.55, 0.05, 0),
    "skull": (0.12, 0.03, 0),
    "external_csf": (0.95, 0.03, 1),
    "cortex": (0.36, 0.03, 2),
    "white_matter": (0.62, 0.04, 3),
    "ventricle": (0.97, 0.02, 4),
    "cerebellum": (0.46, 0.03, 5),
    "deep_gray_matter": (0.33, 0.03, 6),
    "brainstem": (0.40, 0.03, 7),
    "vermis": (0.30, 0.03, 8),
}
TISSUE_IDS = {name: index for index, name in enumerate(TISSUES)}


def fetal_brain(seed: int, size=(96, 96, 96), spacing=None, gestational_weeks=None) -> Phantom:
    """A fetal brain MRI phantom drawn from ``seed``, with ``landmarks`` in LPS mm in the order of LANDMARK_NAMES.
    ``size`` is in voxels (I, J, K). By default the age is 18-22 weeks and the spacing fits the skull to the grid
    (about 0.6-0.85 mm for the default size; a smaller grid gets coarser voxels)."""
    rng = np.random.default_rng(seed)
    weeks = rng.uniform(18, 22) if gestational_weeks is None else float(gestational_weeks)
    if not 16 <= weeks <= 40:
        raise ValueError(f"gestational_weeks must be between 16 and 40, got {gestational_weeks}.")
    anatomy, steps, landmarks, skull = _anatomy(rng, weeks)

    residual = random_tilt(rng, 20.0)
    for _ in range(100):  # the fetus lies any way; keep the acquisition clearly oblique
        anatomy_rotation = random_rotation(rng)
        if obliquity_degrees(anatomy_rotation @ residual) >= 15:
            break
    size = grid_size(size)
    # the field of view holds the skull (as in a brain-centred reconstruction) with a margin; the spacing
    # is near-isotropic so that the head keeps its shape in the voxel array
    extent = np.array([2 * np.linalg.norm(np.asarray(skull.radii) * residual[:, axis]) for axis in range(3)])
    isotropic = np.max(extent / size) * rng.uniform(1.08, 1.2)
    spacing = isotropic * rng.uniform(0.93, 1.0, 3) if spacing is None else np.asarray(spacing, dtype=float)
    slack = np.maximum(size * spacing - extent, 0)
    centre = residual @ (rng.uniform(-0.4, 0.4, 3) * slack)
    grid = ObjectGrid(size, spacing, anatomy_rotation, rng.uniform(-80, 80, 3), residual, centre)

    image, labels, drawn = synthesize_mr(rng, grid, steps, TISSUES, TISSUE_IDS, (0.1, 0.25), (400, 1000),
                                          (0.02, 0.05))
    landmarks_lps = {name: grid.to_lps(point).tolist() for name, point in landmarks.items()}
    info = {
        "kind": "fetal_brain",
        "seed": seed,
        "size": size.tolist(),
        "spacing_mm": grid.geometry.spacing,
        "gestational_weeks": weeks,
        "object_to_lps": grid.object_to_lps(),
        "residual_rotation_deg": rotation_degrees(residual),
        "obliquity_deg": obliquity_degrees(grid.geometry.direction),
        "landmarks_object_mm": landmarks,
        **drawn,
        **anatomy,
    }
    return Phantom(image, grid.geometry, labels=labels, landmarks=landmarks_lps, info=plain(info))


def _anatomy(rng, weeks):
    """Paint steps, drawn sizes, landmarks (object frame) and the skull's outline, from a brain size and a
    transverse cerebellar diameter that grow with gestational age."""
    jitter = rng.uniform(0.95, 1.05, 3)
    bpd, ofd = (2.7 * weeks - 9) * jitter[0], (3.3 * weeks - 9) * jitter[1]
    ax, ay, az = bpd / 2, ofd / 2, 0.85 * bpd / 2 * jitter[2]
    tcd = (weeks + 0.5 * max(weeks - 22, 0)) * rng.uniform(0.92, 1.08)
    csf_width, skull, scalp = rng.uniform(1.5, 3.0), rng.uniform(1.2, 1.8), rng.uniform(1.5, 2.5)

    brain = Solid((0, 0, 0), (ax, ay, az))
    intracranial = brain.grown(csf_width)
    head = intracranial.grown(skull + scalp)
    direction = rng.normal(size=3)
    direction /= np.linalg.norm(direction)
    wall_distance = np.linalg.norm(np.asarray(head.radii) * direction) + rng.uniform(2, 12)
    steps = [
        ("maternal_tissue", HalfSpace(wall_distance * direction, -direction), (), ()),
        ("scalp", head, (), ()),
        ("skull", intracranial.grown(skull), (), ()),
        ("external_csf", intracranial, (), ()),
        ("cortex", brain, (), ()),
        ("white_matter", brain.grown(-rng.uniform(1.2, 1.8)), (), ()),
    ]
    for side in (-1, 1):
        steps.append(
            (
                "deep_gray_matter",
                Solid((side * 0.22 * ax, -0.02 * ay, -0.12 * az), (0.15 * ax, 0.22 * ay, 0.2 * az)),
                (),
                (),
            )
        )

    cerebellum_centre = np.array([0, 0.55 * ay, -0.5 * az])
    fissure = Solid((0, 0, 0), (0.5, INF, INF))
    steps.append(("external_csf", fissure, (), (brain, HalfSpace((0, 0, 0.35 * az), (0, 0, -1)))))
    steps.append(("external_csf", fissure, (), (brain, HalfSpace((0, 0.45 * ay, 0), (0, -1, 0)))))

    atrial_width = rng.uniform(5, 9)
    for side in (-1, 1):
        body = Solid(
            (side * (0.2 * ax + atrial_width / 4), 0.05 * ay, 0.12 * az),
            (atrial_width / 2, 0.55 * ay, 0.16 * az),
            rotation_about((0, 0, 1), -side * 12),
        )
        frontal_horn = Solid((side * 0.15 * ax, -0.35 * ay, 0.15 * az), (0.4 * atrial_width, 0.25 * ay, 0.14 * az))
        steps.append(("ventricle", (body, frontal_horn), (), ()))
    steps.append(("ventricle", Solid((0, 0, -0.08 * az), (0.8, 0.2 * ay, 0.18 * az)), (), ()))

    # posterior fossa: CSF around the cerebellum (cisterna magna behind it), brainstem in front of the 4th ventricle
    hemisphere_radii = [np.array([0.3, 0.28, 0.26]) * tcd * rng.uniform(0.97, 1.03) for _ in range(2)]
    largest = np.maximum(*hemisphere_radii)
    fossa = Solid(cerebellum_centre + (0, 1.5, -1), (0.2 * tcd + largest[0] + 2.5, largest[1] + 3.5, largest[2] + 3))
    steps.append(("external_csf", fossa, (), (intracranial,)))
    height, depth = 0.5 * tcd * rng.uniform(0.9, 1.1), 0.38 * tcd * rng.uniform(0.9, 1.1)
    vermis_rotation = rotation_about((1, 0, 0), rng.uniform(-12, 12))
    vermis = Solid(
        cerebellum_centre + (0, 0.06 * tcd, 0.02 * tcd), (0.12 * tcd, depth / 2, height / 2), vermis_rotation
    )
    fourth_radii = np.array([0.12, 0.08, 0.12]) * tcd
    fourth_ventricle = Solid(vermis.point((0, -depth / 2 - fourth_radii[1], 0)), fourth_radii, vermis_rotation)
    brainstem_centre = fourth_ventricle.point((0, -fourth_radii[1] - 0.17 * tcd, 0)) + (0, 0, 0.1 * tcd)
    brainstem = Solid(brainstem_centre, np.array([0.2, 0.17, 0.55]) * tcd, rotation_about((1, 0, 0), 20))
    steps.append(("brainstem", brainstem, (), (intracranial,)))

    hemispheres = []
    for side, radii in zip((-1, 1), hemisphere_radii):
        hemispheres.append(Solid(cerebellum_centre + (side * 0.2 * tcd, 0, 0), tuple(radii)))
        steps.append(("cerebellum", hemispheres[-1], (), ()))
    steps += [
        ("external_csf", vermis.grown(0.7), (), (fossa,)),
        ("vermis", vermis, (), ()),
        ("ventricle", fourth_ventricle, (), ()),
    ]

    landmarks = {
        "TCD1": hemispheres[0].point((-hemispheres[0].radii[0], 0, 0)),  # the fetus's right
        "TCD2": hemispheres[1].point((hemispheres[1].radii[0], 0, 0)),
        "HDV1": vermis.point((0, 0, height / 2)),
        "HDV2": vermis.point((0, 0, -height / 2)),
        "ADV1": vermis.point((0, -depth / 2, 0)),
        "ADV2": vermis.point((0, depth / 2, 0)),
    }
    anatomy = {
        "biparietal_diameter_mm": bpd,
        "occipitofrontal_diameter_mm": ofd,
        "transverse_cerebellar_diameter_mm": float(np.linalg.norm(landmarks["TCD2"] - landmarks["TCD1"])),
        "vermis_height_mm": height,
        "vermis_anteroposterior_diameter_mm": depth,
        "atrial_width_mm": atrial_width,
        "extra_axial_csf_mm": csf_width,
    }
    return anatomy, steps, landmarks, intracranial.grown(skull)
