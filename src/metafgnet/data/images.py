"""Opening images: the integrity check run when manifests are prepared, and RGB loading.

:func:`check_images` fully decodes every listed image once (a truncated JPEG passes a header
check but not a decode) and reports the unreadable ones with a reason; what to do with them is
the caller's decision (``data.on_corrupt``). :func:`load_rgb` converts any PIL mode (L, P, RGBA,
CMYK, 16-bit grey, ...) to RGB: non-RGB input is normal, not an error.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image

from metafgnet.data.records import Record

T = TypeVar("T")

_HIGH_DEPTH_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")


def image_problem(path: Path, rel: str) -> str | None:
    """Why ``path`` cannot be used as an image, or None if it decodes completely.

    The reason mentions the file by ``rel`` (its manifest path), never by absolute path, so
    reports stay identical across machines.
    """
    if not path.exists():
        return "missing"
    if not path.is_file():
        return "not a file"
    try:
        with Image.open(path) as im:
            im.load()
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, zlib errors, ...
        text = str(exc).replace(str(path), rel) or type(exc).__name__
        return f"unreadable ({text})"
    return None


def map_images(fn: Callable[[Path, str], T], root: Path, records: list[Record],
               workers: int = 1) -> list[T]:
    """``fn(root / record.path, record.path)`` for every record, in record order.

    Decoding releases the GIL, so ``workers`` threads help.
    """

    def one(record: Record) -> T:
        return fn(root / record.path, record.path)

    if workers > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(one, records, chunksize=64))
    return [one(r) for r in records]


def check_images(root: Path, records: list[Record], workers: int = 1) -> list[tuple[str, str]]:
    """``(path, reason)`` of every record under ``root`` that is missing or does not decode."""
    reasons = map_images(image_problem, root, records, workers)
    return [(r.path, why) for r, why in zip(records, reasons, strict=True) if why is not None]


def to_rgb(im: Image.Image) -> Image.Image:
    """An RGB copy of ``im``: palette transparency goes through RGBA, alpha is dropped, high
    bit-depth grey is rescaled to 8 bits, CMYK/YCbCr/LAB are converted by PIL."""
    if im.mode == "RGB":
        return im.copy()
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in _HIGH_DEPTH_MODES:
        arr = np.asarray(im, dtype=np.float64)
        top = 65535.0 if arr.max(initial=0) > 255 else 255.0
        im = Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    return im.convert("RGB")


def load_rgb(path: str | Path) -> Image.Image:
    """Open an image file and return it fully loaded as RGB (the file is closed on return)."""
    with Image.open(path) as im:
        im.load()
        return to_rgb(im)
