"""Reader for class-folder image trees (ImageNet ``train/<wnid>/*.JPEG``, L-Bird, synthetic aux).

The root may be the tree itself or hold it under ``train/`` (ImageNet's layout): if
``root/train`` is a folder it is used. Class index = position in the sorted folder names, like
torchvision's ``ImageFolder``; images are found recursively by extension; hidden entries
(``.name``) are ignored. An empty class folder is an error that names the folder.
"""

from __future__ import annotations

import os
from pathlib import Path

from metafgnet.data.errors import DataError, require_dir
from metafgnet.data.records import IMAGE_EXTENSIONS, Listing, Record

FOLDER_EXPECTED = "one sub-folder per class, <class>/<image> (or train/<class>/<image>)"
FOLDER_SOURCE = (
    "For ImageNet download ILSVRC2012 from https://image-net.org/ and extract train/ there; any "
    "class-folder tree (e.g. an L-Bird subset) works."
)


def _images_under(folder: Path) -> list[str]:
    """Image files below ``folder`` as sorted POSIX paths relative to it (hidden ones skipped)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        rel = Path(dirpath).relative_to(folder)
        for name in filenames:
            if not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS):
                found.append((rel / name).as_posix())
    return sorted(found)


def read_folder(
    root: str | Path,
    what: str = "class-folder dataset",
    source: str = FOLDER_SOURCE,
    name: str = "folder",
) -> Listing:
    """Read a class-folder tree as one training split; paths are relative to ``root`` as given."""
    base = require_dir(root, what, FOLDER_EXPECTED, source)
    prefix = ""
    if (base / "train").is_dir():
        base, prefix = base / "train", "train/"
    classes = sorted(
        entry.name
        for entry in os.scandir(base)
        if entry.is_dir() and not entry.name.startswith(".")
    )
    if not classes:
        raise DataError(f"{what}: no class folders in {base}; expected {FOLDER_EXPECTED}. {source}")
    records: list[Record] = []
    for label, cls in enumerate(classes):
        files = _images_under(base / cls)
        if not files:
            raise DataError(
                f"{what}: class folder {base / cls} holds no images "
                f"({'/'.join(IMAGE_EXTENSIONS)}); add images or remove the folder"
            )
        records.extend(Record(f"{prefix}{cls}/{f}", label) for f in files)
    return Listing(name, classes, records, [])
