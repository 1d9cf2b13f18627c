"""Manifests: the small CSV files later stages read instead of walking image trees.

A prepared folder holds ``target_train.csv``, ``target_val.csv``, ``target_test.csv``,
``auxiliary.csv`` (columns ``path,label,split``; ``path`` relative to that split's dataset
root) and ``index.json`` (roots as given, class names, counts, the sha256 of every manifest, a
combined digest, skipped files). :func:`load_prepared` reads it back as :class:`PreparedData`
and refuses manifests whose digest no longer matches the index.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
from pathlib import Path

from metafgnet.data.errors import DataError
from metafgnet.data.records import Record
from metafgnet.io import csv_text, file_digest

SPLITS = ("train", "val", "test", "auxiliary")
MANIFESTS = {
    "train": "target_train.csv",
    "val": "target_val.csv",
    "test": "target_test.csv",
    "auxiliary": "auxiliary.csv",
}
INDEX = "index.json"
COLUMNS = ["path", "label", "split"]


def manifest_text(records: list[Record], split: str) -> str:
    """The CSV text of one manifest."""
    return csv_text(COLUMNS, ([record.path, record.label, split] for record in records))


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def combined_digest(
    digests: dict[str, str], target_classes: list[str], auxiliary_classes: list[str]
) -> str:
    """One sha256 over every manifest digest and both class-name lists."""
    payload = json.dumps(
        {
            "manifests": digests,
            "target_classes": target_classes,
            "auxiliary_classes": auxiliary_classes,
        },
        sort_keys=True,
    )
    return sha256_text(payload)


def _parse_manifest(path: Path, num_classes: int) -> list[Record]:
    rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))
    if not rows or rows[0] != COLUMNS:
        raise DataError(f"{path}: expected the header {','.join(COLUMNS)}")
    records = []
    for n, row in enumerate(rows[1:], 2):
        if len(row) != 3 or not row[1].isdigit() or int(row[1]) >= num_classes:
            raise DataError(
                f"{path} line {n}: expected path,label (< {num_classes}),split; got {row}"
            )
        records.append(Record(row[0], int(row[1])))
    return records


@dataclasses.dataclass(frozen=True)
class PreparedData:
    """Everything later stages need to know about the data, read from a prepared folder.

    ``target_root`` / ``auxiliary_root`` are the roots as given to prepare (relative ones are
    resolved against ``base_dir``, the working directory when loaded, by :meth:`root`).
    """

    prepared_dir: Path
    target_root: Path
    auxiliary_root: Path
    target_classes: list[str]
    auxiliary_classes: list[str]
    train: list[Record]
    val: list[Record]
    test: list[Record]
    auxiliary: list[Record]
    digest: str
    skipped_count: int
    base_dir: Path
    # split -> sha256 of its manifest, as recorded in index.json (see manifest_digest)
    manifest_digests: dict[str, str] = dataclasses.field(default_factory=dict)

    def records(self, split: str) -> list[Record]:
        """Records of ``split``: one of train, val, test (target) or auxiliary."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        return getattr(self, split)

    def root(self, split: str) -> Path:
        """Absolute dataset root of ``split`` (the auxiliary root for ``auxiliary``)."""
        given = self.auxiliary_root if split == "auxiliary" else self.target_root
        self.records(split)  # validates the name
        return (self.base_dir / given).resolve()

    def paths(self, split: str) -> list[Path]:
        """Absolute image paths of ``split``, in manifest order."""
        root = self.root(split)
        return [root / r.path for r in self.records(split)]

    def manifest_path(self, split: str) -> Path:
        """The manifest file of ``split`` in the prepared folder."""
        self.records(split)  # validates the name
        return self.prepared_dir / MANIFESTS[split]

    def manifest_digest(self, split: str) -> str:
        """sha256 of ``split``'s manifest file: the one recorded in ``index.json``, or (for data
        built in memory) recomputed from the records, which gives the same bytes."""
        if split in self.manifest_digests:
            return self.manifest_digests[split]
        records = self.records(split)  # validates the name
        return sha256_text(manifest_text(records, "train" if split == "auxiliary" else split))


def load_prepared(prepared_dir: str | Path, base_dir: str | Path | None = None) -> PreparedData:
    """Read a folder written by :func:`~metafgnet.data.prepare.prepare_manifests`.

    Every manifest's sha256 must match ``index.json``; ``base_dir`` (default: the current
    directory) resolves relative dataset roots.
    """
    prepared_dir = Path(prepared_dir)
    index_path = prepared_dir / INDEX
    if not index_path.is_file():
        raise DataError(
            f"{index_path} not found: {prepared_dir} is not a prepared data folder; run "
            "metafgnet.data.prepare_manifests (the pipeline's prepare stage) first"
        )
    try:
        index = json.loads(index_path.read_text())
        n_classes = {
            "target": len(index["target"]["classes"]),
            "auxiliary": len(index["auxiliary"]["classes"]),
        }
        recorded = {name: index["manifests"][name] for name in MANIFESTS.values()}
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DataError(f"{index_path} is malformed ({exc!r}); re-run prepare_manifests") from None
    splits = {}
    for split, name in MANIFESTS.items():
        path = prepared_dir / name
        if not path.is_file():
            raise DataError(f"{path} is missing; re-run prepare_manifests")
        if file_digest(path) != recorded[name]:
            raise DataError(
                f"{path} does not match the sha256 recorded in {index_path}: it changed after "
                "it was prepared; re-run prepare_manifests"
            )
        splits[split] = _parse_manifest(
            path, n_classes["auxiliary" if split == "auxiliary" else "target"]
        )
    return PreparedData(
        prepared_dir=prepared_dir,
        target_root=Path(index["target"]["root"]),
        auxiliary_root=Path(index["auxiliary"]["root"]),
        target_classes=list(index["target"]["classes"]),
        auxiliary_classes=list(index["auxiliary"]["classes"]),
        digest=index["digest"],
        skipped_count=int(index["skipped_count"]),
        base_dir=Path.cwd() if base_dir is None else Path(base_dir),
        manifest_digests={split: recorded[name] for split, name in MANIFESTS.items()},
        **splits,
    )
