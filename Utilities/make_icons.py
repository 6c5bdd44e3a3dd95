"""Draw the extension's and the modules' icons: 128x128 RGBA PNGs made here, from shapes, with numpy and zlib.

Slicer shows ``Resources/Icons/<Module>.png`` in the module list and the extension icon (``EXTENSION_ICONURL``)
in the Extensions Manager; both expect 128x128. The shapes are drawn at 4x and averaged down for smooth edges.
Deterministic: the same bytes on every run.

    python Utilities/make_icons.py            # writes the four PNGs into the source tree
"""

from __future__ import annotations

import struct
import sys
import zlib
from pathlib import Path

import numpy as np

SIZE = 128
SUPERSAMPLE = 4
ROOT = Path(__file__).resolve().parents[1]


class Canvas:
    """Premultiplied RGBA drawing surface at SUPERSAMPLE x the icon size, in icon pixel coordinates."""

    def __init__(self):
        n = SIZE * SUPERSAMPLE
        centres = (np.arange(n) + 0.5) / SUPERSAMPLE
        self.y, self.x = np.meshgrid(centres, centres, indexing="ij")
        self.rgba = np.zeros((n, n, 4))

    def paint(self, mask, color, alpha=1.0):
        """Composite ``color`` (r, g, b in 0..255) over the canvas where ``mask`` holds."""
        source = np.zeros_like(self.rgba)
        a = mask.astype(float) * alpha
        source[..., 3] = a
        for channel in range(3):
            source[..., channel] = a * color[channel] / 255.0
        self.rgba = source + self.rgba * (1.0 - source[..., 3:4])

    # shapes: boolean masks
    def rounded_square(self, margin, radius):
        low, high = margin, SIZE - margin
        dx = np.maximum(np.maximum(low + radius - self.x, self.x - (high - radius)), 0)
        dy = np.maximum(np.maximum(low + radius - self.y, self.y - (high - radius)), 0)
        inside = (self.x >= low) & (self.x <= high) & (self.y >= low) & (self.y <= high)
        return inside & (dx ** 2 + dy ** 2 <= radius ** 2)

    def ellipse(self, cx, cy, rx, ry, angle_degrees=0.0):
        t = np.deg2rad(angle_degrees)
        u = (self.x - cx) * np.cos(t) + (self.y - cy) * np.sin(t)
        v = -(self.x - cx) * np.sin(t) + (self.y - cy) * np.cos(t)
        return (u / rx) ** 2 + (v / ry) ** 2 <= 1.0

    def disk(self, cx, cy, r):
        return self.ellipse(cx, cy, r, r)

    def polyline(self, points, width):
        """A stroke of ``width`` along the points (round joins and caps)."""
        points = np.asarray(points, dtype=float)
        best = np.full(self.x.shape, np.inf)
        for (x0, y0), (x1, y1) in zip(points[:-1], points[1:]):
            dx, dy = x1 - x0, y1 - y0
            length2 = max(dx * dx + dy * dy, 1e-12)
            t = np.clip(((self.x - x0) * dx + (self.y - y0) * dy) / length2, 0.0, 1.0)
            best = np.minimum(best, (self.x - x0 - t * dx) ** 2 + (self.y - y0 - t * dy) ** 2)
        return best <= (width / 2.0) ** 2

    def vertical_gradient(self, mask, top, bottom):
        """Fill ``mask`` with a top-to-bottom gradient between two colours."""
        weight = (self.y / SIZE)[..., None]
        color = (1 - weight) * np.asarray(top, float) + weight * np.asarray(bottom, float)
        source = np.zeros_like(self.rgba)
        source[..., 3] = mask
        source[..., :3] = color / 255.0 * mask[..., None]
        self.rgba = source + self.rgba * (1.0 - source[..., 3:4])

    def pixels(self):
        """The icon as uint8 RGBA, SIZE x SIZE: supersampled pixels averaged, then un-premultiplied."""
        blocks = self.rgba.reshape(SIZE, SUPERSAMPLE, SIZE, SUPERSAMPLE, 4).mean(axis=(1, 3))
        alpha = blocks[..., 3:4]
        rgb = np.where(alpha > 0, blocks[..., :3] / np.maximum(alpha, 1e-12), 0.0)
        return np.round(np.concatenate([rgb, alpha], axis=-1) * 255).clip(0, 255).astype(np.uint8)


def s_curve(cx, cy, height, amplitude, turns=1.0, samples=80):
    """Points of a serpent-like S: a sine wave running top to bottom."""
    t = np.linspace(0.0, 1.0, samples)
    return np.stack([cx + amplitude * np.sin(2 * np.pi * turns * t), cy - height / 2 + height * t], axis=1)


def background(canvas, top, bottom):
    canvas.vertical_gradient(canvas.rounded_square(4, 22), top, bottom)


def draw_extension(canvas):
    """A brain outline with a serpent S-curve through it: the nnMamba (state-space 'snake') networks on images."""
    background(canvas, (32, 58, 96), (14, 26, 48))
    canvas.paint(canvas.ellipse(64, 62, 46, 38), (222, 206, 196))
    canvas.paint(canvas.ellipse(64, 62, 40, 32), (190, 160, 150))
    canvas.paint(canvas.polyline([(64, 28), (62, 46), (66, 62), (62, 80), (64, 96)], 3), (222, 206, 196))
    snake = s_curve(64, 66, 84, -26, turns=1.0)
    canvas.paint(canvas.polyline(snake, 15), (20, 70, 40))
    canvas.paint(canvas.polyline(snake, 11), (70, 200, 110))
    head_x, head_y = snake[0]
    canvas.paint(canvas.disk(head_x, head_y, 9), (70, 200, 110))
    canvas.paint(canvas.disk(head_x - 3, head_y - 2, 2.2), (10, 30, 20))


def draw_hub(canvas):
    """The hub: the serpent S inside a ring with three satellites (segmentation, landmarks, classification)."""
    background(canvas, (38, 52, 70), (18, 24, 34))
    canvas.paint(canvas.disk(64, 64, 42) & ~canvas.disk(64, 64, 36), (150, 170, 190))
    for angle, color in ((-90, (230, 90, 80)), (30, (250, 200, 60)), (150, (90, 170, 240))):
        a = np.deg2rad(angle)
        canvas.paint(canvas.disk(64 + 39 * np.cos(a), 64 + 39 * np.sin(a), 11), (18, 24, 34))
        canvas.paint(canvas.disk(64 + 39 * np.cos(a), 64 + 39 * np.sin(a), 8.5), color)
    snake = s_curve(64, 64, 50, -14, turns=1.0)
    canvas.paint(canvas.polyline(snake, 12), (20, 70, 40))
    canvas.paint(canvas.polyline(snake, 8), (70, 200, 110))


def draw_segmentation(canvas):
    """Coloured organ blobs, as a segmentation shows them: liver, stomach, spleen, kidneys."""
    background(canvas, (40, 40, 44), (16, 16, 18))
    canvas.paint(canvas.ellipse(64, 66, 50, 44), (92, 92, 96))                   # body cross-section
    canvas.paint(canvas.ellipse(46, 50, 26, 18, -20) | canvas.ellipse(36, 66, 16, 20), (200, 90, 70))   # liver
    canvas.paint(canvas.ellipse(82, 48, 16, 11, 25), (230, 190, 90))            # stomach
    canvas.paint(canvas.ellipse(96, 70, 9, 15, -15), (150, 100, 200))            # spleen
    for cx, tilt in ((46, 15), (84, -15)):
        canvas.paint(canvas.ellipse(cx, 86, 9, 13, tilt), (120, 200, 110))        # kidneys
    canvas.paint(canvas.disk(64, 80, 5), (230, 80, 90))                           # aorta


def draw_landmarks(canvas):
    """Six points joined by three lines over a head outline: the TCD, HDV and ADV measurements."""
    background(canvas, (30, 42, 60), (12, 18, 28))
    canvas.paint(canvas.ellipse(64, 64, 50, 44), (170, 170, 176))
    canvas.paint(canvas.ellipse(64, 64, 45, 39), (80, 80, 88))
    lines = (((30, 64), (98, 64), (250, 200, 60)),     # TCD: horizontal
             ((64, 30), (64, 98), (90, 200, 240)),     # HDV: vertical
             ((40, 42), (88, 86), (240, 110, 110)))    # ADV: oblique
    for start, end, color in lines:
        canvas.paint(canvas.polyline([start, end], 4), color)
    for start, end, color in lines:
        for x, y in (start, end):
            canvas.paint(canvas.disk(x, y, 8), (255, 255, 255))
            canvas.paint(canvas.disk(x, y, 5.5), color)


ICONS = {
    "Resources/Icons/NNMamba.png": draw_extension,
    "NNMambaSlicer/Resources/Icons/NNMambaSlicer.png": draw_hub,
    "NNMambaSegmentation/Resources/Icons/NNMambaSegmentation.png": draw_segmentation,
    "NNMambaLandmarks/Resources/Icons/NNMambaLandmarks.png": draw_landmarks,
}


def png_bytes(rgba):
    """A PNG (8-bit RGBA, no filtering) of a (height, width, 4) uint8 array."""
    rgba = np.ascontiguousarray(rgba, dtype=np.uint8)
    height, width, channels = rgba.shape
    if channels != 4:
        raise ValueError(f"png_bytes needs RGBA pixels, got {channels} channels")
    raw = b"".join(b"\x00" + rgba[row].tobytes() for row in range(height))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def render(draw):
    canvas = Canvas()
    draw(canvas)
    return canvas.pixels()


def write_icons(root=ROOT):
    """Write every icon under ``root``; returns the paths written."""
    written = []
    for relative, draw in ICONS.items():
        path = Path(root) / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_bytes(png_bytes(render(draw)))
        temporary.replace(path)
        written.append(path)
    return written


def main():
    for path in write_icons():
        print(path.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
