"""Sample selection of auxiliary data (docs/method.md, "The stages", step 3).

The stage-2 MetaFGNet, in eval mode on centre-cropped auxiliary images, scores every image by
how strongly it activates the *target* head relative to everything it activates:

    z = [target_logits, source_logits]         (K_t + K_s,)
    z = max(z, 0) / || max(z, 0) ||_2           one L2 norm over the WHOLE concatenated vector
    score = sum(z[:K_t])                         in [0, sqrt(K_t)]

Images are then ranked globally (not per class) and kept by one of the authors' criteria:
``ratio`` (top ``ratio * N``; the released runs use 0.8), ``threshold`` (score >= threshold) or
``topk``. The selected subset keeps the ORIGINAL auxiliary labels, so the source head keeps
its size and class indices even when a class loses every image (see
:func:`selected_class_counts`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from metafgnet.evaluation.metrics import iterate_eval
from metafgnet.params import SelectParams


def scores_from_logits(target_logits: torch.Tensor, source_logits: torch.Tensor) -> torch.Tensor:
    """Selection score of each row, as in the module docstring.

    ``target_logits`` ``(N, K_t)``, ``source_logits`` ``(N, K_s)`` -> ``(N,)`` float32.
    Edge case: a row whose logits are all <= 0 has a zero vector after clamping; its norm is 0
    and the authors' division would give NaN. Here its score is defined as 0 (no positive
    evidence for the target task), so such images rank last.
    """
    if target_logits.shape[0] != source_logits.shape[0]:
        raise ValueError(
            f"head outputs disagree on batch size: {tuple(target_logits.shape)} vs "
            f"{tuple(source_logits.shape)}")
    z = torch.cat([target_logits, source_logits], dim=1).float().clamp(min=0)  # (N, K_t+K_s)
    norm = z.norm(dim=1, keepdim=True)  # (N, 1)
    z = torch.where(norm > 0, z / norm.clamp(min=torch.finfo(z.dtype).tiny), torch.zeros_like(z))
    return z[:, : target_logits.shape[1]].sum(dim=1)  # (N,)


def score_auxiliary(
    model: nn.Module,
    aux_ds: Dataset[Any],
    *,
    device: torch.device,
    batch_size: int,
    loader_kwargs: dict[str, Any] | None = None,
    progress: bool = True,
) -> torch.Tensor:
    """Score every auxiliary image with ``model`` (a ``MetaFGNet``) in eval mode.

    ``aux_ds`` items are ``(image, label)`` with the evaluation transform (centre crop); labels
    are ignored. Returns ``(N,)`` float32 on CPU, in dataset order. The model's train/eval mode
    is restored afterwards and BatchNorm running statistics are not touched.
    """
    scores = []
    for output, _ in iterate_eval(model, aux_ds, device=device, batch_size=batch_size,
                                  loader_kwargs=loader_kwargs, desc="score", progress=progress):
        if not isinstance(output, tuple | list) or len(output) != 2:
            raise TypeError("score_auxiliary needs a model returning (target_logits, "
                            "source_logits), e.g. MetaFGNet")
        scores.append(scores_from_logits(output[0], output[1]).cpu())
    if not scores:
        raise ValueError("cannot score an empty auxiliary set")
    return torch.cat(scores)


def rank(scores: torch.Tensor) -> torch.Tensor:
    """Indices ordering ``scores`` from highest to lowest; ties go to the lower index.

    The tie rule makes the selection a pure function of the scores (no dependence on sort
    implementation or device).
    """
    s = _check_scores(scores)
    order = np.lexsort((np.arange(s.size), -s))  # primary: -score, secondary: index
    return torch.from_numpy(order.astype(np.int64))


def select(scores: torch.Tensor, sel: SelectParams) -> torch.Tensor:
    """Boolean keep-mask ``(N,)`` over the auxiliary set, ranked globally (docs/method.md, stage 3).

    - ``ratio``: keep the ``floor(ratio * N)`` best (at least one when ``N > 0``), not per class;
    - ``threshold``: keep every image with ``score >= sel.threshold`` (ties all kept);
    - ``topk``: keep the ``min(sel.topk, N)`` best.
    For ``ratio`` and ``topk``, images tied at the cut are kept lowest index first.
    """
    n = int(scores.numel())
    if sel.criterion == "threshold":
        return torch.from_numpy(_check_scores(scores) >= sel.threshold)
    if sel.criterion == "ratio":
        # the small epsilon keeps e.g. 0.7 * 10 = 6.999... from dropping an image
        keep = max(1, math.floor(sel.ratio * n + 1e-9)) if n else 0
    elif sel.criterion == "topk":
        keep = min(sel.topk, n)
    else:
        raise ValueError(f"unknown selection criterion {sel.criterion!r}")
    mask = torch.zeros(n, dtype=torch.bool)
    mask[rank(scores)[:keep]] = True
    return mask


def selected_class_counts(
    labels: torch.Tensor, mask: torch.Tensor, num_classes: int
) -> torch.Tensor:
    """Images kept per ORIGINAL auxiliary class: ``(num_classes,)`` int64.

    The selected subset keeps the original labels; a class that loses all its images shows
    up as a 0 here rather than being dropped or re-indexed, so the source head keeps
    ``num_classes`` outputs and every class index means the same class before and after
    selection.
    """
    labels = torch.as_tensor(labels, dtype=torch.int64).flatten()
    mask = torch.as_tensor(mask, dtype=torch.bool).flatten()
    if labels.shape != mask.shape:
        raise ValueError(f"labels {tuple(labels.shape)} and mask {tuple(mask.shape)} differ")
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got "
                         f"[{int(labels.min())}, {int(labels.max())}]")
    return torch.bincount(labels[mask], minlength=num_classes)


def _check_scores(scores: torch.Tensor) -> np.ndarray:
    s = torch.as_tensor(scores).detach().cpu().double().flatten().numpy()
    if not np.isfinite(s).all():
        bad = np.flatnonzero(~np.isfinite(s))
        raise ValueError(f"{bad.size} non-finite selection scores, first at index {bad[0]}")
    return s
