"""``ImageDataset``: manifest records -> (float tensor (C, H, W), int label) for a DataLoader."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

from metafgnet.data.errors import DataError
from metafgnet.data.images import load_rgb
from metafgnet.data.manifest import PreparedData
from metafgnet.data.records import Record
from metafgnet.data.transforms import TrainStyle, eval_transform, train_transform
from metafgnet.params import DataParams, ExecutionParams

_DEFAULT = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])


class ImageDataset(Dataset):
    """Images of ``records`` (paths relative to ``root``), loaded as RGB (:func:`load_rgb`) and
    mapped to a tensor by ``transform`` (default: float in [0, 1], unnormalised)."""

    def __init__(
        self,
        records: Sequence[Record | tuple[str, int]],
        root: str | Path,
        transform: Callable | None = None,
    ) -> None:
        self.records = [Record(str(p), int(y)) for p, y in records]
        self.root = Path(root)
        self.transform = _DEFAULT if transform is None else transform

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.records[index]
        try:
            image = load_rgb(self.root / path)
        except (OSError, SyntaxError, ValueError) as exc:
            raise DataError(
                f"cannot read image {self.root / path} (record {index}): {exc}; re-run "
                "prepare_manifests, which checks every image"
            ) from exc
        x = self.transform(image)
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"transform must return a tensor, got {type(x).__name__}")
        return x.as_subclass(torch.Tensor), label  # (C, H, W) float


def loader_kwargs(execution: ExecutionParams, device: torch.device) -> dict:
    """``DataLoader`` arguments of every stage and tuning trial: ``execution.num_workers``
    processes, each keeping ``prefetch_factor`` batches ready, pinned memory only when it can
    help (a CUDA device)."""
    kwargs = {"num_workers": execution.num_workers,
              "pin_memory": execution.pin_memory and device.type == "cuda"}
    if execution.num_workers > 0:
        kwargs["prefetch_factor"] = execution.prefetch_factor
    return kwargs


class PreparedDatasets:
    """The prepared splits as :class:`ImageDataset` s, built one way for the stages and the
    tuner: a training augmentation by ``style`` (``random_resized_crop`` for pretraining and
    meta-training, ``random_crop`` for fine-tuning; docs/method.md), or, with ``style=None``,
    the evaluation transform (validation, test, scoring the auxiliary set)."""

    def __init__(self, data: PreparedData, params: DataParams) -> None:
        self.data, self.params = data, params

    def _transform(self, style: TrainStyle | None) -> v2.Compose:
        return eval_transform(self.params) if style is None else train_transform(self.params, style)

    def target(self, split: str, style: TrainStyle | None) -> ImageDataset:
        """Target split ``train|val|test``."""
        return ImageDataset(self.data.records(split), self.data.root(split),
                            self._transform(style))

    def auxiliary(self, style: TrainStyle | None, records: Sequence[Record] | None = None
                  ) -> ImageDataset:
        """The auxiliary set, or its subset ``records`` (a selection)."""
        records = self.data.auxiliary if records is None else records
        return ImageDataset(records, self.data.root("auxiliary"), self._transform(style))
