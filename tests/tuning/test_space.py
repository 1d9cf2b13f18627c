"""The `tune` params section: search spaces validated like every other section, the trial
params a space produces, the storage URL rules, `metafgnet tune apply`."""

from __future__ import annotations

import optuna
import pytest

from metafgnet.params import ParamsError, deep_merge, load_params, parse_params, to_dict
from metafgnet.tuning.apply import apply_best
from metafgnet.tuning.space import nest, study_digest, suggest, trial_params
from metafgnet.tuning.storage import resolve_url


def _error(tune: dict, **sections) -> str:
    with pytest.raises(ParamsError) as exc:
        parse_params({"tune": tune, **sections})
    return str(exc.value)


def _space(key: str, **dim) -> dict:
    return {"space": {key: dim}}


def test_repository_tune_section_is_valid_and_covers_the_required_keys():
    tune = load_params("params.yaml").tune
    assert {"meta.inner_lr", "meta.target_head_lr", "meta.backbone_lr", "meta.aux_weight",
            "select.ratio"} <= set(tune.space)
    assert tune.space["meta.inner_lr"].log and tune.space["meta.inner_lr"].type == "float"
    assert tune.enabled is False  # plain `dvc repro` must not search


@pytest.mark.parametrize(
    ("tune", "expected"),
    [
        (_space("meta.inner_lrr", type="float", low=1e-3, high=0.1, log=True),
         "tune.space.meta.inner_lrr: unknown param; did you mean meta.inner_lr?"),
        (_space("meta.inner_lr", type="float", low=0.1, high=0.01),
         "tune.space.meta.inner_lr: low (0.1) must be < high (0.01)"),
        (_space("meta.inner_lr", type="float", low=0.1, high=0.1),
         "tune.space.meta.inner_lr: low (0.1) must be < high (0.1)"),
        (_space("meta.inner_lr", type="float", low=0, high=0.1, log=True),
         "tune.space.meta.inner_lr: log scale needs low > 0 (got low 0)"),
        (_space("meta.inner_lr", type="floaty", low=0.01, high=0.1),
         "tune.space.meta.inner_lr.type must be 'float', 'int' or 'categorical' (got 'floaty')"),
        (_space("meta.inner_lr", type="float", lo=0.01, high=0.1),
         "tune.space.meta.inner_lr.lo: unknown key; did you mean tune.space.meta.inner_lr.low?"),
        (_space("meta.inner_lr", type="float", high=0.1),
         "tune.space.meta.inner_lr: a float dimension needs low and high"),
        (_space("select.ratio", type="float", low=0.5, high=1.5),
         "tune.space.select.ratio: high 1.5 is not a valid select.ratio"),
        (_space("meta.order", type="float", low=0, high=1),
         "tune.space.meta.order: type float does not fit this param (one of 'first', 'second')"),
        (_space("meta.order", type="categorical", choices=["first", "third"]),
         "tune.space.meta.order: choice 'third' is not a valid meta.order"),
        (_space("meta.order", type="categorical", choices=[]),
         "tune.space.meta.order: a categorical dimension needs a non-empty list of choices"),
        (_space("meta.batch_size", type="int", low=1.5, high=8),
         "tune.space.meta.batch_size: low of an int dimension must be an integer (got 1.5)"),
        (_space("meta.iterations", type="int", low=10, high=100),
         "tune.space.meta.iterations: set by tune.budget.meta_iterations, not tunable"),
        (_space("pretrain.head_lr", type="float", low=0.01, high=0.1),
         "tune.space.pretrain.head_lr: not read by the tune objective"),
        ({**_space("select.ratio", type="float", low=0.5, high=1.0), "budget": {"selection": False}},
         "tune.space.select.ratio: has no effect unless tune.budget.selection is true"),
        ({"space": {}}, "tune: space is empty"),
        ({"grace_period": 5, "heartbeat_interval": 10},
         "tune: grace_period (5) must be > heartbeat_interval (10)"),
        ({"pruner": "asha"}, "tune.pruner must be 'median', 'hyperband' or 'none' (got 'asha')"),
        ({"sampler": {"multivariat": True}},
         "tune.sampler.multivariat: unknown key; did you mean tune.sampler.multivariate?"),
        ({"n_trials": 0}, "tune.n_trials: Input should be greater than 0"),
        ({"storage": "optuna.db"}, "tune: storage 'optuna.db' is neither a database URL"),
    ],
)
def test_invalid_tune_sections_are_rejected_naming_the_key(tune, expected):
    assert expected in _error(tune)


def test_select_value_must_match_the_criterion():
    msg = _error(_space("select.ratio", type="float", low=0.5, high=1.0),
                 select={"criterion": "topk"})
    assert "tune.space.select.ratio: has no effect with select.criterion 'topk'" in msg


def test_every_bad_dimension_is_reported_together():
    msg = _error({"space": {"meta.inner_lrr": {"type": "float", "low": 0.1, "high": 1.0},
                            "pretrain.epochs": {"type": "int", "low": 1, "high": 3}}})
    assert "meta.inner_lrr" in msg and "pretrain.epochs" in msg


def test_trial_params_apply_values_and_budget_with_scaled_milestones():
    params = parse_params({"meta": {"iterations": 300, "milestones": [100, 200]},
                           "finetune": {"epochs": 30, "milestones": [20, 25]},
                           "tune": {"budget": {"meta_iterations": 30, "finetune_epochs": 6}}})
    trial = optuna.trial.FixedTrial({"meta.inner_lr": 0.02, "meta.target_head_lr": 0.2,
                                     "meta.backbone_lr": 0.005, "meta.aux_weight": 0.5,
                                     "select.ratio": 0.6})
    values = suggest(trial, params.tune.space)
    p = trial_params(params, values)
    assert (p.meta.inner_lr, p.meta.aux_weight, p.select.ratio) == (0.02, 0.5, 0.6)
    assert (p.meta.iterations, p.meta.milestones) == (30, [10, 20])
    assert (p.finetune.epochs, p.finetune.milestones) == (6, [4, 5])
    assert nest(values)["meta"]["inner_lr"] == 0.02 and nest(values)["select"] == {"ratio": 0.6}


def test_int_and_categorical_dimensions_are_sampled_in_range():
    params = parse_params({"tune": {"space": {
        "meta.batch_size": {"type": "int", "low": 2, "high": 8, "step": 2},
        "meta.order": {"type": "categorical", "choices": ["first", "second"]}}}})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(5):
        values = suggest(study.ask(), params.tune.space)
        assert values["meta.batch_size"] in (2, 4, 6, 8) and values["meta.order"] in ("first", "second")
        trial_params(params, values)  # valid


def test_study_digest_ignores_space_values_but_not_the_budget():
    base = parse_params({})

    def edited(changes: dict):  # a full params file with a few values changed, as `-S` does
        return parse_params(deep_merge(to_dict(base), changes))

    tuned = edited({"meta": {"inner_lr": 0.05}, "select": {"ratio": 0.5}})
    assert study_digest(base) == study_digest(tuned)  # `tune apply` keeps the study
    assert study_digest(base) != study_digest(edited({"tune": {"budget": {"finetune_epochs": 3}}}))
    assert study_digest(base) != study_digest(edited({"meta": {"order": "first"}}))


def test_storage_urls_are_absolute(tmp_path):
    assert resolve_url("", tmp_path) == f"sqlite:///{tmp_path / 'optuna.db'}"
    assert resolve_url("sqlite:///sub/s.db", tmp_path) == f"sqlite:///{tmp_path / 'sub/s.db'}"
    assert resolve_url("sqlite:////abs/s.db", tmp_path) == "sqlite:////abs/s.db"
    assert resolve_url("journal:j.log", tmp_path) == f"journal:{tmp_path / 'j.log'}"
    assert resolve_url("postgresql://u:p@h/db", tmp_path) == "postgresql://u:p@h/db"
    with pytest.raises(ValueError, match="neither a database URL"):
        resolve_url("optuna.db", tmp_path)


PARAMS_TEXT = """\
seed: 0
meta:                     # meta-training
  order: second           # second | first
  inner_lr: 0.01          # eta
  aux_weight: 1.0
select:
  ratio: 0.8
"""


def test_apply_merges_best_values_keeping_comments(tmp_path):
    params, best = tmp_path / "params.yaml", tmp_path / "best_params.yaml"
    params.write_text(PARAMS_TEXT)
    best.write_text("# best trial\nmeta:\n  inner_lr: 0.0234\n  backbone_lr: 0.004\n"
                    "select:\n  ratio: 0.65\nfinetune:\n  head_lr: 0.2\n")
    changed = apply_best(best, params)
    assert changed == {"meta.inner_lr": (0.01, 0.0234), "meta.backbone_lr": (None, 0.004),
                       "select.ratio": (0.8, 0.65), "finetune.head_lr": (None, 0.2)}
    text = params.read_text()
    assert "  inner_lr: 0.0234        # eta\n" in text and "# second | first" in text
    p = load_params(params)
    assert (p.meta.inner_lr, p.meta.backbone_lr, p.select.ratio, p.finetune.head_lr) == (
        0.0234, 0.004, 0.65, 0.2)
    assert apply_best(best, params) == {}  # idempotent


def test_apply_refuses_invalid_values_and_leaves_the_file(tmp_path):
    params, best = tmp_path / "params.yaml", tmp_path / "best.yaml"
    params.write_text(PARAMS_TEXT)
    best.write_text("select:\n  ratio: 1.5\n")
    with pytest.raises(ParamsError, match="select.ratio"):
        apply_best(best, params)
    assert params.read_text() == PARAMS_TEXT


def test_apply_adds_missing_sections(tmp_path):
    params, best = tmp_path / "params.yaml", tmp_path / "best.yaml"
    params.write_text("seed: 0\n")
    best.write_text("meta:\n  inner_lr: 0.5\n")
    assert apply_best(best, params) == {"meta.inner_lr": (None, 0.5)}
    assert params.read_text() == "seed: 0\nmeta:\n  inner_lr: 0.5\n"


@pytest.mark.parametrize(("pruner", "cls", "expected"), [
    ("median", optuna.pruners.MedianPruner,
     {"_n_startup_trials": 4, "_n_warmup_steps": 3, "_interval_steps": 2}),
    ("hyperband", optuna.pruners.HyperbandPruner,
     {"_min_resource": 2, "_max_resource": 7, "_reduction_factor": 4}),
    ("none", optuna.pruners.NopPruner, {}),
])
def test_pruner_and_sampler_come_from_params(pruner, cls, expected):
    """Every non-default setting of tune.pruning / tune.sampler reaches the Optuna object."""
    from metafgnet.tuning.study import make_pruner, make_sampler

    tune = parse_params({"tune": {
        "pruner": pruner,
        "pruning": {"n_startup_trials": 4, "n_warmup_steps": 3, "interval_steps": 2,
                    "min_resource": 2, "reduction_factor": 4},
        "budget": {"finetune_epochs": 7},
        "sampler": {"n_startup_trials": 9, "n_ei_candidates": 13, "multivariate": False,
                    "constant_liar": False},
    }}).tune
    made = make_pruner(tune)
    assert isinstance(made, cls)
    assert {k: getattr(made, k) for k in expected} == expected
    tpe = make_sampler(tune, seed=1)
    assert isinstance(tpe, optuna.samplers.TPESampler)
    assert (tpe._n_startup_trials, tpe._n_ei_candidates, tpe._multivariate,
            tpe._constant_liar) == (9, 13, False, False)
    random = parse_params({"tune": {"sampler": {"kind": "random"}}}).tune
    assert isinstance(make_sampler(random, seed=1), optuna.samplers.RandomSampler)


def test_cli_never_writes_the_stage_output_and_apply_takes_the_newest(tmp_path, monkeypatch,
                                                                       capsys):
    import os

    from metafgnet.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(PARAMS_TEXT)
    assert main(["tune", "--out", "results/tune"]) == 2
    assert "is the DVC stage `tune`'s output" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()

    assert main(["tune", "apply"]) == 2
    assert "run `metafgnet tune`" in capsys.readouterr().err
    for folder, ratio, mtime in (("tune", 0.5, 1_000), ("tune-cli", 0.6, 2_000)):
        best = tmp_path / "results" / folder / "best_params.yaml"
        best.parent.mkdir(parents=True)
        best.write_text(f"select:\n  ratio: {ratio}\n")
        os.utime(best, (mtime, mtime))
    assert main(["tune", "apply"]) == 0
    assert "results/tune-cli/best_params.yaml" in capsys.readouterr().out
    assert load_params(tmp_path / "params.yaml").select.ratio == 0.6
    os.utime(tmp_path / "results/tune/best_params.yaml", (3_000, 3_000))  # the stage ran later
    assert main(["tune", "apply"]) == 0
    assert load_params(tmp_path / "params.yaml").select.ratio == 0.5
