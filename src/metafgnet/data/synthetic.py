"""The embedded synthetic fine-grained benchmark, written in the real on-disk formats.

``generate_synthetic(params, out_dir)`` writes

- ``out_dir/target/``: the CUB-200-2011 layout (``images.txt``, ``classes.txt``,
  ``image_class_labels.txt``, ``train_test_split.txt``, ``images/<class_dir>/*.png``), read by
  :func:`metafgnet.data.cub.read_cub` exactly like the real CUB;
- ``out_dir/auxiliary/<class_name>/*.png``: a class-folder tree like ImageNet / L-Bird, read by
  :func:`metafgnet.data.folder.read_folder`; related and unrelated classes are interleaved under
  neutral names (``aux_000``, ...);
- ``out_dir/auxiliary_truth.csv`` (``class_name,family,related``): which auxiliary classes are
  related to the target. Training never reads it; it only measures selection precision.

Target classes are birds that differ in small details (see :mod:`metafgnet.data.families`).
Everything is a function of ``params.seed``: each image draws from its own generator seeded by
``(seed, stream, class, image)``, so the output does not depend on generation order, and PNGs are
written without metadata at a fixed compression level, so one seed gives byte-identical files.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
from PIL import Image

from metafgnet.data.errors import DataError
from metafgnet.data.families import BIRD, UNRELATED, Family
from metafgnet.data.raster import background, downsample, posed_grid, supersampling
from metafgnet.data.staging import staged_dir
from metafgnet.io import csv_text
from metafgnet.params import SyntheticParams
from metafgnet.progress import Progress

# Independent random streams derived from ``synthetic.seed``.
_PLAN, _SPLIT, _TARGET, _AUX = range(4)
_BASE_SCALE = 0.7  # object-frame unit in canvas half-widths
_PNG_COMPRESS_LEVEL = 6


@dataclasses.dataclass(frozen=True)
class SyntheticClass:
    """One generated class: its folder name, family and detail attributes."""

    name: str
    family: Family
    attrs: tuple
    related: bool


def plan_classes(params: SyntheticParams) -> tuple[list[SyntheticClass], list[SyntheticClass]]:
    """The target classes and the (interleaved) auxiliary classes for ``params.seed``.

    Target and related classes take disjoint bird detail combinations; unrelated classes are
    dealt round-robin over the other families.
    """
    rng = np.random.default_rng([params.seed, _PLAN])
    n_bird = params.target_classes + params.related_classes
    if n_bird > len(BIRD.combos):
        raise DataError(
            f"synthetic.target_classes + synthetic.related_classes = {n_bird} exceeds the "
            f"{len(BIRD.combos)} distinct bird detail combinations; lower one of them"
        )
    n_unrelated = sum(len(f.combos) for f in UNRELATED)
    if params.unrelated_classes > n_unrelated:
        raise DataError(
            f"synthetic.unrelated_classes = {params.unrelated_classes} exceeds the {n_unrelated} "
            "distinct unrelated classes the generator can draw; lower it"
        )
    birds = [BIRD.combos[i] for i in rng.permutation(len(BIRD.combos))]
    target = [
        SyntheticClass(f"{i + 1:03d}.{BIRD.describe(a)}", BIRD, a, True)
        for i, a in enumerate(birds[: params.target_classes])
    ]
    aux = [(BIRD, a, True) for a in birds[params.target_classes : n_bird]]
    pools = [[f.combos[i] for i in rng.permutation(len(f.combos))] for f in UNRELATED]
    k = 0
    while len(aux) < n_bird - params.target_classes + params.unrelated_classes:
        family, pool = UNRELATED[k % len(UNRELATED)], pools[k % len(UNRELATED)]
        if pool:
            aux.append((family, pool.pop(0), False))
        k += 1
    width = max(3, len(str(len(aux) - 1)))
    order = rng.permutation(len(aux))
    auxiliary = [SyntheticClass(f"aux_{i:0{width}d}", *aux[j]) for i, j in enumerate(order)]
    return target, auxiliary


def render(cls: SyntheticClass, params: SyntheticParams, rng: np.random.Generator) -> np.ndarray:
    """One image of ``cls``: (image_size, image_size, 3) uint8, all randomness from ``rng``.

    Nuisances: rotation up to +-60 deg x ``pose_jitter``, a random left-right mirror, scale
    x (1 +- ``scale_jitter``), position, textured and cluttered background, Gaussian pixel noise
    of std ``noise``. ``detail_jitter`` perturbs the class-defining details themselves.
    """
    ss = supersampling(params.image_size)
    n = params.image_size * ss
    angle = rng.uniform(-1, 1) * params.pose_jitter * math.pi / 3
    mirror = bool(rng.random() < 0.5)
    scale = _BASE_SCALE * (1 + params.scale_jitter * rng.uniform(-1, 1))
    room = max(0.0, 1.0 - cls.family.extent * scale)
    shift = rng.uniform(-1, 1, 2) * room * (0.25 + 0.75 * params.pose_jitter)
    img = background(n, rng, clutter=int(rng.integers(0, 4)))
    u, v = posed_grid(n, angle, scale, (float(shift[0]), float(shift[1])), mirror)
    cls.family.draw(img, u, v, cls.attrs, rng, params.detail_jitter)
    img = downsample(img, ss)  # (S, S, 3)
    img = img + rng.normal(0.0, params.noise, img.shape)
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _image(
    params: SyntheticParams, stream: int, cls_index: int, k: int, cls: SyntheticClass, path: Path
) -> None:
    """Render image ``k`` of class ``cls_index`` from its own derived generator and save it as a
    deterministic PNG (no metadata chunks, fixed compression level)."""
    rng = np.random.default_rng([params.seed, stream, cls_index, k])
    arr = render(cls, params, rng)
    Image.fromarray(arr, "RGB").save(path, format="PNG", compress_level=_PNG_COMPRESS_LEVEL)


def _write_target(root: Path, classes: list[SyntheticClass], params: SyntheticParams,
                  bar: Progress) -> None:
    """The CUB-200-2011 layout; ids are 1-based and run class by class, like CUB's."""
    images: list[str] = []
    labels: list[str] = []
    split: list[str] = []
    per_class = params.train_per_class + params.test_per_class
    for c, cls in enumerate(classes):
        (root / "images" / cls.name).mkdir(parents=True)
        perm = np.random.default_rng([params.seed, _SPLIT, c]).permutation(per_class)
        is_train = np.zeros(per_class, dtype=bool)
        is_train[perm[: params.train_per_class]] = True
        for k in range(per_class):
            rel = f"{cls.name}/img_{k:04d}.png"
            _image(params, _TARGET, c, k, cls, root / "images" / rel)
            image_id = len(images) + 1
            images.append(f"{image_id} {rel}")
            labels.append(f"{image_id} {c + 1}")
            split.append(f"{image_id} {int(is_train[k])}")
            bar.update()
    (root / "images.txt").write_text("\n".join(images) + "\n")
    (root / "image_class_labels.txt").write_text("\n".join(labels) + "\n")
    (root / "train_test_split.txt").write_text("\n".join(split) + "\n")
    names = [f"{c + 1} {cls.name}" for c, cls in enumerate(classes)]
    (root / "classes.txt").write_text("\n".join(names) + "\n")


def _write_auxiliary(root: Path, classes: list[SyntheticClass], params: SyntheticParams,
                     bar: Progress) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for c, cls in enumerate(classes):
        (root / cls.name).mkdir(parents=True)
        for k in range(params.aux_per_class):
            _image(params, _AUX, c, k, cls, root / cls.name / f"img_{k:04d}.png")
            bar.update()


def truth_csv(classes: list[SyntheticClass]) -> str:
    """``class_name,family,related`` rows for the auxiliary classes, by class name."""
    rows = sorted((cls.name, cls.family.name, int(cls.related)) for cls in classes)
    return csv_text(["class_name", "family", "related"], rows)


def generate_synthetic(params: SyntheticParams, out_dir: Path) -> None:
    """Write the synthetic benchmark for ``params`` to ``out_dir`` (replaced whole, atomically).

    Same ``params`` -> byte-identical files. ``out_dir`` must be new, empty or an earlier output
    of this function (anything else in it is refused, never deleted).
    """
    target, auxiliary = plan_classes(params)
    owned = {"target", "auxiliary", "auxiliary_truth.csv"}
    total = (len(target) * (params.train_per_class + params.test_per_class)
             + len(auxiliary) * params.aux_per_class)
    with staged_dir(out_dir, owned) as tmp, Progress("generate", total, unit="image") as bar:
        _write_target(tmp / "target", target, params, bar)
        _write_auxiliary(tmp / "auxiliary", auxiliary, params, bar)
        (tmp / "auxiliary_truth.csv").write_text(truth_csv(auxiliary))
