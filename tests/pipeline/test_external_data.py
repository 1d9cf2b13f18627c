"""Datasets and weights under data/external are DVC dependencies: any change re-runs the stage
that reads them, and unchanged data keeps it cached."""

import sys

import pytest
import yaml

from support.datasets import build_cub, write_image
from support.repo import copy_repo, run

pytestmark = pytest.mark.slow

DVC = [sys.executable, "-m", "dvc"]


def _changed(repo, env, stage):
    out = run([*DVC, "status", stage], repo, env).stdout
    return "modified:" in out and "data/external" in out


def _repro_prepare(repo, env):
    out = run([*DVC, "repro", "prepare"], repo, env, check=False)
    return out.stdout + out.stderr


def test_a_changed_external_dataset_reruns_prepare(tiny_pipeline, tmp_path):
    repo, env = copy_repo(tiny_pipeline[0], tmp_path / "repo", tiny_pipeline[1])
    env = {k: v for k, v in env.items() if k != "METAFGNET_AUDIT"}
    cub = build_cub(repo / "data" / "external" / "cub",
                    classes=("001.Alpha", "002.Beta", "003.Gamma", "004.Delta"), per_class=4)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["data"].update(target="cub", target_root="data/external/cub", val_fraction=0.34)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert "Running stage 'prepare'" in _repro_prepare(repo, env)
    index = repo / "data" / "prepared" / "manifests" / "index.json"
    first = index.read_text()
    assert "didn't change" in _repro_prepare(repo, env)  # unchanged data: cached
    assert not _changed(repo, env, "prepare")

    # the probe: a line cut from images.txt
    images = cub / "images.txt"
    original = images.read_text()
    images.write_text("".join(original.splitlines(keepends=True)[:-1]))
    assert _changed(repo, env, "prepare")
    assert "Running stage 'prepare'" in _repro_prepare(repo, env)
    # the manifests follow the data (or prepare stops, naming the file: the cut image is still
    # listed in image_class_labels.txt)
    assert not index.is_file() or index.read_text() != first
    images.write_text(original)
    # back to the first data: DVC restores the first run's outputs from its run cache
    assert "is cached" in _repro_prepare(repo, env) and index.read_text() == first

    # an added file, then a replaced image
    write_image(cub / "images" / "extra.jpg", colour=5)
    assert _changed(repo, env, "prepare")
    assert "Running stage 'prepare'" in _repro_prepare(repo, env)
    write_image(cub / "images" / "001.Alpha" / "Alpha_0001.jpg", colour=7)
    assert _changed(repo, env, "prepare")


def test_new_weights_rerun_pretrain(tiny_pipeline, tmp_path):
    repo, env = copy_repo(tiny_pipeline[0], tmp_path / "repo", tiny_pipeline[1])
    assert not _changed(repo, env, "pretrain")
    (repo / "data" / "external" / "weights" / "resnet18-f37072fd.pth").write_bytes(b"weights")
    assert _changed(repo, env, "pretrain")
