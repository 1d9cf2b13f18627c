"""Evaluation of a trained network: top-1, mean per-class accuracy and the confusion matrix."""

from metafgnet.evaluation.arms import ARM_METRICS, ARMS
from metafgnet.evaluation.metrics import (
    confusion_matrix,
    evaluate,
    head_logits,
    iterate_eval,
    metrics_from_confusion,
)

__all__ = [
    "ARMS",
    "ARM_METRICS",
    "confusion_matrix",
    "evaluate",
    "head_logits",
    "iterate_eval",
    "metrics_from_confusion",
]
