"""The configuration the distributed worker and the test share (one definition, two processes)."""

from __future__ import annotations

from distributed._helpers import KS, KT, images

SEED = 5
GRAD_SEED = 11
ETA = 0.3  # large enough that the Hessian term matters
META = dict(iterations=4, batch_size=4, aux_batch_size=4, log_every=1, order="second",
            inner_lr=0.1, target_head_lr=0.1, backbone_lr=0.05, source_head_lr=0.05,
            milestones=[2])
PLAIN_OPTIM = dict(epochs=2, batch_size=4, head_lr=0.1, backbone_lr=0.05)


def datasets():
    """(target train, auxiliary, target validation): float64 8 px images."""
    return images(16, KT, 1), images(16, KS, 2), images(7, KT, 3)
