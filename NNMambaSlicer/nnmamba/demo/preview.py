"""PNG previews a person can read without Slicer: axial, coronal and sagittal slices side by side in the
radiological convention (patient's right on the image's left, anterior and superior up), each with its
orientation letters (R/L/A/P/S/I) and a scale bar; a label map blended in distinct colours (the model's, a
neighbour's too-similar colour replaced) with a legend; landmarks marked (prediction: filled dot; truth: white
cross) with the measurement lines drawn between them and their lengths; and caption lines (e.g. a classifier's
decision and probability) under the slices.

The slices are computed with numpy; Pillow draws the lines and the text.
"""

from __future__ import annotations

from typing import Dict, NamedTuple, Optional, Sequence, Tuple

import numpy as np

PANEL_HEIGHT = 256
HEADER = 22                 # title band above the panels (pixels)
GAP = 4                     # between panels
MARGIN = 6
FILL_OPACITY = 0.55
BACKGROUND = (24, 24, 24)
TEXT = (235, 235, 235)
# distinct colours for segments whose own colour is too close to an earlier segment's, and for lines
PALETTE = [(0.90, 0.30, 0.25), (0.30, 0.75, 0.30), (0.25, 0.55, 0.95), (0.95, 0.80, 0.20), (0.75, 0.35, 0.90),
           (0.20, 0.85, 0.85), (0.98, 0.55, 0.15), (0.95, 0.45, 0.70), (0.60, 0.85, 0.35), (0.60, 0.80, 1.00)]
LINE_COLORS = [(1.0, 0.85, 0.2), (0.2, 0.9, 1.0), (1.0, 0.4, 0.9)]
MIN_COLOR_DISTANCE = 0.25   # RGB distance (0..1 per channel) below which two segment colours count as the same
PALETTE_DISTANCE = 0.35     # a replacement colour keeps at least this distance from every colour already used


class Line(NamedTuple):
    name: str
    start: Sequence[float]      # LPS mm
    end: Sequence[float]
    length: float               # mm


def write_preview(path, volume, labels=None, colors: Optional[Dict[int, Sequence[float]]] = None,
                  points: Sequence[Tuple[Sequence[float], Sequence[float]]] = (), truths: Sequence = (),
                  window: Optional[Tuple[float, float]] = None, names: Optional[Dict[int, str]] = None,
                  point_names: Sequence[str] = (), lines: Sequence[Line] = (), title: str = "",
                  caption: Sequence[str] = ()):
    """``volume``: a one-channel :class:`nnmamba.imaging.Volume`; ``labels``: KJI on its grid with ``colors``
    {value: (r, g, b) in 0..1} and ``names`` {value: name} for the legend; ``points``: [(LPS position, rgb)] named
    by ``point_names``; ``truths``: LPS positions; ``lines``: measurements drawn between their ends; ``window``:
    the grey range (default: :func:`_default_window`); ``title`` above the slices, ``caption`` lines under them."""
    from ..imaging import Volume
    from ..orientation import reorient

    stack = volume.array[:1] if labels is None else np.concatenate([volume.array[:1], labels[None].astype(np.float32)])
    oriented, _ = reorient(Volume(stack, volume.geometry), "LPS")  # labels ride along as a second channel
    image, geometry = oriented.array[0], oriented.geometry
    label_map = oriented.array[1].astype(np.int64) if labels is not None else None
    low, high = window or _default_window(image)
    grey = np.clip((image - low) / max(high - low, 1e-6), 0, 1)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    drawn = distinct_colors(colors or {})
    if label_map is not None:
        rgb = _blend_labels(rgb, label_map, drawn)

    def to_index(position):
        return np.asarray(geometry.lps_to_index(np.asarray(position, float)[None]))[0]

    marks = [(to_index(p), c) for p, c in points]
    crosses = [to_index(p) for p in truths]
    segments = [(to_index(line.start), to_index(line.end), LINE_COLORS[n % len(LINE_COLORS)])
                for n, line in enumerate(lines)]
    centre = _focus(label_map, [m for m, _ in marks] + crosses, image.shape)
    panels = [_panel(rgb, geometry.spacing, axis, centre) for axis in (0, 1, 2)]

    legend = _legend(label_map, drawn, names or {}, points, point_names, lines)
    canvas = _compose(panels, marks, crosses, segments, title, legend, list(caption))
    _write_png(path, canvas)
    return path


def _default_window(image):
    """1st percentile to a little above the 99.5th: the brightest tissue keeps its texture instead of saturating."""
    low, high = np.percentile(image, [1, 99.5])
    return float(low), float(high + 0.15 * (high - low))


def distinct_colors(colors: Dict[int, Sequence[float]]) -> Dict[int, Tuple[float, float, float]]:
    """The colours to draw: each segment's own, unless it is within MIN_COLOR_DISTANCE of an earlier segment's
    (e.g. both kidneys share Slicer's kidney colour); then the first palette colour far from all chosen ones
    (else the farthest)."""
    chosen: Dict[int, Tuple[float, float, float]] = {}
    for value in sorted(colors):
        color = tuple(float(c) for c in colors[value])
        if any(_distance(color, other) < MIN_COLOR_DISTANCE for other in chosen.values()):
            far = [c for c in PALETTE if min(_distance(c, other) for other in chosen.values()) >= PALETTE_DISTANCE]
            color = far[0] if far else max(PALETTE, key=lambda c: min(_distance(c, o) for o in chosen.values()))
        chosen[value] = color
    return chosen


def _distance(a, b):
    return float(np.linalg.norm(np.subtract(a, b)))


def _blend_labels(rgb, label_map, colors):
    """Segments filled at FILL_OPACITY in their colour, their outline (in each slice plane) fully coloured."""
    lut = np.zeros((int(label_map.max()) + 1, 3))
    for value, color in colors.items():
        if value < len(lut):
            lut[value] = color
    painted = (label_map > 0)[..., None]
    blended = np.where(painted, (1 - FILL_OPACITY) * rgb + FILL_OPACITY * lut[label_map], rgb)
    edge = np.zeros(label_map.shape, bool)
    for axis in range(3):
        differs = np.diff(label_map, axis=axis) != 0
        before = [slice(None)] * 3
        before[axis] = slice(0, -1)
        after = [slice(None)] * 3
        after[axis] = slice(1, None)
        edge[tuple(before)] |= differs
        edge[tuple(after)] |= differs
    outline = (edge & (label_map > 0))[..., None]
    return np.where(outline, lut[label_map], blended)


def _focus(label_map, index_points, shape_kji):
    """The (I, J, K) index the slices go through: the landmarks' mean, else the labels' centroid, else the centre."""
    if index_points:
        return np.mean(index_points, axis=0)
    if label_map is not None and label_map.any():
        return np.argwhere(label_map > 0).mean(axis=0)[::-1]
    return (np.asarray(shape_kji[::-1]) - 1) / 2


# numpy axis of the slice -> (rows (numpy axis, flipped), columns (numpy axis, flipped), name, letters
# top/bottom/left/right). Radiological: the patient's right (R) on the image's left; anterior and superior up.
VIEWS = {
    0: ((1, False), (2, False), "axial", ("A", "P", "R", "L")),
    1: ((0, True), (2, False), "coronal", ("S", "I", "R", "L")),
    2: ((0, True), (1, False), "sagittal", ("S", "I", "A", "P")),
}


class _Panel(NamedTuple):
    pixels: np.ndarray          # rows x width x 3, 0..1
    axis: int
    mm_per_pixel: float
    to_pixel: object            # IJK index -> (row, column) in the panel


def _panel(rgb, spacing, axis, centre_ijk):
    """One slice through ``centre_ijk`` across numpy axis ``axis`` (0 = K: axial, 1 = J: coronal, 2 = I: sagittal),
    resampled to square pixels of PANEL_HEIGHT rows."""
    position = int(np.clip(round(centre_ijk[2 - axis]), 0, rgb.shape[axis] - 1))
    plane = np.take(rgb, position, axis=axis)
    rows, cols, _, _ = VIEWS[axis]
    if rows[1]:
        plane = plane[::-1]
    row_mm = spacing[2 - rows[0]] * plane.shape[0]
    col_mm = spacing[2 - cols[0]] * plane.shape[1]
    width = max(1, int(round(PANEL_HEIGHT * col_mm / row_mm)))
    row_index = np.minimum((np.arange(PANEL_HEIGHT) + 0.5) * plane.shape[0] / PANEL_HEIGHT, plane.shape[0] - 1)
    col_index = np.minimum((np.arange(width) + 0.5) * plane.shape[1] / width, plane.shape[1] - 1)
    pixels = plane[row_index.astype(int)][:, col_index.astype(int)].copy()
    n_rows = plane.shape[0]

    def to_pixel(index_ijk):
        r = index_ijk[2 - rows[0]]
        r = n_rows - 1 - r if rows[1] else r
        return (r + 0.5) * PANEL_HEIGHT / n_rows, (index_ijk[2 - cols[0]] + 0.5) * width / plane.shape[1]

    return _Panel(pixels, axis, row_mm / PANEL_HEIGHT, to_pixel)


def _font(size=13):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)      # a scalable font (Pillow >= 10.1 with FreeType)
    except (TypeError, OSError):
        return ImageFont.load_default()


def _legend(label_map, colors, names, points, point_names, lines):
    """[(rgb 0..1 or None, text, marker)] entries: segments present in the labels, landmarks, lines."""
    entries = []
    present = set(np.unique(label_map).tolist()) if label_map is not None else set()
    for value, color in colors.items():
        if value in names:
            entries.append((color, names[value] + ("" if value in present else " (not found)"), "box"))
    for (_, color), name in zip(points, point_names):
        entries.append((color, name, "dot"))
    for n, line in enumerate(lines):
        entries.append((LINE_COLORS[n % len(LINE_COLORS)], f"{line.name} {line.length:.1f} mm", "line"))
    return entries


def _compose(panels, marks, crosses, segments, title, legend, caption):
    from PIL import Image, ImageDraw

    font, small = _font(13), _font(11)
    widths = [p.pixels.shape[1] for p in panels]
    panels_width = sum(widths) + GAP * (len(panels) - 1)
    legend_rows = _legend_rows(legend, panels_width, font)
    height = HEADER + PANEL_HEIGHT + MARGIN + 18 * (len(legend_rows) + len(caption)) + (MARGIN if legend_rows or
                                                                                        caption else 0)
    canvas = Image.new("RGB", (panels_width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((MARGIN, 4), title, fill=TEXT, font=font)
    left = 0
    for panel in panels:
        tile = Image.fromarray(np.round(np.clip(panel.pixels, 0, 1) * 255).astype(np.uint8))
        canvas.paste(tile, (left, HEADER))
        _annotate(draw, panel, left, marks, crosses, segments, font, small)
        left += panel.pixels.shape[1] + GAP
    y = HEADER + PANEL_HEIGHT + MARGIN
    for row in legend_rows:
        x = MARGIN
        for color, text, marker, width in row:
            _legend_marker(draw, x, y, color, marker)
            draw.text((x + 18, y), text, fill=TEXT, font=font)
            x += width
        y += 18
    for line in caption:
        draw.text((MARGIN, y), line, fill=TEXT, font=font)
        y += 18
    return np.asarray(canvas)


def _legend_rows(legend, width, font):
    rows, row, used = [], [], MARGIN
    for color, text, marker in legend:
        entry = 18 + int(font.getlength(text)) + 16
        if row and used + entry > width:
            rows.append(row)
            row, used = [], MARGIN
        row.append((color, text, marker, entry))
        used += entry
    return rows + ([row] if row else [])


def _legend_marker(draw, x, y, color, marker):
    fill = tuple(int(round(c * 255)) for c in color)
    if marker == "box":
        draw.rectangle([x, y + 3, x + 12, y + 14], fill=fill, outline=TEXT)
    elif marker == "dot":
        draw.ellipse([x + 2, y + 4, x + 11, y + 13], fill=fill)
    else:
        draw.line([x, y + 9, x + 13, y + 9], fill=fill, width=3)


def _rgb(color):
    return tuple(int(round(c * 255)) for c in color)


def _annotate(draw, panel, left, marks, crosses, segments, font, small):
    """Lines, landmarks and truth crosses (projected on the slice), orientation letters, view name, scale bar."""
    width = panel.pixels.shape[1]

    def xy(index):
        row, col = panel.to_pixel(index)
        return left + col, HEADER + row

    for start, end, color in segments:
        draw.line([xy(start), xy(end)], fill=_rgb(color), width=2)
    for index, color in marks:
        x, y = xy(index)
        draw.ellipse([x - 3.5, y - 3.5, x + 3.5, y + 3.5], fill=_rgb(color))
    for index in crosses:
        x, y = xy(index)
        draw.line([x - 5, y, x + 5, y], fill=(255, 255, 255))
        draw.line([x, y - 5, x, y + 5], fill=(255, 255, 255))

    top, bottom, west, east = VIEWS[panel.axis][3]
    middle = HEADER + PANEL_HEIGHT / 2
    _shadowed(draw, (left + width / 2 - 4, HEADER + 2), top, font)
    _shadowed(draw, (left + width / 2 - 4, HEADER + PANEL_HEIGHT - 17), bottom, font)
    _shadowed(draw, (left + 3, middle - 8), west, font)
    _shadowed(draw, (left + width - 12, middle - 8), east, font)
    _shadowed(draw, (left + 3, HEADER + 2), VIEWS[panel.axis][2], small)

    bar_mm = _scale_bar_mm(width * panel.mm_per_pixel)
    bar_pixels = bar_mm / panel.mm_per_pixel
    x0, y0 = left + width - 8 - bar_pixels, HEADER + PANEL_HEIGHT - 10
    draw.rectangle([x0 - 1, y0 - 1, x0 + bar_pixels + 1, y0 + 3], fill=(0, 0, 0))
    draw.rectangle([x0, y0, x0 + bar_pixels, y0 + 2], fill=(255, 255, 255))
    label = f"{bar_mm:g} mm"
    _shadowed(draw, (x0 + bar_pixels - small.getlength(label), y0 - 14), label, small)


def _scale_bar_mm(panel_mm):
    """A round length (1, 2 or 5 x 10^n mm) of about a quarter of the panel's width."""
    target = panel_mm / 4
    exponent = np.floor(np.log10(max(target, 1e-3)))
    return max((m * 10 ** exponent for m in (1, 2, 5) if m * 10 ** exponent <= target), default=10 ** exponent)


def _shadowed(draw, xy, text, font):
    x, y = xy
    draw.text((x + 1, y + 1), text, fill=(0, 0, 0), font=font)
    draw.text((x, y), text, fill=TEXT, font=font)


def _write_png(path, rgb_uint8):
    import SimpleITK as sitk

    from ..formats.atomic import atomic_path

    with atomic_path(path) as temporary:
        sitk.WriteImage(sitk.GetImageFromArray(np.ascontiguousarray(rgb_uint8), isVector=True), str(temporary))
