"""Meta-gradients of MetaFGNet (Eq. 1, 3 and 5 of the MetaFGNet supplementary) for any module."""

from metafgnet.meta.functional import Batch, batch_loss, inner_step
from metafgnet.meta.gradients import ORDERS, MetaGradients, meta_gradients
from metafgnet.meta.hessian import HESSIAN_MAX_PARAMS, HessianTooLarge

__all__ = [
    "HESSIAN_MAX_PARAMS",
    "ORDERS",
    "Batch",
    "HessianTooLarge",
    "MetaGradients",
    "batch_loss",
    "inner_step",
    "meta_gradients",
]
