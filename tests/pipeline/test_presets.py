"""The paper presets: each validates with the paper's hyperparameters (docs/method.md), applies
through the CLI, and runs for a few steps on tiny datasets written in the real formats (ResNet-34, no download)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from metafgnet.params import load_params
from metafgnet.presets import preset_names, resolve_preset
from support.datasets import build_cub, build_dogs, build_folder
from support.repo import make_repo, run

STAGES = {"prepare", "pretrain", "meta_train", "select", "meta_train_selected",
          "meta_train_random", "joint", "finetune@finetune", "finetune@joint",
          "finetune@metafgnet", "finetune@metafgnet_selected", "finetune@metafgnet_random",
          "evaluate", "report", "tune"}


def test_presets_are_shipped():
    assert {"cub_lbird", "cub_imagenet", "dogs_imagenet"} <= set(preset_names())


@pytest.mark.parametrize("name", preset_names())
def test_preset_carries_the_papers_hyperparameters(name):
    _, p = resolve_preset(name)
    assert (p.model.backbone, p.model.pretrained) == ("resnet34", "imagenet")
    assert (p.data.image_size, p.data.resize) == (224, 256)
    assert (p.meta.order, p.meta.update, p.meta.inner_lr) == ("second", "sequential", 0.01)
    assert (p.meta.iterations, p.meta.milestones) == (37263, [12421, 24842])
    assert (p.meta.batch_size, p.meta.aux_batch_size) == (256, 256)
    assert (p.meta.target_head_lr, p.meta.backbone_lr, p.meta.source_head_lr) == (0.1, 1e-3, 1e-3)
    assert (p.pretrain.epochs, p.pretrain.milestones) == (32, [16, 24])
    assert (p.finetune.epochs, p.finetune.batch_size, p.finetune.milestones) == (160, 128, [80, 120])
    assert (p.select.criterion, p.select.ratio) == ("ratio", 0.8)
    assert p.data.num_target_classes == (200 if name.startswith("cub") else 120)


@pytest.mark.slow
def test_preset_apply_writes_a_valid_complete_params_file(tmp_path):
    out = tmp_path / "params.yaml"
    subprocess.run([sys.executable, "-m", "metafgnet.cli", "preset", "apply", "dogs_imagenet",
                    "--output", str(out)], check=True, capture_output=True)
    assert load_params(out) == resolve_preset("dogs_imagenet")[1]
    bad = subprocess.run([sys.executable, "-m", "metafgnet.cli", "preset", "apply", "nope",
                          "--output", str(out)], capture_output=True, text=True)
    assert bad.returncode != 0 and "unknown preset 'nope'; available:" in bad.stderr


def _tiny(target_root, aux_root, n_target: int, n_aux: int) -> dict:
    """Shrink a preset to a few steps on CPU; everything else (ResNet-34, modes) is kept."""
    return {
        "data": {"target_root": str(target_root), "auxiliary_root": str(aux_root),
                 "num_target_classes": n_target, "num_auxiliary_classes": n_aux,
                 "val_fraction": 0.34, "image_size": 32, "resize": 36},
        "model": {"pretrained": "none"},  # no download in tests
        "pretrain": {"epochs": 1, "batch_size": 4, "milestones": []},
        "meta": {"iterations": 2, "batch_size": 2, "aux_batch_size": 4, "milestones": [1],
                 "log_every": 1},
        "select": {"batch_size": 16},
        "joint": {"epochs": 1, "batch_size": 2, "milestones": []},
        "finetune": {"epochs": 1, "batch_size": 2, "milestones": []},
        "runtime": {"device": "cpu", "num_threads": 1, "deterministic": True},
        "execution": {"num_workers": 0, "pin_memory": False, "checkpoint_every": 0},
        "tracking": {"log_models": False},
    }


@pytest.mark.slow
def test_cub_lbird_preset_runs_the_whole_pipeline_on_real_format_fixtures(tmp_path):
    cub = build_cub(tmp_path / "CUB_200_2011", per_class=4)
    lbird = build_folder(tmp_path / "lbird", classes=("a1", "a2", "a3", "a4"), per_class=3,
                         ext=".jpg")
    raw, _ = resolve_preset("cub_lbird", _tiny(cub, lbird, 3, 4))
    repo, env = make_repo(tmp_path / "repo", raw)
    names = set(run([sys.executable, "-m", "dvc", "stage", "list", "--name-only"], repo,
                    env).stdout.split())
    assert names == STAGES
    run([sys.executable, "-m", "dvc", "repro"], repo, env)
    metrics = json.loads((repo / "metrics/evaluate.json").read_text())
    assert set(metrics) == {"finetune", "joint", "metafgnet", "metafgnet_selected",
                            "metafgnet_random"}
    select = json.loads((repo / "metrics/select.json").read_text())
    assert "selection_precision" not in select  # no related/unrelated truth for real data
    assert "roc_auc" not in select and 0.0 < select["selected_fraction"] <= 1.0
    assert (repo / "results/select/score_distribution.png").stat().st_size > 0  # per class
    report = (repo / "results/report/report.md").read_text()
    assert "85.795" in report and "87.17" in report  # published references beside measured


@pytest.mark.slow
def test_dogs_imagenet_preset_meta_trains_on_real_format_fixtures(tmp_path):
    dogs = build_dogs(tmp_path / "StanfordDogs",
                      breeds=("n02085620-Chihuahua", "n02085782-Japanese_spaniel",
                              "n02085936-Maltese_dog"))
    imagenet = build_folder(tmp_path / "imagenet" / "train", classes=("n01", "n02", "n03"),
                            per_class=4)
    tiny = _tiny(dogs, imagenet, 3, 3)
    # the official-format fixture has 3 train images after the validation split: one image per
    # T_i / T_j, at 64 px so BatchNorm still sees 2x2 values per channel at ResNet-34's last stage
    tiny["meta"]["batch_size"] = 1
    tiny["data"].update(image_size=64, resize=72)
    raw, _ = resolve_preset("dogs_imagenet", tiny)
    repo, env = make_repo(tmp_path / "repo", raw)
    out = run([sys.executable, "-m", "dvc", "repro", "meta_train"], repo, env)
    ran = {line.split("'")[1] for line in out.stdout.splitlines()
           if line.startswith("Running stage")}
    assert ran == {"prepare", "pretrain", "meta_train"}
    metrics = json.loads((repo / "metrics/meta_train.json").read_text())
    assert metrics["iterations"] == 2 and 0.0 <= metrics["val_top1"] <= 1.0
    assert metrics["cost"]["seconds_per_iter"] > 0 and metrics["cost"]["memory"] == "rss_growth"
