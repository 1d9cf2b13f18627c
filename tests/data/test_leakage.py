"""The leakage check of ``prepare``: copies of target images planted in the auxiliary set of the
embedded benchmark are found exactly (byte copies and altered ones, in every target split), the
unaltered default benchmark has none, and ``data.leakage.drop`` removes exactly the copies."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from metafgnet.data import DataError, generate_synthetic, prepare_manifests
from metafgnet.data.leakage import find_leaks
from metafgnet.params import Params, parse_params


@pytest.fixture(scope="module")
def default_benchmark(tmp_path_factory) -> Path:
    """The default embedded benchmark (``synthetic`` params as committed). Read-only."""
    out = tmp_path_factory.mktemp("leakage") / "synthetic"
    generate_synthetic(Params().synthetic, out)
    return out


def _params(bench: Path, **leakage) -> Params:
    return parse_params({"data": {"target_root": str(bench / "target"),
                                  "auxiliary_root": str(bench / "auxiliary"),
                                  "leakage": leakage}})


def _rows(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_default_benchmark_has_no_copies(default_benchmark, tmp_path):
    prepare_manifests(_params(default_benchmark), tmp_path / "prep")
    counts = json.loads((tmp_path / "prep" / "leakage.json").read_text())
    assert counts == {"train": {"exact": 0, "near": 0}, "val": {"exact": 0, "near": 0},
                      "test": {"exact": 0, "near": 0}, "auxiliary_images": 0, "dropped": 0,
                      "max_distance": 6}
    assert _rows(tmp_path / "prep" / "leakage.csv") == []
    assert json.loads((tmp_path / "prep" / "index.json").read_text())["leakage"] == counts


def _jpeg(im: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def test_planted_copies_are_found_exactly_and_dropped_on_request(default_benchmark, tmp_path):
    bench = tmp_path / "bench"
    shutil.copytree(default_benchmark, bench)
    clean = prepare_manifests(_params(bench), tmp_path / "clean")
    split_of = {r.path: s for s in ("train", "val", "test") for r in getattr(clean, s)}
    (train0, train1), (val0, val1), (test0, test1, test2) = (
        [r.path for r in clean.train[:2]], [r.path for r in clean.val[:2]],
        [r.path for r in clean.test[:3]])
    target = bench / "target"
    folder = bench / "auxiliary" / sorted(p.name for p in (bench / "auxiliary").iterdir()
                                          if p.is_dir())[0]

    def image(rel: str) -> Image.Image:
        return Image.open(target / rel).convert("RGB")

    planted = {  # auxiliary file -> (target image, kind)
        "copy_train.png": (train0, "exact"), "copy_val.png": (val0, "exact"),
        "copy_test.png": (test0, "exact")}
    for name, (source, _) in list(planted.items()):
        shutil.copyfile(target / source, folder / name)
    near = {  # altered copies: resized, re-encoded, slightly cropped (1 px of 64), combined
        "resized_test.png": (test1, lambda im: im.resize((48, 48), Image.BICUBIC)),
        "jpeg_test.jpg": (test2, lambda im: im),
        "cropped_train.jpg": (train1, lambda im: im.resize((64, 64), Image.BICUBIC)
                              .crop((1, 0, 64, 64))),
        "small_val.jpg": (val1, lambda im: im.resize((24, 24), Image.BICUBIC)),
    }
    for name, (source, alter) in near.items():
        altered = alter(image(source))
        if name.endswith(".jpg"):
            (folder / name).write_bytes(_jpeg(altered, 90))
        else:
            altered.save(folder / name)
        planted[name] = (source, "near")

    prepared = prepare_manifests(_params(bench), tmp_path / "prep")
    rows = _rows(tmp_path / "prep" / "leakage.csv")
    found = {(Path(r["auxiliary"]).name, r["target"], r["split"], r["kind"]) for r in rows}
    assert found == {(name, source, split_of[source], kind)
                     for name, (source, kind) in planted.items()}
    assert len(rows) == len(planted), rows
    assert all(int(r["distance"]) <= 6 for r in rows)
    assert all(r["distance"] == "0" for r in rows if r["kind"] == "exact")
    counts = json.loads((tmp_path / "prep" / "leakage.json").read_text())
    assert counts["train"] == {"exact": 1, "near": 1} and counts["val"] == {"exact": 1, "near": 1}
    assert counts["test"] == {"exact": 1, "near": 2}
    assert counts["auxiliary_images"] == 7 and counts["dropped"] == 0
    kept = {Path(r.path).name for r in prepared.auxiliary}
    assert set(planted) <= kept                        # off by default: the paper keeps them

    dropped = prepare_manifests(_params(bench, drop=True), tmp_path / "dropped")
    assert {r.path for r in prepared.auxiliary} - {r.path for r in dropped.auxiliary} == {
        r["auxiliary"] for r in rows}
    assert len(dropped.auxiliary) == len(prepared.auxiliary) - 7
    assert json.loads((tmp_path / "dropped" / "leakage.json").read_text())["dropped"] == 7
    # a threshold of 0 keeps the byte copies and only the near copies the hash cannot tell apart
    strict = find_leaks({"train": clean.train, "val": clean.val, "test": clean.test}, target,
                        prepared.auxiliary, bench / "auxiliary", max_distance=0)
    assert {Path(leak.auxiliary).name for leak in strict if leak.kind == "exact"} == {
        "copy_train.png", "copy_val.png", "copy_test.png"}
    assert all(leak.distance == 0 for leak in strict)


def test_dropping_every_auxiliary_image_is_refused(small_synthetic, tmp_path):
    """An auxiliary set made only of copies of the target (wrong roots, most likely) would
    leave meta-training nothing: prepare stops and says so, and writes nothing."""
    aux = tmp_path / "aux" / "copies"
    aux.mkdir(parents=True)
    for k, image in enumerate(sorted((small_synthetic / "target" / "images").rglob("*.png"))[:3]):
        shutil.copyfile(image, aux / f"copy_{k}.png")
    params = _params_folder(small_synthetic, tmp_path / "aux", drop=True)
    with pytest.raises(DataError, match="every auxiliary image at .*aux copies a target image"):
        prepare_manifests(params, tmp_path / "prep")
    assert not (tmp_path / "prep").exists()
    kept = prepare_manifests(_params_folder(small_synthetic, tmp_path / "aux"), tmp_path / "kept")
    assert len(kept.auxiliary) == 3                     # off: the copies stay
    assert json.loads((tmp_path / "kept" / "leakage.json").read_text())["auxiliary_images"] == 3


def _params_folder(bench: Path, aux: Path, **leakage) -> Params:
    return parse_params({"data": {"target_root": str(bench / "target"), "auxiliary": "folder",
                                  "auxiliary_root": str(aux), "leakage": leakage}})
