"""The tuning objective: validation top-1 of the MetaFGNet procedure run on the trial budget.

One trial, from the pretrained model (``models/pretrain/model.pt``):

1. meta-training on the whole auxiliary set (docs/method.md, stage 2),
   ``tune.budget.meta_iterations``;
2. with ``tune.budget.selection``: sample selection with the trial's ``select`` params and
   meta-training again on the selection, iterations scaled by the kept fraction (stages 3-4);
3. fine-tuning with a fresh target head for ``tune.budget.finetune_epochs`` (stage 5).

The value is the best validation top-1 over the fine-tuning epochs, the number the pipeline's
fine-tuning stage selects its epoch by. After every epoch the best-so-far validation top-1 is
reported (``trial.report(value, epoch)``) and a trial the pruner flags raises
``optuna.TrialPruned``. The test split is never read. Everything is seeded by ``params.seed``,
so a trial is a pure function of its params (at a fixed thread count, docs/platform.md); an
``optuna.trial.FixedTrial`` runs the objective outside any study.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from metafgnet.data import PreparedDatasets, loader_kwargs
from metafgnet.models.files import load_model
from metafgnet.params import Params
from metafgnet.selection import score_auxiliary, select
from metafgnet.training import (
    LoopRuntime,
    finetune,
    make_autocast,
    meta_train,
    seed_everything,
    subset_schedule,
)
from metafgnet.tuning.space import suggest, trial_params

ReportFn = Callable[[int, float], None]


def run_trial(params: Params, data: Any, init: Path, device: torch.device,
              report: ReportFn | None = None) -> float:
    """Meta-train, (select, meta-train again,) fine-tune; return the best validation top-1.

    ``params`` are the trial's (budget and values applied, :func:`~metafgnet.tuning.space.
    trial_params`); ``data`` the prepared data (``metafgnet.data.load_prepared``); ``init`` the
    pretrained model file. ``report(epoch, best_val_top1_so_far)`` runs after every
    fine-tuning epoch and may raise to stop the trial.
    """
    sets = PreparedDatasets(data, params.data)  # built as the pipeline's stages build them
    # one process, no checkpoints: a killed trial is failed and re-sampled, not resumed
    loop = LoopRuntime(device, params.seed, loader_kwargs(params.execution, device),
                       make_autocast(params.runtime, device),
                       channels_last=params.runtime.channels_last)
    num_classes = len(data.target_classes)
    # Each part starts from ``seed``, as each pipeline stage (a fresh, seeded process) does:
    # the fresh target heads are drawn from the global RNG.
    seed_everything(params.seed)
    model, _ = load_model(init, device)
    model.reset_target_head(num_classes)
    model = model.to(device)
    meta_train(model, sets.target("train", "random_resized_crop"),
               sets.auxiliary("random_resized_crop"), params.meta, loop)

    if params.tune.budget.selection:
        scores = score_auxiliary(model, sets.auxiliary(None), device=device,
                                 batch_size=params.select.batch_size,
                                 loader_kwargs=loop.loader_kwargs)  # (N,)
        keep = select(scores, params.select)  # (N,) bool
        records = [r for r, k in zip(data.auxiliary, keep.tolist(), strict=True) if k]
        # as the pipeline's meta_train_selected: schedule scaled to the subset
        iterations, milestones = subset_schedule(params.meta, len(records), len(data.auxiliary))
        seed_everything(params.seed)
        model.reset_target_head(num_classes)
        meta_train(model, sets.target("train", "random_resized_crop"),
                   sets.auxiliary("random_resized_crop", records), params.meta, loop,
                   iterations=iterations, milestones=milestones)

    best = -1.0

    def on_epoch(epoch: int, row: dict) -> None:
        nonlocal best
        best = max(best, float(row["val_top1"]))
        if report is not None:
            report(epoch, best)

    fit = finetune(model, sets.target("train", "random_crop"), sets.target("val", None),
                   params.finetune, loop, on_epoch=on_epoch, restore_best=False)
    return float(fit.best_val_top1)


@dataclasses.dataclass
class Objective:
    """``objective(trial) -> validation top-1`` for ``study.optimize`` or a ``FixedTrial``.

    ``params``: the base params (``tune`` section included); ``data``: prepared data;
    ``init``: the pretrained model file. ``on_report(trial, epoch, value)`` sees every
    intermediate value (the MLflow child run logs them as a stepped metric).
    """

    params: Params
    data: Any
    init: Path
    device: torch.device
    on_report: Callable[[Any, int, float], None] | None = None

    def values(self, trial: Any) -> dict[str, Any]:
        """The trial's values of ``tune.space`` (dotted keys)."""
        return suggest(trial, self.params.tune.space)

    def __call__(self, trial: Any) -> float:
        import optuna

        p = trial_params(self.params, self.values(trial))

        def report(epoch: int, value: float) -> None:
            trial.report(value, epoch)
            if self.on_report is not None:
                self.on_report(trial, epoch, value)
            if trial.should_prune():
                raise optuna.TrialPruned(
                    f"best validation top-1 {value:.4f} after fine-tuning epoch {epoch}")

        return run_trial(p, self.data, Path(self.init), self.device, report)
