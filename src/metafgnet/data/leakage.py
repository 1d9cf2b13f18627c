"""Leakage between the auxiliary set and the target: auxiliary images that copy a target image.

The paper's own settings invite it: Stanford Dogs is built from ImageNet images (the
``dogs_imagenet`` preset's auxiliary set), and byte-identical CUB-200-2011 test images have been
found in ImageNet. Every auxiliary image is compared with every target image (train, val and
test), each image read and hashed once:

- **exact**: the two files are byte-identical (same sha256);
- **near**: not byte-identical, but their perceptual hashes (``imagehash.phash``: the signs of
  the 8×8 low-frequency DCT coefficients of the image reduced to 32×32 grey, 64 bits) differ
  in at most ``data.leakage.max_distance`` bits: the same picture resized or re-encoded, or
  slightly cropped. A perceptual hash is not a proof: a larger threshold finds more altered
  copies and, among similar pictures, more false ones; ``docs/parameters.md`` says where the
  default comes from. Small images are the hard case (one pixel of a crop is several percent).

The comparison is brute force, ``O(auxiliary × target)`` Hamming distances in blocks of
:data:`BLOCK` auxiliary images, which suits the embedded benchmark and CUB-sized targets.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
from pathlib import Path

import imagehash
import numpy as np
from PIL import Image

from metafgnet.data.errors import DataError
from metafgnet.data.images import map_images, to_rgb
from metafgnet.data.records import Record
from metafgnet.io import csv_text

TARGET_SPLITS = ("train", "val", "test")
KINDS = ("exact", "near")
COLUMNS = ["auxiliary", "split", "target", "kind", "distance"]
LEAKAGE_METRICS = "leakage.json"  # beside the manifests: leak_counts, a DVC metrics file
LEAKAGE_PAIRS = "leakage.csv"  # beside the manifests: every pair, leaks_csv
BLOCK = 2048  # auxiliary images per block of distances: BLOCK × target uint8s at a time


@dataclasses.dataclass(frozen=True, order=True)
class Leak:
    """One auxiliary image (``auxiliary``, its manifest path) that copies the target image
    ``target`` of ``split``; ``distance`` is the Hamming distance of their perceptual hashes."""

    auxiliary: str
    split: str
    target: str
    kind: str
    distance: int


def fingerprint(path: Path, rel: str) -> tuple[str, int]:
    """``(sha256 of the file, 64-bit perceptual hash)`` of one image, from one read."""
    try:
        raw = path.read_bytes()
        with Image.open(io.BytesIO(raw)) as im:
            im.load()
            phash = imagehash.phash(to_rgb(im))
    except Exception as exc:  # prepare has decoded every image already; this is a race
        raise DataError(f"{rel}: cannot hash the image for the leakage check ({exc})") from exc
    bits = phash.hash.flatten()
    return hashlib.sha256(raw).hexdigest(), int(np.packbits(bits).view(">u8")[0])


def fingerprints(root: Path, records: list[Record],
                 workers: int = 1) -> tuple[list[str], np.ndarray]:
    """Digests and perceptual hashes (``uint64`` array) of ``records`` under ``root``."""
    pairs = map_images(fingerprint, root, records, workers)
    return [d for d, _ in pairs], np.array([h for _, h in pairs], dtype=np.uint64)


def find_leaks(splits: dict[str, list[Record]], target_root: Path, auxiliary: list[Record],
               auxiliary_root: Path, max_distance: int, workers: int = 1) -> list[Leak]:
    """Every (auxiliary image, target image) pair that is an exact or near copy, sorted.

    ``splits``: the target records per split (keys of :data:`TARGET_SPLITS`)."""
    target = [(split, r) for split in TARGET_SPLITS for r in splits.get(split, [])]
    if not target or not auxiliary:
        return []
    t_digest, t_hash = fingerprints(target_root, [r for _, r in target], workers)
    a_digest, a_hash = fingerprints(auxiliary_root, auxiliary, workers)
    leaks = []
    for start in range(0, len(auxiliary), BLOCK):
        block = a_hash[start:start + BLOCK]
        distance = np.bitwise_count(block[:, None] ^ t_hash[None, :])  # (block, target) uint8
        # byte-identical files have the same hash (distance 0), so exact copies are found here too
        for i, j in zip(*np.nonzero(distance <= max_distance), strict=True):
            split, record = target[j]
            kind = "exact" if a_digest[start + i] == t_digest[j] else "near"
            leaks.append(Leak(auxiliary[start + i].path, split, record.path, kind,
                              int(distance[i, j])))
    return sorted(leaks)


def leak_counts(leaks: list[Leak], max_distance: int, dropped: int) -> dict:
    """The metrics of a check: per target split and kind, the auxiliary images that copy an
    image of that split; ``auxiliary_images``, those that copy any target image; ``dropped``,
    how many of them left the auxiliary set (``data.leakage.drop``)."""
    counts: dict = {split: {kind: len({leak.auxiliary for leak in leaks
                                       if leak.split == split and leak.kind == kind})
                            for kind in KINDS} for split in TARGET_SPLITS}
    counts.update(auxiliary_images=len({leak.auxiliary for leak in leaks}),
                  max_distance=max_distance, dropped=dropped)
    return counts


def leaks_csv(leaks: list[Leak]) -> str:
    """The pairs as CSV (:data:`COLUMNS`; paths as in the manifests)."""
    return csv_text(COLUMNS, (dataclasses.astuple(leak) for leak in leaks))
