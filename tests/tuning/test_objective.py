"""The tuning objective on a fixed trial: a validation accuracy, deterministic, reported per
fine-tuning epoch, never touching the test split."""

from __future__ import annotations

import dataclasses

import optuna
import pytest

from metafgnet.data import load_prepared
from metafgnet.training import setup_runtime
from metafgnet.tuning.objective import Objective

VALUES = {"meta.inner_lr": 0.02, "meta.target_head_lr": 0.1, "meta.backbone_lr": 0.01,
          "meta.aux_weight": 1.0, "select.ratio": 0.7}


class _Forbidden(list):
    """Records that fail the test when anything reads them."""

    def _fail(self, *args):
        raise AssertionError("the tuning objective read the test split")

    __iter__ = __len__ = __getitem__ = _fail


@pytest.fixture(scope="module")
def objective_parts(tiny):
    params = tiny.params()
    device = setup_runtime(params.runtime, params.seed)
    data = load_prepared(tiny.data_dir)
    return params, dataclasses.replace(data, test=_Forbidden()), device


def test_fixed_trial_gives_a_deterministic_validation_accuracy(tiny, objective_parts):
    params, data, device = objective_parts
    reports: list[list[tuple[int, float]]] = [[], []]
    values = []
    for seen in reports:
        objective = Objective(params, data, tiny.init, device,
                              on_report=lambda _t, step, v, seen=seen: seen.append((step, v)))
        values.append(objective(optuna.trial.FixedTrial(VALUES)))
    assert 0.0 <= values[0] <= 1.0
    assert values[0] == values[1] and reports[0] == reports[1]  # bit-identical rerun
    steps = [s for s, _ in reports[0]]
    assert steps == list(range(params.tune.budget.finetune_epochs))  # one report per epoch
    best = [v for _, v in reports[0]]
    assert best == sorted(best) and best[-1] == values[0]  # best-so-far, ends at the value


def test_trial_values_and_budget_reach_every_part(tiny, objective_parts, monkeypatch):
    import metafgnet.tuning.objective as objective_module

    params, data, device = objective_parts
    calls: list[tuple[str, dict]] = []

    def spy(name, fn):
        def wrapper(model, *args, **kwargs):
            calls.append((name, {"args": args, **kwargs}))
            return fn(model, *args, **kwargs)
        monkeypatch.setattr(objective_module, name, wrapper)

    spy("meta_train", objective_module.meta_train)
    spy("finetune", objective_module.finetune)
    Objective(params, data, tiny.init, device)(optuna.trial.FixedTrial(VALUES))
    (m1, first), (m2, second), (f, fine) = calls
    assert (m1, m2, f) == ("meta_train", "meta_train", "finetune")
    meta = first["args"][2]
    assert (meta.inner_lr, meta.target_head_lr, meta.aux_weight) == (0.02, 0.1, 1.0)
    assert meta.iterations == params.tune.budget.meta_iterations
    n_aux = len(data.auxiliary)
    assert len(first["args"][1]) == n_aux and len(second["args"][1]) == int(0.7 * n_aux)
    assert second["iterations"] == round(meta.iterations * int(0.7 * n_aux) / n_aux)
    assert fine["args"][2].epochs == params.tune.budget.finetune_epochs
    assert len(fine["args"][1]) == len(data.val)  # scored on the validation split
