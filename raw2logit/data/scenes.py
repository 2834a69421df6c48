"""Procedural scenes in linear RGB for the sensor simulator.

Microscopy: a bright-field blood smear (transmittance, Beer-Lambert absorption of haematoxylin
and eosin) with one leukocyte per image; the classes differ in nucleus morphology, stain colour
and fine granule texture, as the Raw-Microscopy classes do. Aerial: ground textures (grass,
soil, asphalt, concrete, roads with markings) seen from above with cars of varied colour, size
and orientation, and their binary masks; every size is given on the ground, in metres, and drawn
at the ground sampling distance asked for.

Everything is vectorised numpy on a pixel grid; randomness comes only from the given generator.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

# Optical densities per unit stain (R, G, B), Ruifrok & Johnston (2001) stain vectors.
HAEMATOXYLIN = np.array([0.65, 0.70, 0.29])
EOSIN = np.array([0.07, 0.99, 0.11])

# Leukocyte classes (codes as in Raw-Microscopy) and what tells them apart.
MICROSCOPY_CLASSES = {
    "LYT": "lymphocyte: small round cell, large dense round nucleus, thin pale-blue rim",
    "MON": "monocyte: large cell, kidney-shaped nucleus, grey-blue cytoplasm with vacuoles",
    "NGS": "segmented neutrophil: 3-5 nucleus lobes, pale pink finely granular cytoplasm",
    "EOS": "eosinophil: two nucleus lobes, coarse orange-red granules",
    "BAS": "basophil: dark purple coarse granules hiding the nucleus",
    "KSC": "smudge cell: irregular smeared nucleus, no cytoplasm",
}


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    coords = (np.arange(size) + 0.5) / size
    return np.meshgrid(coords, coords, indexing="ij")


def _smooth_noise(rng: np.random.Generator, shape, sigma: float) -> np.ndarray:
    """Zero-mean, unit-variance Gaussian random field with correlation length ``sigma`` pixels."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    return field / (field.std() + 1e-12)


def _soft(distance: np.ndarray, edge: float) -> np.ndarray:
    """Soft inside-indicator of a signed distance (negative inside), ``edge`` wide."""
    return 1.0 / (1.0 + np.exp(np.clip(distance / edge, -50, 50)))


def _ellipse_distance(y, x, cy, cx, ry, rx, angle):
    cos, sin = np.cos(angle), np.sin(angle)
    u = ((y - cy) * cos + (x - cx) * sin) / ry
    v = (-(y - cy) * sin + (x - cx) * cos) / rx
    return (np.sqrt(u**2 + v**2) - 1.0) * min(ry, rx)


def _granules(rng, shape, density: float, radius_px: float, mask: np.ndarray) -> np.ndarray:
    """Sparse round granules of about ``radius_px`` inside ``mask`` (a fine texture cue)."""
    seeds = (rng.random(shape) < density) * mask
    blobs = ndimage.gaussian_filter(seeds.astype(float), radius_px, mode="constant")
    return np.clip(blobs * (2 * np.pi * radius_px**2), 0, 1.5)


def render_blood_smear(class_code: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A leukocyte of class ``class_code`` on a smear background.

    Args:
        class_code: one of ``MICROSCOPY_CLASSES``.
        size: image side in pixels (the cell scales with it).
        rng: random generator.

    Returns:
        (size, size, 3) linear transmittance in (0, 1].
    """
    y, x = _grid(size)
    px = 1.0 / size
    haem = np.zeros((size, size))
    eos = np.zeros((size, size))

    # Background: plasma and red cells (eosin, central pallor), partly overlapping.
    for _ in range(rng.integers(4, 9)):
        cy, cx = rng.random(2)
        radius = rng.uniform(0.09, 0.13)
        d = np.hypot(y - cy, x - cx)
        rim = _soft(d - radius, 1.5 * px)
        pallor = 1.0 - 0.55 * np.exp(-((d / (0.55 * radius)) ** 2))
        eos += rng.uniform(0.25, 0.4) * rim * pallor

    # The leukocyte, jittered around the centre.
    cy, cx = 0.5 + rng.normal(0, 0.04, 2)
    angle = rng.uniform(0, np.pi)
    stain = rng.uniform(0.7, 1.3)  # slide-to-slide staining strength
    eosin_ratio = rng.uniform(0.75, 1.3)  # and balance between the two stains
    cell_radius = {"LYT": 0.17, "MON": 0.27, "NGS": 0.23, "EOS": 0.24, "BAS": 0.21, "KSC": 0.22}[class_code]
    cell_radius *= rng.uniform(0.8, 1.2)
    cell = _soft(
        _ellipse_distance(y, x, cy, cx, cell_radius, cell_radius * rng.uniform(0.85, 1.0), angle), 1.5 * px
    )
    eos *= 1.0 - cell  # the leukocyte lies on top of the red cells

    if class_code == "LYT":
        nucleus = _soft(
            _ellipse_distance(y, x, cy + 0.02, cx, 0.8 * cell_radius, 0.75 * cell_radius, angle), 1.2 * px
        )
        haem += 0.35 * cell + 1.6 * nucleus * (1 + 0.15 * _smooth_noise(rng, y.shape, 1.5))
    elif class_code == "MON":
        outer = _ellipse_distance(y, x, cy, cx, 0.62 * cell_radius, 0.5 * cell_radius, angle)
        notch = _ellipse_distance(y, x, cy + 0.45 * cell_radius * np.cos(angle), cx + 0.45 * cell_radius * np.sin(angle),
                                  0.3 * cell_radius, 0.3 * cell_radius, angle)  # fmt: skip
        nucleus = _soft(np.maximum(outer, -notch), 1.2 * px)
        vacuoles = _granules(rng, y.shape, 0.004, 1.2, cell * (1 - nucleus))
        haem += (0.55 - 0.35 * vacuoles) * cell + 1.1 * nucleus * (1 + 0.2 * _smooth_noise(rng, y.shape, 2.0))
        eos += 0.1 * cell
    elif class_code in ("NGS", "EOS"):
        lobes = rng.integers(2, 6) if class_code == "NGS" else rng.integers(2, 4)
        arc = np.linspace(-0.9, 0.9, lobes) + rng.normal(0, 0.15, lobes)
        nucleus = np.zeros_like(y)
        for phi in arc:
            ly = cy + 0.45 * cell_radius * np.cos(angle + phi)
            lx = cx + 0.45 * cell_radius * np.sin(angle + phi)
            nucleus = np.maximum(
                nucleus, _soft(np.hypot(y - ly, x - lx) - rng.uniform(0.2, 0.27) * cell_radius, 1.2 * px)
            )
        cytoplasm = cell * (1 - nucleus)
        if class_code == "NGS":
            granules = _granules(rng, y.shape, 0.08, 0.6, cytoplasm)
            haem += 0.1 * cell + 1.4 * nucleus
            eos += 0.25 * cytoplasm + 0.5 * granules
        else:
            granules = _granules(rng, y.shape, 0.05, 1.1, cytoplasm)
            haem += 0.05 * cell + 1.3 * nucleus
            eos += 0.3 * cytoplasm + 0.75 * granules
    elif class_code == "BAS":
        nucleus = _soft(
            _ellipse_distance(y, x, cy, cx, 0.5 * cell_radius, 0.45 * cell_radius, angle), 1.2 * px
        )
        granules = _granules(rng, y.shape, 0.06, 1.0, cell)
        haem += 0.25 * cell + 0.9 * nucleus + 1.6 * granules
        eos += 0.08 * cell
    elif class_code == "KSC":
        blob = _smooth_noise(rng, y.shape, 0.06 * size) + 2.5 * (1 - np.hypot(y - cy, x - cx) / cell_radius)
        smudge = _soft(-blob, 0.6) * cell
        haem += 0.9 * smudge * (1 + 0.3 * _smooth_noise(rng, y.shape, 3.0))
    else:
        raise ValueError(f"unknown class {class_code!r}")

    optical_density = stain * (haem[..., None] * HAEMATOXYLIN + eosin_ratio * eos[..., None] * EOSIN)
    # Focus varies from cell to cell (the fine granule texture is sometimes barely resolved).
    defocus = rng.uniform(0.0, 1.2)
    if defocus > 0.05:
        optical_density = ndimage.gaussian_filter(optical_density, (defocus, defocus, 0), mode="reflect")
    background = 0.92 + 0.02 * _smooth_noise(rng, y.shape, 0.2 * size)[..., None]
    return np.clip(background * np.exp(-np.clip(optical_density, 0, None)), 1e-4, 1.0)


# Linear reflectances (R, G, B) of ground materials and car paints seen from above.
GROUND = {
    "grass": (0.06, 0.11, 0.04),
    "soil": (0.18, 0.13, 0.08),
    "concrete": (0.32, 0.31, 0.28),
    "gravel": (0.22, 0.21, 0.19),
}
ASPHALT = (0.07, 0.07, 0.08)
MARKING = (0.65, 0.65, 0.62)
CAR_PAINTS = (
    (0.75, 0.75, 0.75),  # white
    (0.03, 0.03, 0.035),  # black
    (0.40, 0.41, 0.43),  # silver
    (0.15, 0.15, 0.16),  # grey
    (0.45, 0.04, 0.03),  # red
    (0.03, 0.08, 0.30),  # blue
    (0.30, 0.25, 0.05),  # yellow-brown
    (0.05, 0.15, 0.07),  # green
)

# Sizes on the ground, metres: a typical car (Raw-Drone: ~75 px at its 6 cm ground sampling distance),
# the patches of ground material, the grain of their texture, lane markings (3 m dashes every 9 m).
CAR_LENGTH_M = 4.5
MATERIAL_PATCH_M = 15.0
GRAIN_M = (0.3, 1.5)
MARKING_WIDTH_M, MARKING_DASH_M, MARKING_PERIOD_M = 0.15, 3.0, 9.0


def _field(rng: np.random.Generator, shape, sigma: float) -> np.ndarray:
    """Zero-mean, unit-variance Gaussian random field with correlation length ``sigma`` pixels.

    Wide fields are drawn on a grid coarser by up to ``sigma / 4`` and interpolated: the same field
    statistics at a cost that does not grow with ``sigma`` (a 15 m patch is 250 px at scale 1).
    """
    step = max(1, int(sigma // 4))
    coarse = tuple(-(-side // step) + 2 for side in shape)
    field = ndimage.gaussian_filter(rng.standard_normal(coarse), sigma / step, mode="wrap")
    if step > 1:
        field = ndimage.zoom(field, step, order=1)
    field = field[: shape[0], : shape[1]]
    return field / (field.std() + 1e-12)


def _grain(rng: np.random.Generator, shape, correlation_px: float) -> np.ndarray:
    """Texture of correlation length ``correlation_px``; finer than a pixel it averages out within the
    pixel (standard deviation falling with the correlation length, as for binned pixels)."""
    return _field(rng, shape, max(correlation_px, 0.5)) * min(1.0, correlation_px)


def render_aerial(
    height: int,
    width: int,
    metres_per_pixel: float,
    rng: np.random.Generator,
    car_length_m: float = CAR_LENGTH_M,
) -> tuple[np.ndarray, np.ndarray]:
    """An aerial scene with roads, parking areas and cars, every size given on the ground.

    The layout (roads, car positions, sizes, paints) is drawn in units of the scene's extent and of
    the car length, from its own child of ``rng``: the same generator at another resolution
    (``metres_per_pixel``, with height and width scaled alike) renders the same scene finer or
    coarser, with cars ``car_length_m / metres_per_pixel`` pixels long.

    Args:
        height, width: image size in pixels.
        metres_per_pixel: ground sampling distance of the rendered pixels (0.06 for Raw-Drone).
        rng: random generator.
        car_length_m: typical car length in metres (each car 0.85-1.2 times it, 0.38-0.46 as wide).

    Returns:
        (reflectance (H, W, 3) linear in (0, 1], mask (H, W) uint8 with 1 on car pixels).
    """
    layout, texture_rng = rng.spawn(2)
    car_px = car_length_m / metres_per_pixel
    shape = (height, width)
    # Pixel centres: a coarse pixel samples the middle of the finer pixels it stands for.
    y, x = np.meshgrid(np.arange(height) + 0.5, np.arange(width) + 0.5, indexing="ij")
    extent = max(height, width)
    # Ground: a patchwork of materials with texture at two scales.
    materials = np.asarray(list(GROUND.values()))
    weights = np.stack([_field(texture_rng, shape, MATERIAL_PATCH_M / metres_per_pixel) for _ in materials])
    image = materials[np.argmax(weights, axis=0)]
    fine, coarse = (_grain(texture_rng, shape, grain / metres_per_pixel) for grain in GRAIN_M)
    image = image * (1 + 0.18 * fine + 0.12 * coarse)[..., None]

    # Roads: straight bands with dashed lane markings; cars park along and on them.
    lanes = []
    for _ in range(layout.integers(1, 4)):
        theta = layout.uniform(0, np.pi)
        offset = layout.uniform(0.2, 0.8) * (height * abs(np.cos(theta)) + width * abs(np.sin(theta)))
        road_width = layout.uniform(1.6, 2.6) * car_px
        distance = y * np.cos(theta) + x * np.sin(theta) - offset
        road = np.abs(distance) < road_width / 2
        road_texture = 1 + 0.1 * _grain(texture_rng, shape, 0.5 / metres_per_pixel)
        image = np.where(road[..., None], np.asarray(ASPHALT) * road_texture[..., None], image)
        # Markings by their coverage of each pixel (box-filtered across the line): thinner than a
        # pixel at coarse scales, they must fade rather than alias into random dots.
        coverage = np.clip(MARKING_WIDTH_M / metres_per_pixel / 2 - np.abs(distance) + 0.5, 0, 1)
        along = np.mod((y * np.sin(theta) - x * np.cos(theta)) * metres_per_pixel, MARKING_PERIOD_M)
        coverage = coverage * (along < MARKING_DASH_M)
        image = image + coverage[..., None] * (np.asarray(MARKING) - image)
        lanes.append((theta, offset, road_width))

    mask = np.zeros(shape, dtype=bool)
    area = height * width / car_px**2
    for _ in range(layout.poisson(0.25 * area) + 1):
        length = car_px * layout.uniform(0.85, 1.2)
        breadth = length * layout.uniform(0.38, 0.46)
        if lanes and layout.random() < 0.8:  # on a road, aligned with it
            theta, offset, road_width = lanes[layout.integers(len(lanes))]
            along = layout.uniform(0, extent * 1.5) - 0.25 * extent
            across = offset + layout.uniform(-0.3, 0.3) * road_width
            cy = across * np.cos(theta) + along * np.sin(theta)
            cx = across * np.sin(theta) - along * np.cos(theta)
            heading = theta + np.pi / 2 + layout.normal(0, 0.05)
        else:  # parked anywhere, any orientation
            cy, cx = layout.uniform(0, height), layout.uniform(0, width)
            heading = layout.uniform(0, np.pi)
        paint = np.asarray(CAR_PAINTS[layout.integers(len(CAR_PAINTS))]) * layout.uniform(0.85, 1.15)
        # The car, its shadow (the sun at one fixed azimuth) and its windows, within a window around it.
        shift_y, shift_x = 0.2 * breadth, 0.15 * breadth
        reach = np.hypot(length, breadth) / 2 + 0.15 * breadth + shift_y + 1
        rows = slice(max(int(cy - reach), 0), min(int(np.ceil(cy + reach)) + 1, height))
        cols = slice(max(int(cx - reach), 0), min(int(np.ceil(cx + reach)) + 1, width))
        if rows.start >= rows.stop or cols.start >= cols.stop:
            continue
        window_y, window_x = y[rows, cols] - cy, x[rows, cols] - cx
        outside, u, v = _car_distance(window_y, window_x, heading, length, breadth)
        body = outside < 0
        if not body.any():
            continue
        shade, _, _ = _car_distance(window_y - shift_y, window_x - shift_x, heading, length, breadth)
        shadow = (shade < 0.15 * breadth) & ~mask[rows, cols]
        window = image[rows, cols]
        window[shadow] *= 0.45
        window[body] = paint
        glass = (
            body
            & (np.abs(v) < 0.36 * breadth)
            & (((u > 0.08 * length) & (u < 0.3 * length)) | ((u < -0.25 * length) & (u > -0.4 * length)))
        )
        window[glass] = (0.04, 0.045, 0.05)
        mask[rows, cols] |= body
    return np.clip(image, 1e-4, 1.0), mask.astype(np.uint8)


def _car_distance(dy, dx, heading, length, breadth):
    """Signed distance to a rounded-rectangle car outline (negative inside), and the coordinates
    along (``u``) and across (``v``) the car, for offsets ``dy, dx`` from its centre (pixels)."""
    cos, sin = np.cos(heading), np.sin(heading)
    u = dy * cos + dx * sin
    v = -dy * sin + dx * cos
    corner = 0.25 * breadth
    du, dv = np.abs(u) - (length / 2 - corner), np.abs(v) - (breadth / 2 - corner)
    outside = np.hypot(np.maximum(du, 0), np.maximum(dv, 0)) + np.minimum(np.maximum(du, dv), 0) - corner
    return outside, u, v
