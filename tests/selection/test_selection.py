"""Sample selection (docs/method.md, stage 3) on hand-built logits with hand-computed scores."""

import math

import pytest
import torch
from torch import nn
from torch.utils.data import Subset, TensorDataset

from metafgnet.params import SelectParams
from metafgnet.selection import (
    rank,
    score_auxiliary,
    scores_from_logits,
    select,
    selected_class_counts,
)

CPU = torch.device("cpu")

# 2 target classes, 3 source classes; one row per auxiliary image.
TARGET = torch.tensor([[3.0, 0.0], [1.0, 1.0], [-1.0, -2.0], [-1.0, -1.0], [0.0, 6.0], [2.0, 0.0]])
SOURCE = torch.tensor([[4.0, -1.0, 0.0], [1.0, 1.0, -5.0], [2.0, 0.0, 0.0],
                       [-3.0, -1.0, 0.0], [8.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
# By hand: clamp at 0, divide by the L2 norm of the whole 5-vector, sum the first 2 entries.
#   row 0: [3,0 | 4,0,0]  norm 5  -> 3/5 = 0.6
#   row 1: [1,1 | 1,1,0]  norm 2  -> 2/2 = 1.0
#   row 2: [0,0 | 2,0,0]  norm 2  -> 0
#   row 3: all zero after clamping -> defined as 0 (not NaN)
#   row 4: [0,6 | 8,0,0]  norm 10 -> 6/10 = 0.6   (tie with row 0)
#   row 5: [2,0 | 0,0,0]  norm 2  -> 2/2 = 1.0   (tie with row 1)
EXPECTED = torch.tensor([0.6, 1.0, 0.0, 0.0, 0.6, 1.0])
LABELS = torch.tensor([0, 0, 1, 1, 2, 2])  # auxiliary class of each image


class LookupModel(nn.Module):
    """A 'MetaFGNet' whose heads return the hand-built logits of the image index in x."""

    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm1d(1)  # running stats must not move while scoring

    def forward(self, x):  # x: (B, 1) float image index
        assert not self.training, "scoring must run in eval mode"
        self.bn(x)  # would move running stats if scoring ran in train mode
        idx = x.long().squeeze(1)
        return TARGET[idx], SOURCE[idx]


def test_scores_match_hand_computation_and_zero_edge_case():
    s = scores_from_logits(TARGET, SOURCE)
    assert torch.allclose(s, EXPECTED, atol=1e-6)
    assert torch.isfinite(s).all()
    # normalising the whole vector, not each head: a per-head norm would give row 0 -> 1.0
    assert s[0] < 0.99


def test_score_auxiliary_runs_model_in_eval_mode_in_dataset_order():
    model = LookupModel().train()
    ds = TensorDataset(torch.arange(6, dtype=torch.float32).unsqueeze(1), LABELS)
    bn_before = {k: v.clone() for k, v in model.bn.state_dict().items()}
    s = score_auxiliary(model, ds, device=CPU, batch_size=4)
    assert s.shape == (6,) and s.dtype == torch.float32
    assert torch.allclose(s, EXPECTED, atol=1e-6)
    assert model.training
    for k, v in model.bn.state_dict().items():
        assert torch.equal(v, bn_before[k])


def test_rank_breaks_ties_by_lower_index():
    assert rank(EXPECTED).tolist() == [1, 5, 0, 4, 2, 3]
    assert rank(torch.zeros(4)).tolist() == [0, 1, 2, 3]


def test_ratio_keeps_top_fraction_globally_with_deterministic_ties():
    mask = select(EXPECTED, SelectParams(criterion="ratio", ratio=0.5))
    # floor(0.5 * 6) = 3: rows 1, 5 (score 1.0) and row 0 (wins the 0.6 tie against row 4)
    assert mask.dtype == torch.bool
    assert mask.tolist() == [True, True, False, False, False, True]
    assert select(EXPECTED, SelectParams(criterion="ratio", ratio=1.0)).all()
    assert select(EXPECTED, SelectParams(criterion="ratio", ratio=0.01)).sum() == 1
    # floor(0.7 * 10) must be 7, not 6 from 6.999...
    assert select(torch.arange(10.0), SelectParams(criterion="ratio", ratio=0.7)).sum() == 7


def test_ratio_is_global_not_per_class():
    # class 0 has all the high scores: a global 50 % keeps only class-0 images
    scores = torch.tensor([0.9, 0.8, 0.7, 0.1, 0.2, 0.3])
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    mask = select(scores, SelectParams(criterion="ratio", ratio=0.5))
    assert selected_class_counts(labels, mask, 2).tolist() == [3, 0]


def test_threshold_and_topk():
    assert select(EXPECTED, SelectParams(criterion="threshold", threshold=1.0)).tolist() == [
        False, True, False, False, False, True]
    assert select(EXPECTED, SelectParams(criterion="threshold", threshold=0.5)).sum() == 4
    assert select(EXPECTED, SelectParams(criterion="threshold", threshold=0.0)).all()
    assert select(EXPECTED, SelectParams(criterion="topk", topk=3)).tolist() == [
        True, True, False, False, False, True]
    assert select(EXPECTED, SelectParams(criterion="topk", topk=100)).all()


def test_non_finite_scores_rejected():
    with pytest.raises(ValueError, match="non-finite"):
        select(torch.tensor([0.1, math.nan]), SelectParams(criterion="topk", topk=1))


def test_class_losing_all_images_keeps_its_index():
    mask = select(EXPECTED, SelectParams(criterion="ratio", ratio=0.5))
    counts = selected_class_counts(LABELS, mask, num_classes=3)
    # class 1 (rows 2, 3) loses everything; it stays at index 1 with a zero count
    assert counts.tolist() == [2, 0, 1]
    assert counts.shape == (3,)
    # the subset keeps the original labels: class 2 is still labelled 2, not re-indexed to 1
    ds = TensorDataset(torch.arange(6, dtype=torch.float32).unsqueeze(1), LABELS)
    subset = Subset(ds, mask.nonzero().flatten().tolist())
    assert sorted({int(y) for _, y in subset}) == [0, 2]
    with pytest.raises(ValueError, match="labels must lie"):
        selected_class_counts(LABELS, mask, num_classes=2)
