"""What every reader returns: labelled image records relative to the dataset root as given."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


class Record(NamedTuple):
    """One image: ``path`` relative to the dataset root (POSIX separators), ``label`` 0-based."""

    path: str
    label: int


@dataclasses.dataclass(frozen=True)
class Listing:
    """A dataset as read from its metadata: class names and the official train/test records.

    ``class_names[label]`` names each label. Auxiliary sets have no test records.
    """

    name: str
    class_names: list[str]
    train: list[Record]
    test: list[Record] = dataclasses.field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)
