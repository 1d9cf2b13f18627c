"""Typed params: every section parsed once; bad keys and values named with their dotted path."""

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from metafgnet.params import Params, ParamsError, load_params, parse_params, to_dict

ROOT = Path(__file__).resolve().parents[2]


def _error(raw: dict) -> str:
    with pytest.raises(ParamsError) as exc:
        parse_params(raw)
    return str(exc.value)


def test_repository_params_file_is_valid():
    params = load_params("params.yaml")
    assert isinstance(params, Params)
    assert params.meta.order in ("first", "second")


def test_code_defaults_are_the_repository_params_file():
    # params.yaml is what users run; the dataclasses hold the same defaults (never drifting)
    assert to_dict(Params()) == to_dict(load_params(ROOT / "params.yaml"))
    assert parse_params({}) == Params()


def test_unknown_key_names_path_and_closest_key():
    assert "meta.ordr: unknown key; did you mean meta.order?" in _error({"meta": {"ordr": "first"}})
    assert "metaa: unknown key; did you mean meta?" in _error({"metaa": {}})


def test_unknown_key_without_close_match_lists_valid_keys():
    msg = _error({"select": {"zzzzzz": 1}})
    assert "select.zzzzzz: unknown key; valid keys:" in msg and "criterion" in msg


def test_literal_names_allowed_values():
    assert "meta.order must be 'first' or 'second' (got 'third')" in _error(
        {"meta": {"order": "third"}})


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"meta": {"inner_lr": -1}}, "meta.inner_lr: Input should be greater than 0 (got -1)"),
        ({"model": {"width": "abc"}}, "model.width: Input should be a valid integer"),
        ({"data": {"resize": 10}}, "data: resize (10) must be >= image_size (32)"),
        ({"pretrain": {"milestones": [3, 2]}}, "pretrain.milestones: must be strictly increasing"),
        ({"pretrain": {"epochs": 30, "milestones": [20, 30]}},
         "pretrain.milestones: [30] not below epochs (30)"),
        ({"meta": {"iterations": 100, "milestones": [50, 150]}},
         "meta.milestones: [150] not below iterations (100)"),
        ({"finetune": {"epochs": 4, "milestones": [2, 5]}}, "finetune.milestones: [5]"),
        ({"joint": {"epochs": 2, "milestones": [2]}}, "joint.milestones: [2] not below epochs"),
        ({"select": {"ratio": 1.5}}, "select.ratio: Input should be less than or equal to 1"),
        ({"meta": {"micro_batch": -1}},
         "meta.micro_batch: Input should be greater than or equal to 0"),
        ({"meta": {"batch_size": 8, "micro_batch": 16}},
         "meta: micro_batch (16) must be at most batch_size (8)"),
    ],
)
def test_wrong_types_and_ranges_name_the_key(raw, expected):
    assert expected in _error(raw)


def test_all_errors_reported_together():
    msg = _error({"meta": {"ordr": "x", "inner_lr": 0}})
    assert "meta.ordr" in msg and "meta.inner_lr" in msg


def test_params_are_frozen():
    params = parse_params({})
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.meta.order = "first"  # type: ignore[misc]


def test_yaml_exponent_floats_parse(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("meta:\n  backbone_lr: 1e-3\n")
    assert load_params(path).meta.backbone_lr == pytest.approx(1e-3)


def test_missing_and_invalid_yaml_files(tmp_path):
    with pytest.raises(ParamsError, match="params file not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("meta: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(bad)


@pytest.mark.slow
def test_cli_params_check_exit_codes(tmp_path):
    good = subprocess.run([sys.executable, "-m", "metafgnet.cli", "params", "check", "params.yaml"],
                          capture_output=True, text=True)
    assert good.returncode == 0, good.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("meta:\n  ordr: first\n")
    out = subprocess.run([sys.executable, "-m", "metafgnet.cli", "params", "check", str(bad)],
                         capture_output=True, text=True)
    assert out.returncode != 0
    assert "meta.ordr: unknown key; did you mean meta.order?" in out.stderr


def test_scaled_schedule_keeps_milestones_inside_the_shorter_run():
    from metafgnet.training import scaled_schedule

    assert scaled_schedule(300, [150, 250], 0.8) == (240, [120, 200])
    assert scaled_schedule(300, [150, 250], 10 / 300) == (10, [5, 8])
    # collapsing milestones are merged, those at or past the end dropped, never below 1
    assert scaled_schedule(10, [1, 2, 9], 0.1) == (1, [])
    assert scaled_schedule(100, [1, 2, 60], 0.3) == (30, [1, 18])


def test_settings_that_cannot_change_a_result_have_their_own_section():
    """Loader processes, pinned memory, the checkpoint cadence and the launcher live in
    ``execution``, which no stage declares (so they re-run nothing) and no fingerprint holds."""
    full = to_dict(parse_params({}))
    neutral = {"num_workers", "prefetch_factor", "pin_memory", "checkpoint_every", "launcher"}
    assert set(full["execution"]) == neutral
    assert not any(neutral & set(values) for name, values in full.items()
                   if name != "execution" and isinstance(values, dict))
    declared = {p if isinstance(p, str) else next(iter(p))
                for stage in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].values()
                for p in stage.get("params", stage.get("do", {}).get("params", []))}
    assert "execution" not in declared and "runtime" in declared
