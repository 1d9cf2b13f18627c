"""``prepare_manifests``: read the datasets once, check every image, carve the validation split,
look for auxiliary copies of target images (:mod:`metafgnet.data.leakage`), write the manifests,
``index.json``, ``leakage.json`` (a DVC metrics file) and ``leakage.csv``, all or nothing.
"""

from __future__ import annotations

import logging
from pathlib import Path

from metafgnet.data.errors import DataError, short_list
from metafgnet.data.images import check_images
from metafgnet.data.leakage import (
    LEAKAGE_METRICS,
    LEAKAGE_PAIRS,
    find_leaks,
    leak_counts,
    leaks_csv,
)
from metafgnet.data.manifest import (
    INDEX,
    MANIFESTS,
    PreparedData,
    combined_digest,
    load_prepared,
    manifest_text,
)
from metafgnet.data.readers import read_auxiliary, read_target
from metafgnet.data.records import Listing, Record
from metafgnet.data.splits import split_validation
from metafgnet.data.staging import staged_dir
from metafgnet.io import file_digest, write_json
from metafgnet.params import DataParams, Params

log = logging.getLogger(__name__)


def screen_images(
    listing: Listing, root: Path, data: DataParams, which: str, workers: int = 1
) -> tuple[list[Record], list[Record], list[dict]]:
    """``(train, test, skipped)`` of ``listing`` after decoding every image under ``root``.

    Raises :class:`DataError` listing the bad files when ``data.on_corrupt`` is ``fail``, or
    when more than ``data.max_skipped_fraction`` of the dataset's images are bad.
    """
    records = listing.train + listing.test
    bad = check_images(root, records, workers=workers)
    if not bad:
        return listing.train, listing.test, []
    lines = [f"{path} ({why})" for path, why in bad]
    head = (
        f"{which} dataset at {root}: {len(bad)} of {len(records)} images are missing or unreadable"
    )
    if data.on_corrupt == "fail":
        raise DataError(
            f"{head}: {short_list(lines)}. Replace or remove them, or set data.on_corrupt: skip "
            f"to leave them out (up to data.max_skipped_fraction = {data.max_skipped_fraction})"
        )
    fraction = len(bad) / len(records)
    if fraction > data.max_skipped_fraction:
        raise DataError(
            f"{head} ({fraction:.2%}), more than data.max_skipped_fraction = "
            f"{data.max_skipped_fraction}: {short_list(lines)}"
        )
    log.warning("%s; skipping them: %s", head, short_list(lines))
    dropped = {path for path, _ in bad}
    skipped = [{"dataset": which, "path": path, "reason": why} for path, why in bad]
    return (
        [r for r in listing.train if r.path not in dropped],
        [r for r in listing.test if r.path not in dropped],
        skipped,
    )


def prepare_manifests(params: Params, out_dir: Path) -> PreparedData:
    """Write the manifests of ``params.data`` to ``out_dir`` (replaced whole; nothing is written
    if any check fails) and return them."""
    data = params.data
    target = read_target(data)
    auxiliary = read_auxiliary(data)
    workers = max(1, params.execution.num_workers)
    train, test, skipped = screen_images(target, Path(data.target_root), data, "target", workers)
    aux, _, aux_skipped = screen_images(auxiliary, Path(data.auxiliary_root), data, "auxiliary",
                                        workers)
    if not test:
        raise DataError(f"target dataset at {data.target_root} has no test images")
    train, val = split_validation(train, target.class_names, data.val_fraction, data.split_seed)
    leaks = find_leaks({"train": train, "val": val, "test": test}, Path(data.target_root), aux,
                       Path(data.auxiliary_root), data.leakage.max_distance, workers)
    copies = {leak.auxiliary for leak in leaks}
    if copies:
        log.warning("%d auxiliary images copy a target image (%s); %s", len(copies),
                    LEAKAGE_PAIRS, "dropped (data.leakage.drop)" if data.leakage.drop else "kept")
    if data.leakage.drop:
        aux = [r for r in aux if r.path not in copies]
        if not aux and copies:
            raise DataError(f"every auxiliary image at {data.auxiliary_root} copies a target "
                            "image, so data.leakage.drop left none; check the data roots")
    leakage = leak_counts(leaks, data.leakage.max_distance,
                          len(copies) if data.leakage.drop else 0)
    splits = {"train": train, "val": val, "test": test, "auxiliary": aux}
    skipped += aux_skipped

    owned = set(MANIFESTS.values()) | {INDEX, LEAKAGE_METRICS, LEAKAGE_PAIRS}
    with staged_dir(out_dir, owned=owned) as tmp:
        digests = {}
        for split, name in MANIFESTS.items():
            text = manifest_text(splits[split], "train" if split == "auxiliary" else split)
            (tmp / name).write_text(text, encoding="utf-8")
            digests[name] = file_digest(tmp / name)
        index = {
            "split_seed": data.split_seed,
            "val_fraction": data.val_fraction,
            "target": {
                "dataset": data.target,
                "root": data.target_root,
                "classes": target.class_names,
                "num_classes": target.num_classes,
                "counts": {s: len(splits[s]) for s in ("train", "val", "test")},
            },
            "auxiliary": {
                "dataset": data.auxiliary,
                "root": data.auxiliary_root,
                "classes": auxiliary.class_names,
                "num_classes": auxiliary.num_classes,
                "counts": {"train": len(aux)},
            },
            "manifests": digests,
            "digest": combined_digest(digests, target.class_names, auxiliary.class_names),
            "skipped": skipped,
            "skipped_count": len(skipped),
            "leakage": leakage,
        }
        write_json(tmp / INDEX, index)
        write_json(tmp / LEAKAGE_METRICS, leakage)
        (tmp / LEAKAGE_PAIRS).write_text(leaks_csv(leaks), encoding="utf-8")
    return load_prepared(out_dir)
