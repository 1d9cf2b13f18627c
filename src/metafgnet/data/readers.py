"""Which reader serves which ``data.target`` / ``data.auxiliary`` setting.

The synthetic benchmark is read by the real readers: its target by the CUB reader, its
auxiliary set by the class-folder reader. ``auxiliary: none`` is an empty auxiliary set.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from metafgnet.data.cub import SYNTHETIC_SOURCE, read_cub
from metafgnet.data.dogs import read_dogs
from metafgnet.data.errors import DataError
from metafgnet.data.folder import read_folder
from metafgnet.data.records import Listing
from metafgnet.data.torchvision_sets import read_aircraft, read_cars, read_flowers
from metafgnet.params import DataParams

TARGET_READERS: dict[str, Callable[[Path], Listing]] = {
    "synthetic": lambda root: read_cub(
        root, what="synthetic target (CUB layout)", source=SYNTHETIC_SOURCE, name="synthetic"
    ),
    "cub": read_cub,
    "dogs": read_dogs,
    "aircraft": read_aircraft,
    "cars": read_cars,
    "flowers": read_flowers,
}
AUXILIARY_READERS: dict[str, Callable[[Path], Listing]] = {
    "synthetic": lambda root: read_folder(
        root,
        what="synthetic auxiliary set (class folders)",
        source=SYNTHETIC_SOURCE.replace("target", "auxiliary"),
        name="synthetic",
    ),
    "folder": read_folder,
    "none": lambda root: Listing("none", [], []),
}


def read_target(data: DataParams) -> Listing:
    """The target dataset named by ``data.target`` at ``data.target_root``, class count checked."""
    listing = TARGET_READERS[data.target](Path(data.target_root))
    _check_count(listing, data.num_target_classes, "data.num_target_classes", data.target_root)
    return listing


def read_auxiliary(data: DataParams) -> Listing:
    """The auxiliary set named by ``data.auxiliary`` (empty for ``none``), class count checked."""
    listing = AUXILIARY_READERS[data.auxiliary](Path(data.auxiliary_root))
    _check_count(
        listing, data.num_auxiliary_classes, "data.num_auxiliary_classes", data.auxiliary_root
    )
    return listing


def _check_count(listing: Listing, expected: int, key: str, root: str) -> None:
    if expected and listing.num_classes != expected:
        raise DataError(
            f"{key} is {expected} but the {listing.name} dataset at {root} has "
            f"{listing.num_classes} classes; fix the dataset or set {key} to "
            f"{listing.num_classes} (0 accepts any count)"
        )
