"""FGVC-Aircraft, Stanford Cars and Flowers-102 through torchvision's readers (never downloading).

torchvision's dataset classes parse the official metadata; we only take their image lists and
labels (no image is opened here) and turn "Dataset not found" into a :class:`DataError` that
says which layout is expected. Splits used as the *target training set*, from which the
validation split is carved: Aircraft ``trainval``, Flowers-102 ``train`` + ``val``, Cars
``train``; the official ``test`` split is the test set.

``root`` is the folder that holds ``fgvc-aircraft-2013b/``, ``flowers-102/`` or
``stanford_cars/`` (that inner folder itself is accepted too).
"""

from __future__ import annotations

import os
from pathlib import Path

from torchvision.datasets import FGVCAircraft, Flowers102, StanfordCars

from metafgnet.data.errors import DataError, require_dir
from metafgnet.data.records import Listing, Record

AIRCRAFT_SOURCE = (
    "Download fgvc-aircraft-2013b.tar.gz from https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/ "
    "and extract it there."
)
FLOWERS_SOURCE = (
    "Download 102flowers.tgz, imagelabels.mat and setid.mat from "
    "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/ into <root>/flowers-102/ and extract the "
    "images there (jpg/)."
)
CARS_SOURCE = (
    "The original Stanford Cars URL is offline; place a copy in the layout torchvision reads "
    "(see torchvision.datasets.StanfordCars)."
)


def _outer_root(root: str | Path, inner: str, what: str, expected: str, source: str) -> Path:
    """The folder that holds ``inner``; a root that *is* ``inner`` is stepped out of."""
    base = require_dir(Path(root).expanduser(), what, expected, source)
    if base.name == inner and not (base / inner).exists():
        return base.parent
    return base


def _relative(paths, labels, given: Path) -> list[Record]:
    return [
        Record(Path(os.path.relpath(p, given)).as_posix(), int(y))
        for p, y in zip(paths, labels, strict=True)
    ]


def _official_splits(cls, root: str | Path, splits: tuple[str, str], inner: str, what: str,
                     expected: str, source: str) -> list:
    """torchvision's ``cls`` for each of ``splits`` (never downloading) under the folder that
    holds ``inner``, its errors mapped to a :class:`DataError`."""
    outer = str(_outer_root(root, inner, what, expected, source))
    try:
        return [cls(root=outer, split=split, download=False) for split in splits]
    except RuntimeError:  # torchvision's "Dataset not found" (its download hint does not apply)
        raise DataError(
            f"{what}: dataset not found under {outer}; expected {expected} there. {source}"
        ) from None
    except (OSError, KeyError, ValueError, IndexError) as exc:
        raise DataError(f"{what}: unreadable metadata under {outer}: {exc!r}") from None


def read_aircraft(root: str | Path) -> Listing:
    """FGVC-Aircraft (100 variants): ``trainval`` as train, ``test`` as test."""
    expected = (
        "fgvc-aircraft-2013b/data/{variants.txt, images_variant_trainval.txt, "
        "images_variant_test.txt, images/}"
    )
    parts = _official_splits(FGVCAircraft, root, ("trainval", "test"), "fgvc-aircraft-2013b",
                             "FGVC-Aircraft", expected, AIRCRAFT_SOURCE)
    given = Path(root).expanduser()
    train, test = (_relative(d._image_files, d._labels, given) for d in parts)
    return Listing("aircraft", list(parts[1].classes), train, test)


class _Flowers102Unverified(Flowers102):
    """Flowers102 that checks the metadata files exist but not their MD5 sums (fixtures, copies)."""

    def _check_integrity(self) -> bool:
        return self._images_folder.is_dir() and all(
            (self._base_folder / self._file_dict[key][0]).is_file() for key in ("label", "setid")
        )


def read_flowers(root: str | Path, verify_checksums: bool = True) -> Listing:
    """Flowers-102: ``train`` + ``val`` as train, ``test`` as test.

    With ``verify_checksums`` (default) the ``.mat`` files must match the official MD5 sums, as
    torchvision requires; pass False for re-encoded copies or small test fixtures.
    """
    what = "Flowers-102"
    expected = "flowers-102/{jpg/image_#####.jpg, imagelabels.mat, setid.mat}"
    outer = _outer_root(root, "flowers-102", what, expected, FLOWERS_SOURCE)
    folder = outer / "flowers-102"
    missing = [n for n in ("jpg", "imagelabels.mat", "setid.mat") if not (folder / n).exists()]
    if missing:
        raise DataError(
            f"{what}: {', '.join(missing)} missing in {folder}; expected {expected}. "
            f"{FLOWERS_SOURCE}"
        )
    cls = Flowers102 if verify_checksums else _Flowers102Unverified
    try:
        parts = {s: cls(root=str(outer), split=s, download=False) for s in ("train", "val", "test")}
    except RuntimeError:
        raise DataError(
            f"{what}: imagelabels.mat or setid.mat in {folder} does not match the official MD5 "
            f"checksum; re-download them ({FLOWERS_SOURCE}) or read with verify_checksums=False"
        ) from None
    given = Path(root).expanduser()
    train = [
        r
        for s in ("train", "val")
        for r in _relative(parts[s]._image_files, parts[s]._labels, given)
    ]
    test = _relative(parts["test"]._image_files, parts["test"]._labels, given)
    num_classes = 1 + max(r.label for r in train + test)
    if num_classes > len(Flowers102.classes):
        raise DataError(f"{what}: imagelabels.mat has label {num_classes}; expected at most 102")
    return Listing("flowers", list(Flowers102.classes[:num_classes]), train, test)


def read_cars(root: str | Path) -> Listing:
    """Stanford Cars (196 classes): official ``train`` and ``test`` splits."""
    expected = (
        "stanford_cars/{devkit/cars_meta.mat, devkit/cars_train_annos.mat, cars_train/, "
        "cars_test_annos_withlabels.mat, cars_test/}"
    )
    parts = _official_splits(StanfordCars, root, ("train", "test"), "stanford_cars",
                             "Stanford Cars", expected, CARS_SOURCE)
    given = Path(root).expanduser()
    train, test = (
        _relative([p for p, _ in d._samples], [y for _, y in d._samples], given) for d in parts
    )
    return Listing("cars", [str(c) for c in parts[0].classes], train, test)
