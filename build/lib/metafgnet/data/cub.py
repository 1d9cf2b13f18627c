"""Reader for the CUB-200-2011 layout (also the layout of the synthetic target set).

Layout (root is the folder holding ``images.txt``; the official archive's ``CUB_200_2011/``
nesting is accepted too)::

    images.txt              <image_id> <class_dir>/<file>
    classes.txt             <class_id> <class_name>
    image_class_labels.txt  <image_id> <class_id>
    train_test_split.txt    <image_id> <1 = train | 0 = test>
    images/<class_dir>/<file>

Ids are 1-based; labels become 0-based in sorted class-id order. Every cross-file inconsistency
is a :class:`DataError` naming the file and the offending id.
"""

from __future__ import annotations

from pathlib import Path

from metafgnet.data.errors import DataError, require_dir, short_list
from metafgnet.data.records import Listing, Record

CUB_FILES = ("images.txt", "classes.txt", "image_class_labels.txt", "train_test_split.txt")
CUB_EXPECTED = ", ".join(CUB_FILES) + " and images/<class>/<file>"
CUB_SOURCE = (
    "Download CUB_200_2011.tgz from https://www.vision.caltech.edu/datasets/cub_200_2011/ "
    "and extract it there (the CUB_200_2011/ folder it creates is accepted as is)."
)
SYNTHETIC_SOURCE = (
    "The synthetic target is written by metafgnet.data.generate_synthetic (the pipeline's "
    "synthetic stage); run it first or point data.target_root at its target/ folder."
)


def find_cub_root(root: str | Path, what: str = "CUB-200-2011", source: str = CUB_SOURCE) -> Path:
    """The folder holding ``images.txt``: ``root`` itself or ``root/CUB_200_2011``."""
    base = require_dir(root, what, CUB_EXPECTED, source)
    for candidate in (base, base / "CUB_200_2011"):
        if (candidate / "images.txt").is_file():
            return candidate
    raise DataError(
        f"{what}: no images.txt in {base} or {base / 'CUB_200_2011'}; expected {CUB_EXPECTED} "
        f"there. {source}"
    )


def read_id_table(path: Path, what: str) -> dict[int, str]:
    """Parse a ``<id> <value>`` file into ``{id: value}``; malformed or duplicate ids raise."""
    if not path.is_file():
        raise DataError(f"{what}: metadata file {path} is missing; expected {CUB_EXPECTED}")
    table: dict[int, str] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=1)
        if len(parts) != 2 or not parts[0].isdigit():
            raise DataError(f"{what}: {path} line {n}: expected '<id> <value>', got {line!r}")
        key = int(parts[0])
        if key in table:
            raise DataError(f"{what}: {path} line {n}: duplicate id {key}")
        table[key] = parts[1].strip()
    if not table:
        raise DataError(f"{what}: metadata file {path} is empty")
    return table


def _same_ids(images: dict, other: dict, base: Path, name: str, what: str) -> None:
    missing = sorted(set(images) - set(other))
    if missing:
        raise DataError(
            f"{what}: image id {missing[0]} of images.txt has no line in {base / name} "
            f"({len(missing)} ids missing: {short_list([str(i) for i in missing])})"
        )
    extra = sorted(set(other) - set(images))
    if extra:
        raise DataError(
            f"{what}: {base / name} lists image id {extra[0]}, which is not in images.txt "
            f"({len(extra)} such ids: {short_list([str(i) for i in extra])})"
        )


def read_cub(
    root: str | Path, what: str = "CUB-200-2011", source: str = CUB_SOURCE, name: str = "cub"
) -> Listing:
    """Read a CUB-layout dataset: official train/test split, 0-based labels, class names.

    Record paths are relative to ``root`` as given (``images/...`` or
    ``CUB_200_2011/images/...``). Image files are not opened here (see
    :func:`metafgnet.data.images.check_images`).
    """
    base = find_cub_root(root, what, source)
    prefix = base.relative_to(Path(root)).as_posix()
    prefix = "" if prefix == "." else prefix + "/"
    images = read_id_table(base / "images.txt", what)
    classes = read_id_table(base / "classes.txt", what)
    labels = read_id_table(base / "image_class_labels.txt", what)
    split = read_id_table(base / "train_test_split.txt", what)
    _same_ids(images, labels, base, "image_class_labels.txt", what)
    _same_ids(images, split, base, "train_test_split.txt", what)
    if not (base / "images").is_dir():
        raise DataError(f"{what}: folder {base / 'images'} is missing; expected {CUB_EXPECTED}")
    index = {class_id: k for k, class_id in enumerate(sorted(classes))}
    train: list[Record] = []
    test: list[Record] = []
    for image_id in sorted(images):
        class_id = labels[image_id]
        if not class_id.isdigit() or int(class_id) not in index:
            raise DataError(
                f"{what}: {base / 'image_class_labels.txt'}: image id {image_id} has class id "
                f"{class_id!r}, which is not in classes.txt"
            )
        if split[image_id] not in ("0", "1"):
            raise DataError(
                f"{what}: {base / 'train_test_split.txt'}: image id {image_id} has split "
                f"{split[image_id]!r}; expected 1 (train) or 0 (test)"
            )
        record = Record(f"{prefix}images/{images[image_id]}", index[int(class_id)])
        (train if split[image_id] == "1" else test).append(record)
    return Listing(name, [classes[c] for c in sorted(classes)], train, test)
