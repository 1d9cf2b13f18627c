"""Reader for Stanford Dogs: ``Images/<breed>/*.jpg`` plus the official ``.mat`` split lists.

``train_list.mat`` / ``test_list.mat`` (in ``lists/`` or at the root, as ``lists.tar`` extracts)
hold ``file_list`` (cell array of ``'<breed>/<name>.jpg'``) and ``labels`` (1-based). Class
names are the breed folder names, in label order; 12,000 train / 8,580 test images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io

from metafgnet.data.errors import DataError, require_dir
from metafgnet.data.records import Listing, Record

WHAT = "Stanford Dogs"
EXPECTED = "Images/<breed>/*.jpg and lists/train_list.mat, lists/test_list.mat"
SOURCE = (
    "Download images.tar and lists.tar from http://vision.stanford.edu/aditya86/ImageNetDogs/ "
    "and extract both there."
)


def _find_list(root: Path, name: str) -> Path:
    for candidate in (root / "lists" / name, root / name):
        if candidate.is_file():
            return candidate
    raise DataError(
        f"{WHAT}: split list {name} not found in {root / 'lists'} or {root}; expected {EXPECTED}. "
        f"{SOURCE}"
    )


def read_split_list(path: Path) -> list[tuple[str, int]]:
    """``(file, label_1_based)`` pairs of one official ``*_list.mat``."""
    try:
        mat = scipy.io.loadmat(str(path), squeeze_me=True)
    except Exception as exc:  # scipy raises several types for a damaged file
        raise DataError(f"{WHAT}: {path} is not a readable MATLAB file ({exc})") from None
    for key in ("file_list", "labels"):
        if key not in mat:
            found = sorted(k for k in mat if not k.startswith("__"))
            raise DataError(f"{WHAT}: {path} has no {key!r} entry (found {found})")
    files = [str(f) for f in np.atleast_1d(mat["file_list"])]
    labels = np.atleast_1d(mat["labels"]).astype(float)
    if len(files) != len(labels):
        raise DataError(
            f"{WHAT}: {path}: file_list has {len(files)} entries but labels has {len(labels)}"
        )
    bad = [i for i, x in enumerate(labels) if x != int(x) or x < 1]
    if bad:
        raise DataError(
            f"{WHAT}: {path}: label {labels[bad[0]]} of {files[bad[0]]} is not a 1-based integer"
        )
    return [(f, int(x)) for f, x in zip(files, labels, strict=True)]


def read_dogs(root: str | Path) -> Listing:
    """Read Stanford Dogs with the official train/test lists; labels 0-based, breeds as names."""
    base = require_dir(root, WHAT, EXPECTED, SOURCE)
    if not (base / "Images").is_dir():
        raise DataError(
            f"{WHAT}: folder {base / 'Images'} is missing; expected {EXPECTED}. {SOURCE}"
        )
    splits = {s: read_split_list(_find_list(base, f"{s}_list.mat")) for s in ("train", "test")}
    breeds: dict[int, str] = {}
    for split, pairs in splits.items():
        for file, label in pairs:
            breed = file.replace("\\", "/").split("/")[0]
            if breeds.setdefault(label, breed) != breed:
                raise DataError(
                    f"{WHAT}: {split}_list.mat: label {label} is used for breed folders "
                    f"{breeds[label]!r} and {breed!r}; one label must name one breed"
                )
    num_classes = max(breeds)
    missing = [c for c in range(1, num_classes + 1) if c not in breeds]
    if missing:
        raise DataError(
            f"{WHAT}: label {missing[0]} has no image in train_list.mat or test_list.mat; "
            f"labels must run 1..{num_classes}"
        )
    train, test = (
        [Record(f"Images/{f.replace(chr(92), '/')}", label - 1) for f, label in splits[s]]
        for s in ("train", "test")
    )
    return Listing("dogs", [breeds[c] for c in range(1, num_classes + 1)], train, test)
