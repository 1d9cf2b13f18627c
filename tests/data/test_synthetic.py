"""The synthetic benchmark: byte-identical per seed, real formats, effective difficulty knobs."""

from __future__ import annotations

import csv
import hashlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from metafgnet.data import DataError, generate_synthetic, read_cub, read_folder
from metafgnet.data.synthetic import plan_classes, render
from metafgnet.params import SyntheticParams
from support.datasets import SMALL_SYNTHETIC

TINY = dict(
    image_size=16,
    target_classes=2,
    train_per_class=2,
    test_per_class=1,
    related_classes=1,
    unrelated_classes=2,
    aux_per_class=2,
)


def digests(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_seed_byte_identical_other_seed_different(tmp_path):
    generate_synthetic(SyntheticParams(**TINY), tmp_path / "a")
    generate_synthetic(SyntheticParams(**TINY), tmp_path / "b")
    generate_synthetic(SyntheticParams(**TINY, seed=1), tmp_path / "c")
    a, b, c = (digests(tmp_path / n) for n in "abc")
    assert a == b
    assert len(a) == 2 * 3 + 3 * 2 + 5  # images + 4 CUB text files + truth csv
    aux = [k for k in a if k.startswith("auxiliary/")]
    assert aux == [k for k in c if k.startswith("auxiliary/")]  # neutral names: same paths
    assert all(a[k] != c[k] for k in aux)  # ... different images
    target_pngs = {v for k, v in a.items() if k.startswith("target/images/")}
    assert not target_pngs & {v for k, v in c.items() if k.startswith("target/images/")}


def test_images_depend_only_on_their_own_seed(tmp_path):
    """Per-image generators: more classes or images leave the existing images unchanged."""
    generate_synthetic(SyntheticParams(**TINY), tmp_path / "a")
    generate_synthetic(SyntheticParams(**{**TINY, "aux_per_class": 3}), tmp_path / "b")
    a, b = digests(tmp_path / "a" / "target"), digests(tmp_path / "b" / "target")
    assert a == b


def test_layout_read_by_the_real_readers(small_synthetic):
    params = SyntheticParams(**SMALL_SYNTHETIC)
    target = read_cub(small_synthetic / "target")
    assert len(target.class_names) == 3 and target.class_names[0].startswith("001.")
    assert Counter(r.label for r in target.train) == {c: 4 for c in range(3)}
    assert Counter(r.label for r in target.test) == {c: 2 for c in range(3)}
    ids = [
        line.split()[0] for line in (small_synthetic / "target/images.txt").read_text().splitlines()
    ]
    assert ids == [str(i) for i in range(1, 19)]
    aux = read_folder(small_synthetic / "auxiliary")
    assert aux.class_names == [f"aux_{i:03d}" for i in range(4)]
    assert Counter(r.label for r in aux.train) == {c: 3 for c in range(4)}
    with Image.open(
        small_synthetic / target.train[0].path.replace("images/", "target/images/")
    ) as im:
        assert im.size == (16, 16) and im.mode == "RGB" and not im.info.get("dpi")
    rows = list(csv.DictReader((small_synthetic / "auxiliary_truth.csv").open()))
    assert [r["class_name"] for r in rows] == aux.class_names
    assert Counter(r["related"] for r in rows) == {
        "1": params.related_classes,
        "0": params.unrelated_classes,
    }
    assert {r["family"] for r in rows if r["related"] == "1"} == {"bird"}
    assert "bird" not in {r["family"] for r in rows if r["related"] == "0"}


def test_related_classes_are_other_birds_unrelated_span_families():
    params = SyntheticParams(target_classes=16, related_classes=24, unrelated_classes=24)
    target, aux = plan_classes(params)
    related = [c for c in aux if c.related]
    assert len({c.attrs for c in target} | {c.attrs for c in related}) == 40  # all distinct
    assert all(c.family.name == "bird" for c in target + related)
    assert Counter(c.family.name for c in aux if not c.related) == {
        "fish": 6,
        "flower": 6,
        "vehicle": 6,
        "house": 6,
    }
    kinds = [c.related for c in aux]
    assert kinds != sorted(kinds) and kinds != sorted(kinds, reverse=True)  # interleaved


@pytest.mark.parametrize(
    "knob, value",
    [("noise", 0.3), ("pose_jitter", 1.0), ("scale_jitter", 0.8), ("detail_jitter", 0.6)],
)
def test_difficulty_knobs_change_images(knob, value):
    base = SyntheticParams(
        **{**TINY, "noise": 0.0, "pose_jitter": 0.0, "scale_jitter": 0.0, "detail_jitter": 0.0}
    )
    harder = SyntheticParams(
        **{
            **TINY,
            "noise": 0.0,
            "pose_jitter": 0.0,
            "scale_jitter": 0.0,
            "detail_jitter": 0.0,
            knob: value,
        }
    )
    target, _ = plan_classes(base)
    diffs = []
    for seed in range(4):  # same random draws, only the knob differs
        a = render(target[0], base, np.random.default_rng(seed)).astype(int)
        b = render(target[0], harder, np.random.default_rng(seed)).astype(int)
        assert a.shape == b.shape == (16, 16, 3)
        diffs.append(np.abs(a - b).mean())
    assert np.mean(diffs) > 1.0


def test_image_size_param(tmp_path):
    generate_synthetic(SyntheticParams(**{**TINY, "image_size": 24}), tmp_path / "s")
    with Image.open(next((tmp_path / "s/auxiliary").rglob("*.png"))) as im:
        assert im.size == (24, 24)


def test_too_many_classes_is_a_clear_error(tmp_path):
    with pytest.raises(
        DataError, match=r"target_classes \+ synthetic.related_classes = 400 exceeds"
    ):
        generate_synthetic(SyntheticParams(target_classes=200, related_classes=200), tmp_path / "x")
    with pytest.raises(DataError, match=r"unrelated_classes = 500 exceeds the 82"):
        generate_synthetic(SyntheticParams(unrelated_classes=500), tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_regenerates_over_its_own_output_but_refuses_foreign_folders(tmp_path):
    out = tmp_path / "out"
    generate_synthetic(SyntheticParams(**TINY), out)
    (out / "target" / "stale.txt").write_text("from an earlier run")
    generate_synthetic(SyntheticParams(**TINY), out)
    assert not (out / "target" / "stale.txt").exists()
    (out / "mine.txt").write_text("precious")
    with pytest.raises(DataError, match=r"refusing to replace .*out: it holds mine.txt"):
        generate_synthetic(SyntheticParams(**TINY), out)
    assert (out / "mine.txt").read_text() == "precious"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary folder left behind
