"""Object families of the synthetic benchmark: a shape, its detail attributes, how to draw it.

The target family is the ``bird`` (body, head, beak, wing, tail). Its classes differ only in
small local details: head colour, wing pattern and tail colour; body colour, pose, scale and
background are nuisances. Related auxiliary classes are other birds (other detail
combinations), so what is learned on them transfers. Unrelated families (fish, flower, vehicle,
house) have other shapes and are told apart by geometry (fin shape, petal count, wheels,
windows), with colours drawn at random per image, so their cues are useless for the birds.

Every ``draw`` paints onto an (N, N, 3) float image given the posed object-frame grid ``(u, v)``;
``jitter`` (``SyntheticParams.detail_jitter``) perturbs detail colours and part geometry.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable

import numpy as np

from metafgnet.data.raster import ellipse, paint, polygon, rect, stripes

PALETTE: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.10, 0.10),
    "orange": (0.95, 0.55, 0.10),
    "yellow": (0.95, 0.90, 0.15),
    "green": (0.20, 0.70, 0.20),
    "blue": (0.15, 0.30, 0.90),
    "purple": (0.55, 0.20, 0.70),
    "black": (0.08, 0.08, 0.08),
    "white": (0.95, 0.95, 0.95),
}
WING_PATTERNS = ("plain", "striped", "spotted", "barred", "tipped")


def _detail(name: str, rng: np.random.Generator, jitter: float) -> np.ndarray:
    """A palette colour perturbed per image by ``jitter``: neighbouring colours blur together."""
    return np.clip(np.asarray(PALETTE[name]) + rng.normal(0.0, jitter, 3), 0.0, 1.0)


def _size(rng: np.random.Generator, jitter: float) -> float:
    """A multiplicative part-size jitter around 1."""
    return float(1.0 + 0.5 * jitter * rng.uniform(-1, 1))


def draw_bird(img, u, v, attrs: tuple, rng: np.random.Generator, jitter: float) -> None:
    """A bird facing +u: tail, body, patterned wing, head with eye, beak."""
    head, pattern, tail = attrs
    body_col = np.clip(rng.uniform(0.35, 0.65) + rng.uniform(-0.12, 0.12, 3), 0, 1)
    tail_len = 0.9 * _size(rng, jitter)
    paint(
        img,
        polygon(u, v, [(-0.35, 0.08), (-tail_len, 0.28), (-tail_len, -0.12)]),
        _detail(tail, rng, jitter),
    )
    paint(img, ellipse(u, v, 0.0, 0.0, 0.5, 0.3), body_col)
    # Wing: darker than the body, pattern in a light colour.
    wa = -0.15 + 0.3 * jitter * rng.uniform(-1, 1)
    wing = ellipse(u, v, -0.08, 0.04, 0.34 * _size(rng, jitter), 0.15, wa)
    wing_col = body_col * 0.55
    paint(img, wing, wing_col)
    contrast = rng.uniform(max(0.0, 1.0 - 2.0 * jitter), 1.0)
    mark = wing_col + contrast * (np.clip(0.92 + rng.normal(0, 0.3 * jitter, 3), 0, 1) - wing_col)
    if pattern == "striped":
        paint(img, wing & stripes(u, v, 0.16, 0.07, rng.uniform(0, 0.16), wa), mark)
    elif pattern == "spotted":
        for k in range(3):
            cu = -0.3 + 0.2 * k + 0.04 * jitter * rng.normal()
            cv = 0.04 + 0.05 * (-1) ** k + 0.04 * jitter * rng.normal()
            paint(img, wing & ellipse(u, v, cu, cv, 0.055, 0.055), mark)
    elif pattern == "barred":
        paint(img, wing & (np.abs(v - 0.04 - (u + 0.08) * math.tan(wa)) < 0.045), mark)
    elif pattern == "tipped":
        paint(img, wing & (u < -0.08 - 0.34 * (0.45 + 0.2 * jitter * rng.uniform(-1, 1))), mark)
    hr = 0.19 * _size(rng, jitter)
    paint(img, ellipse(u, v, 0.5, 0.24, hr, hr), _detail(head, rng, jitter))
    eye = np.full(3, 0.95 if head == "black" else 0.05)
    paint(img, ellipse(u, v, 0.56, 0.29, 0.045, 0.045), eye)
    paint(img, polygon(u, v, [(0.62, 0.29), (0.62, 0.17), (0.86, 0.23)]), np.full(3, 0.25))


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0.0, 1.0, 3)


def draw_fish(img, u, v, attrs: tuple, rng: np.random.Generator, jitter: float) -> None:
    """A fish: tail fin shape, number of vertical bands and dorsal fin are its details."""
    fin, bands, dorsal = attrs
    fin_col = _random_colour(rng)
    if fin == "forked":
        paint(img, polygon(u, v, [(-0.4, 0.0), (-0.85, 0.32), (-0.72, 0.0)]), fin_col)
        paint(img, polygon(u, v, [(-0.4, 0.0), (-0.72, 0.0), (-0.85, -0.32)]), fin_col)
    elif fin == "round":
        paint(img, ellipse(u, v, -0.6, 0.0, 0.24, 0.26), fin_col)
    else:
        paint(
            img,
            polygon(u, v, [(-0.4, 0.06), (-0.82, 0.26), (-0.82, -0.26), (-0.4, -0.06)]),
            fin_col,
        )
    if dorsal:
        paint(img, polygon(u, v, [(-0.15, 0.22), (0.25, 0.22), (-0.05, 0.52)]), fin_col)
    body = ellipse(u, v, 0.1, 0.0, 0.55 * _size(rng, jitter), 0.28)
    paint(img, body, _random_colour(rng))
    band_col = _random_colour(rng)
    for k in range(bands):
        cu = 0.1 + (k - (bands - 1) / 2) * 0.25
        paint(img, body & (np.abs(u - cu) < 0.05), band_col)
    paint(img, ellipse(u, v, 0.5, 0.06, 0.05, 0.05), np.full(3, 0.05))


def draw_flower(img, u, v, attrs: tuple, rng: np.random.Generator, jitter: float) -> None:
    """A flower: petal count, petal shape and centre size are its details."""
    petals, shape, centre = attrs
    paint(img, rect(u, v, -0.03, -0.95, 0.03, -0.2), _random_colour(rng))
    petal_col = _random_colour(rng)
    rx, ry = (0.3, 0.1) if shape == "narrow" else (0.26, 0.19)
    turn = rng.uniform(0, 2 * math.pi)
    for k in range(petals):
        a = turn + 2 * math.pi * k / petals
        paint(img, ellipse(u, v, 0.4 * math.cos(a), 0.4 * math.sin(a), rx, ry, a), petal_col)
    r = 0.12 if centre == "small" else 0.22
    paint(img, ellipse(u, v, 0.0, 0.0, r, r), _random_colour(rng))


def draw_vehicle(img, u, v, attrs: tuple, rng: np.random.Generator, jitter: float) -> None:
    """A side-view vehicle: wheel count, cabin length and window count are its details."""
    wheels, cabin, windows = attrs
    paint(img, rect(u, v, -0.8, -0.2, 0.8, 0.15), _random_colour(rng))
    if cabin != "none":
        half = 0.22 if cabin == "short" else 0.5
        paint(img, rect(u, v, -half, 0.15, half, 0.45), _random_colour(rng))
        glass = _random_colour(rng)
        step = 2 * half / windows
        for k in range(windows):
            paint(
                img,
                rect(u, v, -half + k * step + 0.04, 0.2, -half + (k + 1) * step - 0.04, 0.4),
                glass,
            )
    for cu in (-0.5, 0.5) if wheels == 2 else (-0.55, 0.0, 0.55):
        paint(img, ellipse(u, v, cu, -0.22, 0.15, 0.15), np.full(3, 0.05))


def draw_house(img, u, v, attrs: tuple, rng: np.random.Generator, jitter: float) -> None:
    """A house: roof shape, window count and chimney are its details."""
    roof, windows, chimney = attrs
    roof_col = _random_colour(rng)
    if chimney:
        paint(img, rect(u, v, 0.3, 0.2, 0.42, 0.62), roof_col * 0.7)
    if roof == "pointed":
        paint(img, polygon(u, v, [(-0.7, 0.15), (0.7, 0.15), (0.0, 0.65)]), roof_col)
    elif roof == "flat":
        paint(img, rect(u, v, -0.65, 0.15, 0.65, 0.3), roof_col)
    else:
        paint(img, ellipse(u, v, 0.0, 0.15, 0.55, 0.4) & (v >= 0.15), roof_col)
    paint(img, rect(u, v, -0.55, -0.6, 0.55, 0.15), _random_colour(rng))
    glass = _random_colour(rng)
    step = 1.1 / windows
    for k in range(windows):
        cu = -0.55 + (k + 0.5) * step
        paint(img, rect(u, v, cu - 0.08, -0.15, cu + 0.08, 0.02), glass)


@dataclasses.dataclass(frozen=True)
class Family:
    """An object family: its name, every combination of its detail attributes, its painter."""

    name: str
    combos: tuple[tuple, ...]
    draw: Callable[..., None]
    extent: float  # object-frame half-size, used to keep the object on the canvas

    def describe(self, attrs: tuple) -> str:
        """A readable class name from an attribute tuple, e.g. ``red_head_striped_wing_...``."""
        if self.name == "bird":
            return f"{attrs[0]}_head_{attrs[1]}_wing_{attrs[2]}_tail"
        return "_".join(str(a) for a in attrs)


BIRD = Family("bird", tuple(itertools.product(PALETTE, WING_PATTERNS, PALETTE)), draw_bird, 0.95)
UNRELATED: tuple[Family, ...] = (
    Family(
        "fish",
        tuple(itertools.product(("forked", "round", "square"), range(4), (False, True))),
        draw_fish,
        0.9,
    ),
    Family(
        "flower",
        tuple(itertools.product(range(4, 9), ("narrow", "round"), ("small", "large"))),
        draw_flower,
        0.95,
    ),
    Family(
        "vehicle",
        tuple(itertools.product((2, 3), ("short", "long"), (1, 2, 3)))
        + ((2, "none", 0), (3, "none", 0)),
        draw_vehicle,
        0.85,
    ),
    Family(
        "house",
        tuple(itertools.product(("pointed", "flat", "dome"), (1, 2, 3, 4), (False, True))),
        draw_house,
        0.8,
    ),
)
