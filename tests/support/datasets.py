"""Small datasets written in the real on-disk formats (tiny images, real .mat files)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

# the small synthetic benchmark of the data tests
SMALL_SYNTHETIC = dict(
    image_size=16,
    target_classes=3,
    train_per_class=4,
    test_per_class=2,
    related_classes=2,
    unrelated_classes=2,
    aux_per_class=3,
)


def write_image(path: Path, colour: int = 0, mode: str = "RGB", size: int = 8) -> Path:
    """A tiny deterministic image; the format follows the suffix (.jpg, .png, ...)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = (np.arange(size * size * 3).reshape(size, size, 3) * 7 + colour * 40) % 256
    im = Image.fromarray(arr.astype(np.uint8), "RGB")
    if mode != "RGB":
        im = im.convert(mode)
    im.save(path)
    return path


def build_cub(
    root: Path, classes=("001.Alpha", "002.Beta", "003.Gamma"), per_class=3, nested: bool = False
) -> Path:
    """CUB-200-2011 layout: the first image of every class is test, the rest train."""
    base = root / "CUB_200_2011" if nested else root
    images, labels, split = [], [], []
    for c, name in enumerate(classes, 1):
        for k in range(per_class):
            rel = f"{name}/{name.split('.')[-1]}_{k:04d}.jpg"
            write_image(base / "images" / rel, colour=c)
            images.append(f"{len(images) + 1} {rel}")
            labels.append(f"{len(labels) + 1} {c}")
            split.append(f"{len(split) + 1} {0 if k == 0 else 1}")
    base.mkdir(parents=True, exist_ok=True)
    (base / "images.txt").write_text("\n".join(images) + "\n")
    (base / "image_class_labels.txt").write_text("\n".join(labels) + "\n")
    (base / "train_test_split.txt").write_text("\n".join(split) + "\n")
    (base / "classes.txt").write_text(
        "\n".join(f"{c} {n}" for c, n in enumerate(classes, 1)) + "\n"
    )
    return root


def _cell(strings: list[str]) -> np.ndarray:
    """A MATLAB cell column (N x 1) of strings, as in the official list files."""
    cell = np.empty((len(strings), 1), dtype=object)
    for i, s in enumerate(strings):
        cell[i, 0] = s
    return cell


def build_dogs(
    root: Path,
    breeds=("n02085620-Chihuahua", "n02085782-Japanese_spaniel"),
    lists_dir: str = "lists",
) -> Path:
    """Stanford Dogs: Images/<breed>/*.jpg and <lists_dir>/{train,test}_list.mat."""
    splits = {"train": ([], []), "test": ([], [])}
    for label, breed in enumerate(breeds, 1):
        for k in range(3):
            rel = f"{breed}/{breed.split('-')[0]}_{k}.jpg"
            write_image(root / "Images" / rel, colour=label)
            files, labels = splits["test" if k == 2 else "train"]
            files.append(rel)
            labels.append(label)
    out = root / lists_dir if lists_dir else root
    out.mkdir(parents=True, exist_ok=True)
    for split, (files, labels) in splits.items():
        scipy.io.savemat(
            out / f"{split}_list.mat",
            {
                "file_list": _cell(files),
                "annotation_list": _cell([f.removesuffix(".jpg") for f in files]),
                "labels": np.asarray(labels, dtype=float).reshape(-1, 1),
            },
        )
    return root


def build_folder(root: Path, classes=("n01", "n02", "n03"), per_class=2, ext=".JPEG") -> Path:
    for c, name in enumerate(classes):
        for k in range(per_class):
            write_image(root / name / f"{name}_{k}{ext}", colour=c)
    return root


def build_aircraft(root: Path) -> Path:
    """fgvc-aircraft-2013b/data: variants.txt, images_variant_{trainval,test}.txt, images/."""
    data = root / "fgvc-aircraft-2013b" / "data"
    variants = ["707-320", "Boeing 717", "A300B4"]
    (data / "images").mkdir(parents=True)
    (data / "variants.txt").write_text("\n".join(variants) + "\n")
    n = 0
    for split, per in (("trainval", 2), ("test", 1)):
        lines = []
        for v in variants:
            for _ in range(per):
                n += 1
                write_image(data / "images" / f"{1000000 + n:07d}.jpg", colour=n % 5)
                lines.append(f"{1000000 + n:07d} {v}")
        (data / f"images_variant_{split}.txt").write_text("\n".join(lines) + "\n")
    return root


def build_flowers(root: Path) -> Path:
    """flowers-102: jpg/image_#####.jpg, imagelabels.mat (1-based), setid.mat (split ids)."""
    base = root / "flowers-102"
    labels = [1, 1, 1, 2, 2, 2, 3, 3, 3]
    for i in range(1, len(labels) + 1):
        write_image(base / "jpg" / f"image_{i:05d}.jpg", colour=i % 5)
    scipy.io.savemat(base / "imagelabels.mat", {"labels": np.asarray([labels], dtype=np.uint8)})
    scipy.io.savemat(
        base / "setid.mat",
        {
            "trnid": np.asarray([[1, 4, 7]], dtype=np.uint16),
            "valid": np.asarray([[2, 5, 8]], dtype=np.uint16),
            "tstid": np.asarray([[3, 6, 9]], dtype=np.uint16),
        },
    )
    return root


def _annotations(fnames: list[str], classes: list[int]) -> np.ndarray:
    fields = ["bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname"]
    arr = np.empty((1, len(fnames)), dtype=[(f, object) for f in fields])
    for i, (fname, cls) in enumerate(zip(fnames, classes, strict=True)):
        arr[0, i] = (np.uint8(1), np.uint8(1), np.uint8(7), np.uint8(7), np.uint8(cls), fname)
    return arr


def build_cars(root: Path) -> Path:
    """stanford_cars: devkit/{cars_meta,cars_train_annos}.mat, cars_test_annos_withlabels.mat."""
    base = root / "stanford_cars"
    (base / "devkit").mkdir(parents=True)
    names = np.empty((1, 2), dtype=object)
    names[0, 0], names[0, 1] = "AM General Hummer SUV 2000", "Acura RL Sedan 2012"
    scipy.io.savemat(base / "devkit" / "cars_meta.mat", {"class_names": names})
    for split, annos, n in (
        ("train", base / "devkit" / "cars_train_annos.mat", 4),
        ("test", base / "cars_test_annos_withlabels.mat", 2),
    ):
        fnames = [f"{i + 1:05d}.jpg" for i in range(n)]
        for i, f in enumerate(fnames):
            write_image(base / f"cars_{split}" / f, colour=i)
        scipy.io.savemat(
            annos, {"annotations": _annotations(fnames, [1 + i % 2 for i in range(n)])}
        )
    return root
