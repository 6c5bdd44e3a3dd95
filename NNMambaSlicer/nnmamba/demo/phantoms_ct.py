"""Abdomen-like contrast CT phantom (portal venous phase) with a ground-truth label map of six structures.

Coarse on purpose (a few millimetres per voxel) so that a demo segmentation model trains on two CPU cores, but with
real-world sizes in millimetres and Hounsfield units, so that it looks like an abdomen and its preprocessing (spacing,
CT windowing) is exercised as for a patient. Unlabelled look-alikes (ribs, discs, IVC, psoas, stomach, gallbladder,
bowel gas) make the model learn shape and place, not only intensity.
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
    correlated_noise,
    gaussian_blur,
    grid_size,
    obliquity_degrees,
    plain,
    random_tilt,
    rotation_about,
    rotation_degrees,
    rotation_to,
)

CT_LABELS = {1: "liver", 2: "spleen", 3: "kidney_right", 4: "kidney_left", 5: "aorta", 6: "vertebrae"}

INF = math.inf
# tissue name -> (mean HU, spread of that mean between phantoms, output label)
TISSUES = {
    "air": (-1000, 0, 0),
    "fat": (-100, 10, 0),
    "muscle": (50, 5, 0),
    "bowel": (30, 8, 0),
    "gas": (-900, 40, 0),
    "fluid": (8, 4, 0),
    "liver": (105, 10, 1),
    "spleen": (115, 10, 2),
    "kidney_right": (165, 15, 3),
    "kidney_left": (165, 15, 4),
    "aorta": (170, 25, 5),
    "ivc": (130, 20, 0),
    "cancellous_bone": (230, 40, 6),
    "cortical_bone": (700, 80, 6),
    "vertebral_arch": (450, 60, 6),
    "disc": (85, 10, 0),
    "spinal_canal": (25, 5, 0),
    "rib": (500, 80, 0),
}
TISSUE_IDS = {name: index for index, name in enumerate(TISSUES)}


def abdomen_ct(seed: int, size=(80, 80, 48), spacing=None) -> Phantom:
    """An abdominal CT phantom drawn from ``seed``. ``size`` is in voxels, I J K order (SimpleITK's GetSize); by
    default the in-plane spacing fits the body (about 4-5 mm) and slices are thicker: 220-300 mm of coverage / K, and
    at least 1.15 times the in-plane spacing."""
    rng = np.random.default_rng(seed)
    anatomy, steps = _anatomy(rng)
    size = tuple(grid_size(size).tolist())
    if spacing is None:
        in_plane = 2 * anatomy["body_radii_mm"][0] * rng.uniform(1.08, 1.2) / max(size[0], size[1])
        spacing = (in_plane, in_plane, max(rng.uniform(220, 300) / size[2], in_plane * rng.uniform(1.15, 1.4)))
    anatomy_rotation, residual = random_tilt(rng, 8.0), random_tilt(rng, 5.0)
    anatomy_origin = rng.uniform([-30, -30, -300], [30, 30, 0])
    centre = rng.uniform([-10, -10, 0], [10, 10, 25])
    grid = ObjectGrid(size, spacing, anatomy_rotation, anatomy_origin, residual, centre)

    tissues = np.zeros(grid.shape, dtype=np.uint8)
    for name, include, exclude, within in steps:
        grid.paint(tissues, TISSUE_IDS[name], include, exclude, within)

    hounsfield = {
        name: mean + spread * np.clip(rng.standard_normal(), -2, 2) for name, (mean, spread, _) in TISSUES.items()
    }
    hounsfield["kidney_left"] = hounsfield["kidney_right"]
    lookup = np.array([hounsfield[name] for name in TISSUES], dtype=np.float32)
    image = gaussian_blur(lookup[tissues], (0.5, 0.5, 0.45))
    noise_hu = rng.uniform(8, 18)
    image = image + correlated_noise(rng, image.shape, noise_hu)
    image = np.clip(np.round(image), -1024, 3071).astype(np.float32)

    to_label = np.array([label for _, _, label in TISSUES.values()], dtype=np.uint8)
    labels = to_label[tissues]
    voxel_ml = float(np.prod(grid.geometry.spacing)) / 1000
    info = {
        "kind": "abdomen_ct",
        "seed": seed,
        "size": size,
        "spacing_mm": grid.geometry.spacing,
        "object_to_lps": grid.object_to_lps(),
        "anatomy_tilt_deg": rotation_degrees(anatomy_rotation),
        "residual_rotation_deg": rotation_degrees(residual),
        "obliquity_deg": obliquity_degrees(grid.geometry.direction),
        "hounsfield": hounsfield,
        "noise_hu": noise_hu,
        "volumes_ml": {name: float(np.count_nonzero(labels == value)) * voxel_ml for value, name in CT_LABELS.items()},
        **anatomy,
    }
    return Phantom(image, grid.geometry, labels=labels, info=plain(info))


def _anatomy(rng):
    """Paint steps (tissue, include, exclude, within) in painting order, later ones on top, and the drawn sizes."""
    a = rng.uniform(140, 170)
    b = a * rng.uniform(0.68, 0.8)
    fat = rng.uniform(12, 35)
    wall = rng.uniform(7, 12)
    body = Solid((0, 0, 0), (a, b, INF), power=(2.5, 2.5, 2))
    muscle_wall = Solid((0, 0, 0), (a - fat, b - 0.8 * fat, INF), power=(2.4, 2.4, 2))
    ca, cb = a - fat - wall, b - 0.8 * fat - wall
    cavity = Solid((0, 0, 0), (ca, cb, INF), power=(2.3, 2.3, 2))
    steps = [("fat", body, (), ()), ("muscle", muscle_wall, (), ()), ("fat", cavity, (), ())]

    # bowel loops in visceral fat, some with gas on their anterior (upper: the patient is supine) side
    for _ in range(rng.integers(18, 30)):
        centre = rng.uniform([-0.75 * ca, -cb + 10, -150], [0.75 * ca, 0.3 * cb, 30])
        loop = Solid(centre, rng.uniform(10, 22, 3), random_tilt(rng, 90))
        steps.append(("bowel", loop, (), (cavity,)))
        if rng.random() < 0.3:
            gas = Solid(loop.center - np.array([0, 0.5 * min(loop.radii), 0]), np.array(loop.radii) * 0.45)
            steps.append(("gas", gas, (), (cavity, loop)))

    # stomach with an air cap on its anterior (upper, the patient is supine) side; the liver is painted over it
    stomach = Solid((ca - 60, -cb + 55, rng.uniform(50, 75)), rng.uniform([30, 25, 38], [40, 33, 50]))
    steps.append(("fluid", stomach, (), (cavity,)))
    air_level = HalfSpace(stomach.point((0, -0.4 * stomach.radii[1], 0)), (0, 1, 0))
    steps.append(("gas", stomach, (), (cavity, air_level)))

    scale = rng.uniform(0.92, 1.1)
    right_lobe = Solid(
        (-ca + 70, rng.uniform(-10, 0), rng.uniform(35, 55)), np.array([72, 78, 70]) * scale, random_tilt(rng, 10)
    )
    left_lobe = Solid((rng.uniform(0, 15), -cb + 40, right_lobe.center[2] + 20), np.array([60, 30, 38]) * scale)
    visceral_cut = HalfSpace(right_lobe.point((35, 0, -35)), (1, 0.3, -1))
    steps.append(("liver", (right_lobe, left_lobe), (), (cavity, visceral_cut)))
    gallbladder = Solid(right_lobe.point((30, -45, -45)), rng.uniform([10, 10, 22], [15, 15, 32]), random_tilt(rng, 20))
    steps.append(("fluid", gallbladder, (), (cavity,)))

    spleen = Solid(
        (ca - 40, 0.35 * cb, rng.uniform(40, 65)),
        np.array([22, 40, 55]) * rng.uniform(0.85, 1.15),
        rotation_about((0, 0, 1), rng.uniform(25, 50)),
    )
    spleen_hilum = Solid(spleen.point((-1.6 * spleen.radii[0], 0, 0)), np.array(spleen.radii) * (0.9, 0.5, 0.5))
    steps.append(("spleen", spleen, (spleen_hilum,), (cavity,)))

    vx, vy = rng.uniform(20, 24), rng.uniform(15, 18)
    y_spine = b - 0.8 * fat - 65
    y_canal = y_spine + vy + 8
    z_bifurcation = rng.uniform(-120, -80)
    for side in (-1, 1):
        psoas = Solid((side * (vx + 14), y_spine, -110), (16, 16, 140), rotation_about((0, 1, 0), side * 4))
        steps.append(("muscle", psoas, (), (cavity,)))
        steps.append(("muscle", Solid((side * 35, y_canal + 12, 0), (28, 25, INF)), (), (muscle_wall,)))

    kidneys = {}
    for side, name, z_range in ((-1, "kidney_right", (-35, -10)), (1, "kidney_left", (-20, 5))):
        rotation = rotation_about((0, 1, 0), -side * 15) @ rotation_about((0, 0, 1), side * 30)
        centre = (side * rng.uniform(68, 80), y_spine + rng.uniform(-5, 10), rng.uniform(*z_range))
        kidney = Solid(centre, np.array([26, 22, 55]) * rng.uniform(0.9, 1.1), rotation)
        sinus = Solid(kidney.point((-side * 0.55 * kidney.radii[0], 0, 0)), np.array(kidney.radii) * 0.45, rotation)
        perirenal_fat = kidney.grown(rng.uniform(6, 14))
        steps += [("fat", perirenal_fat, (), (cavity,)), (name, kidney, (sinus,), ()), ("fat", sinus, (), (kidney,))]
        kidneys[name] = centre

    period, disc = rng.uniform(30, 36), rng.uniform(7, 10)
    half_height = (period - disc) / 2
    canal = Solid((0, y_canal, 0), (8, 8, INF))
    posterior_half = HalfSpace((0, y_canal - 2, 0), (0, -1, 0))  # the arch lies behind the canal
    for z in rng.uniform(0, period) + period * np.arange(-6, 7):
        vertebral_body = Solid((0, y_spine, z), (vx, vy, half_height), power=(2, 2, 8))
        arch = Solid((0, y_canal, z), (15, 14, 0.8 * half_height), power=(2, 2, 6))
        spinous = Solid((0, y_canal + 26, z - 3), (4, 13, 0.6 * half_height), rotation_about((1, 0, 0), 25), (4, 4, 4))
        transverse = Solid((0, y_canal - 4, z), (35, 5, 5), power=(4, 4, 4))
        steps += [
            ("cortical_bone", vertebral_body, (), ()),
            ("cancellous_bone", vertebral_body._replace(radii=(vx - 2.5, vy - 2.5, half_height - 2)), (), ()),
            ("vertebral_arch", (arch, spinous, transverse), (canal,), (posterior_half,)),
            ("disc", Solid((0, y_spine, z + period / 2), (vx, vy, disc / 2 + 0.5), power=(2, 2, 6)), (), ()),
        ]
    steps.append(("spinal_canal", canal, (), ()))

    radius = rng.uniform(9, 13)
    aorta_centre = np.array([rng.uniform(8, 18), y_spine - vy - radius - rng.uniform(1, 4), 0])
    above_bifurcation = HalfSpace((0, 0, z_bifurcation), (0, 0, -1))
    steps.append(("aorta", Solid(aorta_centre, (radius, radius, INF)), (), (above_bifurcation,)))
    start = aorta_centre + (0, 0, z_bifurcation)
    for side in (-1, 1):
        direction = np.array([side * math.sin(math.radians(25)), 0.15, -math.cos(math.radians(25))])
        iliac = Solid(start + 80 * direction, (0.65 * radius, 0.65 * radius, 80), rotation_to(direction), (2, 2, 8))
        steps.append(("aorta", iliac, (), ()))
    ivc = Solid((-rng.uniform(18, 26), aorta_centre[1] + 3, 0), (12, 9, INF))
    steps.append(("ivc", ivc, (), (HalfSpace((0, 0, z_bifurcation + 10), (0, 0, -1)),)))

    rib_period, rib_phase = rng.uniform(28, 34), rng.uniform(0, 30)
    ribs = Region(lambda x, y, z: (((z + 0.35 * y - rib_phase) % rib_period) < 10) & (y > -0.3 * b) & (np.abs(x) > 30))
    steps.append(("rib", ribs, (cavity,), (muscle_wall, HalfSpace((0, 0, 10), (0, 0, -1)))))

    anatomy = {
        "body_radii_mm": (a, b),
        "fat_thickness_mm": fat,
        "liver_scale": scale,
        "kidney_centres_mm": kidneys,
        "spleen_centre_mm": spleen.center,
        "aorta_radius_mm": radius,
        "aortic_bifurcation_z_mm": z_bifurcation,
        "vertebra_period_mm": period,
    }
    return anatomy, steps
