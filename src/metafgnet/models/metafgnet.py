"""MetaFGNet: a shared backbone with a target head and a source (auxiliary) head
(docs/method.md, "The model")."""

from __future__ import annotations

import torch
from torch import nn

from metafgnet.models.backbones import build_backbone
from metafgnet.params import ModelParams


class HeadNet(nn.Module):
    """A view ``backbone -> one head`` sharing the parameters of a :class:`MetaFGNet`.

    Parameter names are ``backbone.*`` and ``<head_name>.*`` (``target_head`` or
    ``source_head``), i.e. the same names as in the full model.
    """

    def __init__(self, backbone: nn.Module, head_name: str, head: nn.Linear) -> None:
        super().__init__()
        self.backbone = backbone
        self.head_name = head_name
        self.add_module(head_name, head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W)
        logits: torch.Tensor = getattr(self, self.head_name)(self.backbone(x))  # (B, K)
        return logits


class MetaFGNet(nn.Module):
    """Backbone ``θ_b`` with linear heads ``θ_c^t`` (target) and ``θ_c^s`` (source).

    ``forward(x)`` returns ``(target_logits, source_logits)``, both computed on the one pooled
    feature. ``target_net()`` is ``θ^t = (θ_b, θ_c^t)``: what the inner step adapts.
    """

    def __init__(self, backbone: nn.Module, num_target_classes: int, num_source_classes: int):
        super().__init__()
        self.backbone = backbone
        # a plain int attribute of every backbone (models.backbones), which mypy reads through
        # nn.Module.__getattr__ as a tensor or module
        self.feature_dim: int = int(backbone.feature_dim)  # type: ignore[arg-type]
        self.target_head = nn.Linear(self.feature_dim, num_target_classes)
        self.source_head = nn.Linear(self.feature_dim, num_source_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # (B, C, H, W)
        feature = self.backbone(x)  # (B, D)
        return self.target_head(feature), self.source_head(feature)  # (B, Kt), (B, Ks)

    def target_net(self) -> HeadNet:
        """``x -> target logits`` sharing parameters (a fresh view: call again after a reset)."""
        return HeadNet(self.backbone, "target_head", self.target_head)

    def source_net(self) -> HeadNet:
        """``x -> source logits`` sharing parameters (a fresh view)."""
        return HeadNet(self.backbone, "source_head", self.source_head)

    def reset_target_head(self, num_classes: int | None = None) -> None:
        """Replace the target head by a freshly initialised one (global torch RNG).

        Keeps the current class count unless ``num_classes`` is given; the new head lives on
        the device and dtype of the old one. Optimizers holding the old head must be rebuilt.
        """
        old = self.target_head
        k = old.out_features if num_classes is None else int(num_classes)
        if k < 1:
            raise ValueError(f"num_classes must be >= 1, got {k}")
        self.target_head = nn.Linear(self.feature_dim, k).to(
            device=old.weight.device, dtype=old.weight.dtype
        )


def build_model(model: ModelParams, num_target_classes: int, num_source_classes: int) -> MetaFGNet:
    """The MetaFGNet of ``model`` params (random heads; backbone per ``model.pretrained``)."""
    if num_target_classes < 1 or num_source_classes < 1:
        raise ValueError(
            "num_target_classes and num_source_classes must be >= 1, got "
            f"{num_target_classes} and {num_source_classes}"
        )
    backbone = build_backbone(
        model.backbone, width=model.width, pretrained=model.pretrained == "imagenet"
    )
    return MetaFGNet(backbone, num_target_classes, num_source_classes)
