"""Evaluation metrics on hand-built predictions with a known confusion matrix."""

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from metafgnet.evaluation import confusion_matrix, evaluate, metrics_from_confusion

CPU = torch.device("cpu")

# 3 classes; rows of LOGITS are the "images", the model is the identity.
LABELS = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2, 2, 2])
PREDS = [0, 0, 0, 1, 1, 2, 2, 2, 0, 2]
EXPECTED = np.array([
    [3, 1, 0],  # class 0: 3 right, 1 -> class 1
    [0, 1, 1],  # class 1: 1 right, 1 -> class 2
    [1, 0, 3],  # class 2: 3 right, 1 -> class 0
])


def _logits(preds, k=3):
    out = torch.full((len(preds), k), -1.0)
    out[torch.arange(len(preds)), torch.tensor(preds)] = 2.0
    return out


class TwoHeads(nn.Module):
    """Returns (target, source) like MetaFGNet; the source head is deliberately wrong."""

    def forward(self, x):
        return x, -x


def test_known_confusion_and_metrics():
    ds = TensorDataset(_logits(PREDS), LABELS)
    out = evaluate(nn.Identity(), ds, device=CPU, batch_size=3)
    np.testing.assert_array_equal(out["confusion"], EXPECTED)
    assert out["confusion"].dtype == np.int64
    np.testing.assert_array_equal(out["predictions"], PREDS)
    np.testing.assert_array_equal(out["labels"], LABELS.numpy())
    assert out["top1"] == pytest.approx(7 / 10)
    assert out["mean_class_acc"] == pytest.approx((3 / 4 + 1 / 2 + 3 / 4) / 3)
    assert 0 <= out["top1"] <= 1 and 0 <= out["mean_class_acc"] <= 1
    assert out["num_samples"] == 10


def test_two_head_model_uses_target_head_by_default():
    ds = TensorDataset(_logits(PREDS), LABELS)
    tgt = evaluate(TwoHeads(), ds, device=CPU, batch_size=4)
    assert tgt["top1"] == pytest.approx(0.7)
    src = evaluate(TwoHeads(), ds, device=CPU, batch_size=4, head="source")
    assert src["top1"] < tgt["top1"]


def test_absent_class_left_out_of_mean_class_acc():
    conf = confusion_matrix(np.array([0, 0, 1]), np.array([0, 1, 1]), num_classes=4)
    assert conf.shape == (4, 4)
    m = metrics_from_confusion(conf)
    assert m["num_classes_present"] == 2
    assert m["mean_class_acc"] == pytest.approx((0.5 + 1.0) / 2)
    with pytest.raises(ValueError, match="out of range"):
        confusion_matrix(np.array([5]), np.array([0]), num_classes=4)


def test_eval_mode_used_and_restored_bn_stats_untouched():
    torch.manual_seed(0)
    model = nn.Sequential(nn.BatchNorm1d(3), nn.Identity())
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ds = TensorDataset(torch.randn(8, 3) * 5 + 3, torch.zeros(8, dtype=torch.long))
    evaluate(model, ds, device=CPU, batch_size=4)
    assert model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert torch.is_grad_enabled()
