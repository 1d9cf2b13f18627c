"""The prepared data as MLflow dataset inputs of a stage run, described without loading images.

Every stage that reads the prepared data (:func:`metafgnet.stages.context.open_stage`) logs the
three target splits and the auxiliary set as dataset inputs of its run:

========================  ==============  ================================================
name                      context         what it is
========================  ==============  ================================================
``target-train``          ``training``    target training split (``target_train.csv``)
``target-val``            ``validation``  target validation split (``target_val.csv``)
``target-test``           ``test``        target test split (``target_test.csv``)
``auxiliary``             ``auxiliary``   auxiliary set (``auxiliary.csv``)
========================  ==============  ================================================

Each one's digest is the start of its manifest's sha256 (recorded in ``index.json`` by the
prepare stage; the full sha256 is in the profile), its source the absolute dataset root
(``local``), and its profile ``{"num_images", "num_classes", "manifest", "sha256"}``. The
descriptions here are plain data: the stage process never imports MLflow; the entities are
made by :meth:`metafgnet.tracking.recorder.Recorder.log_datasets`.
"""

from __future__ import annotations

import dataclasses

# split of PreparedData -> (dataset name, MLflow context)
SPLITS = {
    "train": ("target-train", "training"),
    "val": ("target-val", "validation"),
    "test": ("target-test", "test"),
    "auxiliary": ("auxiliary", "auxiliary"),
}
# MLflow stores a dataset digest in 36 characters (SQL stores); 16 hex digits of the manifest's
# sha256 identify it (the full one is in the profile)
DIGEST_CHARS = 16
# A metric of a logged model is linked to the dataset it was measured on by its key's prefix
# (see metric_dataset): val_top1 -> target-val, test_mean_class_acc -> target-test
METRIC_PREFIXES = {"val_": "target-val", "test_": "target-test"}


@dataclasses.dataclass(frozen=True)
class DatasetInput:
    """One dataset input of a run, as plain data (sent to the tracking agent as is)."""

    name: str
    digest: str
    source: str  # absolute path of the dataset root
    context: str
    profile: dict


def prepared_datasets(data) -> list[DatasetInput]:
    """The four splits of a :class:`~metafgnet.data.manifest.PreparedData` as dataset inputs;
    reads only what is in memory (records, the manifests' recorded sha256)."""
    inputs = []
    for split, (name, context) in SPLITS.items():
        sha = data.manifest_digest(split)
        classes = data.auxiliary_classes if split == "auxiliary" else data.target_classes
        profile = {"num_images": len(data.records(split)), "num_classes": len(classes),
                   "manifest": str(data.manifest_path(split)), "sha256": sha}
        inputs.append(DatasetInput(name, sha[:DIGEST_CHARS], str(data.root(split)), context,
                                   profile))
    return inputs


def metric_dataset(key: str, logged: dict[str, str]) -> tuple[str, str] | None:
    """``(name, digest)`` of the dataset a metric named ``key`` was measured on, when its
    prefix says so and the run logged that dataset (``logged``: name -> digest)."""
    for prefix, name in METRIC_PREFIXES.items():
        if key.startswith(prefix) and name in logged:
            return name, logged[name]
    return None
