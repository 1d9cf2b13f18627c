"""Sample selection of auxiliary data by the meta-trained network (SPEC.md, stage 3)."""

from metafgnet.selection.scoring import (
    rank,
    score_auxiliary,
    scores_from_logits,
    select,
    selected_class_counts,
)

__all__ = ["rank", "score_auxiliary", "scores_from_logits", "select", "selected_class_counts"]
