"""Tiny vectorised rasteriser for the synthetic benchmark: shapes as masks over a pixel grid.

Everything works on an object-frame coordinate grid ``(u, v)`` (arrays of shape ``(N, N)``,
``u`` forward, ``v`` up) that :func:`posed_grid` derives from the canvas by the inverse of a
random pose. Shapes are boolean masks; :func:`paint` composites a colour under a mask. Images are
rendered ``ss`` times larger and box-filtered down (:func:`downsample`), which anti-aliases edges.
"""

from __future__ import annotations

import functools
import math

import numpy as np

Mask = np.ndarray  # (N, N) bool
Colour = np.ndarray  # (3,) float in [0, 1]


def supersampling(size: int) -> int:
    """Render factor: about 128 rendered pixels per side for small images, at least 1."""
    return max(1, math.ceil(128 / size)) if size < 128 else 1


@functools.lru_cache(maxsize=8)
def canvas_grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates of an ``n x n`` canvas in [-1, 1]; ``y`` grows downwards."""
    c = (np.arange(n, dtype=np.float32) + 0.5) / n * 2.0 - 1.0
    y, x = np.meshgrid(c, c, indexing="ij")
    x.flags.writeable = False
    y.flags.writeable = False
    return x, y


def posed_grid(
    n: int, angle: float, scale: float, shift: tuple[float, float], mirror: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Object-frame coordinates of every canvas pixel for an object placed with this pose.

    The object is rotated by ``angle`` (radians), scaled by ``scale``, optionally mirrored
    left-right, and centred at ``shift`` (canvas units). Returns ``(u, v)`` with ``v`` up.
    """
    x, y = canvas_grid(n)
    dx = (x - shift[0]) / scale
    dy = (shift[1] - y) / scale  # flip: object v points up
    c, s = math.cos(angle), math.sin(angle)
    u = c * dx + s * dy
    v = -s * dx + c * dy
    return (-u if mirror else u), v


def ellipse(u, v, cx: float, cy: float, rx: float, ry: float, angle: float = 0.0) -> Mask:
    """Inside of an ellipse centred at (cx, cy) with radii (rx, ry), rotated by ``angle``."""
    du, dv = u - cx, v - cy
    if angle:
        c, s = math.cos(angle), math.sin(angle)
        du, dv = c * du + s * dv, -s * du + c * dv
    return (du / rx) ** 2 + (dv / ry) ** 2 <= 1.0


def rect(u, v, u0: float, v0: float, u1: float, v1: float) -> Mask:
    """Axis-aligned rectangle [u0, u1] x [v0, v1] in the object frame."""
    return (u >= u0) & (u <= u1) & (v >= v0) & (v <= v1)


def polygon(u, v, points: list[tuple[float, float]]) -> Mask:
    """Inside of a convex polygon (vertices in either winding order)."""
    signs = []
    for (a0, b0), (a1, b1) in zip(points, points[1:] + points[:1], strict=True):
        signs.append((a1 - a0) * (v - b0) - (b1 - b0) * (u - a0) >= 0)
    inside_ccw = functools.reduce(np.logical_and, signs)
    inside_cw = functools.reduce(np.logical_and, [~s for s in signs])
    return inside_ccw | inside_cw


def stripes(u, v, period: float, width: float, phase: float, angle: float = 0.0) -> Mask:
    """Parallel bands of ``width`` every ``period`` across direction ``angle``."""
    t = u * math.cos(angle) + v * math.sin(angle) + phase
    return np.mod(t, period) < width


def paint(img: np.ndarray, mask: Mask, colour: Colour) -> None:
    """Set the pixels of ``img`` (N, N, 3) under ``mask`` to ``colour``, in place."""
    img[mask] = colour


def downsample(img: np.ndarray, ss: int) -> np.ndarray:
    """Box-filter an (N, N, 3) image by ``ss`` per side -> (N/ss, N/ss, 3)."""
    if ss == 1:
        return img
    n = img.shape[0] // ss
    return img.reshape(n, ss, n, ss, 3).mean(axis=(1, 3))


def background(n: int, rng: np.random.Generator, clutter: int) -> np.ndarray:
    """A random textured background (N, N, 3): tinted base, low-frequency waves, clutter blobs.

    The blobs take arbitrary colours, so a colour patch on its own never identifies a class.
    """
    x, y = canvas_grid(n)
    base = 0.5 * rng.uniform(0.15, 0.85, 3) + 0.5 * rng.uniform(0.25, 0.75)
    img = np.broadcast_to(base.astype(np.float32), (n, n, 3)).copy()
    for _ in range(3):
        freq = rng.uniform(0.5, 3.0) * math.pi
        theta = rng.uniform(0, math.pi)
        wave = np.sin(freq * (x * math.cos(theta) + y * math.sin(theta)) + rng.uniform(0, 6.3))
        img += wave[..., None] * (rng.uniform(-0.08, 0.08, 3)).astype(np.float32)
    for _ in range(clutter):
        cx, cy = rng.uniform(-1, 1, 2)
        rx, ry = rng.uniform(0.05, 0.3, 2)
        paint(img, ellipse(x, -y, cx, cy, rx, ry, rng.uniform(0, math.pi)), rng.uniform(0, 1, 3))
    return img
