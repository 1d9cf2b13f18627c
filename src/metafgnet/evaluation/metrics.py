"""Classification metrics on a labelled dataset: top-1, mean per-class accuracy, confusion.

docs/method.md ("The stages", evaluation): single centre crop, top-1. The crop is the
dataset's transform; this module only runs the model in eval mode (BatchNorm uses running statistics) and counts.
Model selection uses a validation split; the test split is evaluated once
(docs/method.md, "Where the reproduction departs": the authors picked checkpoints on test).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from metafgnet.progress import Progress


def head_logits(output: torch.Tensor | tuple[torch.Tensor, ...], head: str = "target") -> torch.Tensor:
    """The logits of one head from a model output.

    ``MetaFGNet.forward`` returns ``(target_logits, source_logits)``; a single-head network
    returns one tensor, which is used whatever ``head`` says.
    """
    if isinstance(output, torch.Tensor):
        return output
    if head not in ("target", "source"):
        raise ValueError(f"head must be 'target' or 'source', got {head!r}")
    return output[0] if head == "target" else output[1]


def iterate_eval(
    model: nn.Module,
    ds: Dataset[Any],
    *,
    device: torch.device,
    batch_size: int,
    loader_kwargs: dict[str, Any] | None = None,
    desc: str = "evaluate",
    progress: bool = True,
) -> Iterator[tuple[torch.Tensor | tuple[torch.Tensor, ...], torch.Tensor]]:
    """Yield ``(model output, labels)`` per batch, in dataset order, model in eval mode.

    The model's train/eval mode is restored afterwards, so BatchNorm running statistics are
    neither used for training-mode normalisation nor moved here. ``desc`` names the step in the
    progress output (:mod:`metafgnet.progress`; ``progress=False``: none, e.g. off rank 0).
    """
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False, drop_last=False,
                        **(loader_kwargs or {}))
    was_training = model.training
    model.eval()
    try:
        with Progress(desc, len(loader), unit="batch", enabled=progress) as bar:
            for x, y in loader:
                # grad mode is thread state: enter it per batch so it never leaks into the
                # caller while this generator is suspended at ``yield``
                with torch.inference_mode():
                    output = model(x.to(device))
                yield output, y.to(device)
                bar.update()
    finally:
        model.train(was_training)


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """``(K, K)`` int64 counts; row = true class, column = predicted class."""
    labels = np.asarray(labels, dtype=np.int64)
    preds = np.asarray(preds, dtype=np.int64)
    for name, arr in (("label", labels), ("prediction", preds)):
        if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
            raise ValueError(
                f"{name} out of range [0, {num_classes}): min {arr.min()}, max {arr.max()}")
    flat = np.bincount(labels * num_classes + preds, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def metrics_from_confusion(confusion: np.ndarray) -> dict[str, float]:
    """``top1`` (overall accuracy) and ``mean_class_acc`` (mean of per-class recall), in [0, 1].

    Classes with no samples in the evaluated set (all-zero rows) are left out of the mean
    rather than counted as 0 or 1; ``num_classes_present`` says how many were averaged.
    """
    total = int(confusion.sum())
    if total == 0:
        raise ValueError("cannot compute accuracy of an empty evaluation set")
    per_class_n = confusion.sum(axis=1)  # (K,) true samples per class
    present = per_class_n > 0
    recall = np.diag(confusion)[present] / per_class_n[present]
    return {
        "top1": float(np.trace(confusion) / total),
        "mean_class_acc": float(recall.mean()),
        "num_classes_present": int(present.sum()),
    }


def evaluate(
    model: nn.Module,
    ds: Dataset[Any],
    *,
    device: torch.device,
    batch_size: int,
    head: str = "target",
    loader_kwargs: dict[str, Any] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate ``model`` on ``ds`` (items ``(image, label)``) with the ``head`` logits.

    Returns a dict with ``top1`` and ``mean_class_acc`` (fractions in [0, 1]), ``confusion``
    (``(K, K)`` numpy int64, rows = true class, K = the head's output width), ``predictions``
    and ``labels`` (numpy int64 ``(N,)`` in dataset order), ``num_samples`` and
    ``num_classes_present``. Argmax ties go to the lowest class index (``torch.argmax``).
    ``progress``: show progress (:mod:`metafgnet.progress`).
    """
    preds, labels, num_classes = [], [], None
    for output, y in iterate_eval(model, ds, device=device, batch_size=batch_size,
                                  loader_kwargs=loader_kwargs, progress=progress):
        logits = head_logits(output, head)  # (B, K)
        num_classes = logits.shape[1]
        preds.append(logits.float().argmax(dim=1).cpu())
        labels.append(y.long().cpu())
    if num_classes is None:
        raise ValueError("cannot evaluate on an empty dataset")
    pred_arr = torch.cat(preds).numpy().astype(np.int64)
    label_arr = torch.cat(labels).numpy().astype(np.int64)
    confusion = confusion_matrix(label_arr, pred_arr, num_classes)
    return {
        **metrics_from_confusion(confusion),
        "confusion": confusion,
        "predictions": pred_arr,
        "labels": label_arr,
        "num_samples": int(label_arr.size),
    }
