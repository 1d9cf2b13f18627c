"""Sample selection of auxiliary data by the meta-trained network (stage 3), and its quality where ground truth exists."""

from metafgnet.selection.quality import precision_at_k, roc_auc, selection_quality
from metafgnet.selection.scoring import (
    rank,
    score_auxiliary,
    scores_from_logits,
    select,
    selected_class_counts,
)

__all__ = ["precision_at_k", "rank", "roc_auc", "score_auxiliary", "scores_from_logits", "select",
           "selected_class_counts", "selection_quality"]
