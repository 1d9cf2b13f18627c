"""How well a selection score separates related from unrelated auxiliary images.

Used where ground truth exists (the embedded benchmark writes which auxiliary classes are
related to the target family). Both measures are independent of the selection criterion
(``select.ratio`` and friends), unlike the precision of the kept set, which a ratio near 1 pins
near the related base rate:

- ROC AUC: the probability that a random related image scores above a random unrelated one
  (ties count one half), computed from ranks (the Mann-Whitney U statistic, averaged ranks for
  ties): ``AUC = (R_+ - n_+ (n_+ + 1) / 2) / (n_+ n_-)``.
- precision at k, with ``k`` = the number of related images: the share of related images among
  the ``k`` best scored (ties broken by order, as the selection itself does).
"""

from __future__ import annotations

import torch
from scipy.stats import rankdata


def roc_auc(scores: torch.Tensor, positive: torch.Tensor) -> float:
    """``scores`` (N,) float, ``positive`` (N,) bool; NaN when one class is empty."""
    pos = positive.bool().cpu().numpy()
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores.detach().double().cpu().numpy())  # 1-based, ties averaged
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def precision_at_k(scores: torch.Tensor, positive: torch.Tensor, k: int | None = None) -> float:
    """Share of positives among the ``k`` highest scores (default ``k`` = number of positives)."""
    k = int(positive.sum()) if k is None else k
    if k <= 0:
        return float("nan")
    order = torch.argsort(scores, descending=True, stable=True)[:k]
    return float(positive.bool()[order].double().mean())


def selection_quality(scores: torch.Tensor, keep: torch.Tensor,
                      related: torch.Tensor) -> dict[str, float]:
    """Every ground-truth measure of one selection (``keep`` and ``related`` are (N,) bool)."""
    return {"related_base_rate": float(related.double().mean()),
            "selection_precision": float(related[keep].double().mean()) if keep.any() else 0.0,
            "related_recall": (float(keep[related].double().mean()) if related.any()
                               else float("nan")),
            "roc_auc": roc_auc(scores, related),
            "precision_at_related": precision_at_k(scores, related)}
