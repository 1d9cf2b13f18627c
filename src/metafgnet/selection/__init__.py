"""Sample selection of auxiliary data by the meta-trained network (stage 3), its quality where
ground truth exists, and the random subset that controls for it."""

from metafgnet.selection.quality import precision_at_k, roc_auc, selection_quality
from metafgnet.selection.scoring import (
    rank,
    score_auxiliary,
    scores_from_logits,
    select,
    selected_class_counts,
)
from metafgnet.selection.subsets import random_subset, read_subset, write_subset

__all__ = ["precision_at_k", "random_subset", "rank", "read_subset", "roc_auc", "score_auxiliary",
           "scores_from_logits", "select", "selected_class_counts", "selection_quality",
           "write_subset"]
