"""Selection quality against ground truth, on hand-computed cases."""

import math

import torch

from metafgnet.selection.quality import precision_at_k, roc_auc, selection_quality


def test_roc_auc_counts_ordered_pairs_and_half_ties():
    # related {0.4, 0.8} vs unrelated {0.1, 0.35}: all 4 pairs ordered -> 1
    assert roc_auc(torch.tensor([0.1, 0.4, 0.35, 0.8]),
                   torch.tensor([False, True, False, True])) == 1.0
    # related {1} vs unrelated {1, 0}: one tie (1/2) and one win -> 0.75
    assert roc_auc(torch.tensor([1.0, 1.0, 0.0]), torch.tensor([True, False, False])) == 0.75
    # reversed scores -> 0
    assert roc_auc(torch.tensor([0.9, 0.1]), torch.tensor([False, True])) == 0.0
    assert math.isnan(roc_auc(torch.tensor([0.3, 0.2]), torch.tensor([True, True])))


def test_precision_at_k_defaults_to_the_number_of_related_images():
    scores = torch.tensor([0.9, 0.8, 0.7, 0.1])
    related = torch.tensor([True, False, True, False])
    assert precision_at_k(scores, related) == 0.5      # k = 2: {0.9 (rel), 0.8 (unrel)}
    assert precision_at_k(scores, related, k=3) == 2 / 3
    assert precision_at_k(scores, related, k=1) == 1.0


def test_quality_does_not_depend_on_how_many_images_are_kept():
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.1])
    related = torch.tensor([True, True, False, True, False])
    loose = selection_quality(scores, scores > 0.0, related)
    tight = selection_quality(scores, scores > 0.75, related)
    assert loose["selection_precision"] == 3 / 5 == loose["related_base_rate"]
    assert tight["selection_precision"] == 1.0 and tight["related_recall"] == 2 / 3
    for key in ("roc_auc", "precision_at_related"):
        assert loose[key] == tight[key]
    assert loose["roc_auc"] == 5 / 6   # pairs: (0.9,0.8,0.6) x (0.7,0.1): 0.6 < 0.7 loses one
