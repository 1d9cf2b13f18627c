"""Every real-dataset reader on fixtures written in that dataset's on-disk format."""

from __future__ import annotations

from collections import Counter

import pytest

from metafgnet.data import (
    DataError,
    read_aircraft,
    read_cars,
    read_cub,
    read_dogs,
    read_flowers,
    read_folder,
)


@pytest.mark.parametrize("nested", [False, True])
def test_cub_official_split_and_labels(tmp_path, make_cub, nested):
    root = make_cub(tmp_path / "cub", nested=nested)
    listing = read_cub(root)
    prefix = "CUB_200_2011/images/" if nested else "images/"
    assert listing.class_names == ["001.Alpha", "002.Beta", "003.Gamma"]
    assert len(listing.train) == 6 and len(listing.test) == 3
    assert listing.test[0].path == prefix + "001.Alpha/Alpha_0000.jpg"
    assert [r.label for r in listing.test] == [0, 1, 2]
    assert Counter(r.label for r in listing.train) == {0: 2, 1: 2, 2: 2}
    assert all((root / r.path).is_file() for r in listing.train + listing.test)


def test_cub_labels_follow_class_id_order_not_file_order(tmp_path, make_cub):
    root = make_cub(tmp_path / "cub")
    lines = (root / "classes.txt").read_text().splitlines()
    (root / "classes.txt").write_text("\n".join(reversed(lines)) + "\n")
    assert read_cub(root).class_names == ["001.Alpha", "002.Beta", "003.Gamma"]


@pytest.mark.parametrize("lists_dir", ["lists", ""])
def test_dogs_reads_official_mat_lists(tmp_path, make_dogs, lists_dir):
    root = make_dogs(tmp_path / "dogs", lists_dir=lists_dir)
    listing = read_dogs(root)
    assert listing.class_names == ["n02085620-Chihuahua", "n02085782-Japanese_spaniel"]
    assert [r.label for r in listing.train] == [0, 0, 1, 1]
    assert listing.test[1].path == "Images/n02085782-Japanese_spaniel/n02085782_2.jpg"
    assert all((root / r.path).is_file() for r in listing.train + listing.test)


def test_folder_sorted_classes_recursive_and_train_subfolder(tmp_path, make_folder, image):
    root = make_folder(tmp_path / "imagenet" / "train", classes=("n02", "n01", "n10"))
    image(root / "n01" / "sub" / "deep.png")
    (root / "n01" / "notes.txt").write_text("not an image")
    image(root / "n01" / ".hidden.png")
    for given, prefix in ((tmp_path / "imagenet", "train/"), (root, "")):
        listing = read_folder(given)
        assert listing.class_names == ["n01", "n02", "n10"]
        paths = [r.path for r in listing.train if r.label == 0]
        assert paths == [
            prefix + p for p in ("n01/n01_0.JPEG", "n01/n01_1.JPEG", "n01/sub/deep.png")
        ]
        assert listing.test == []


def test_aircraft_through_torchvision(tmp_path, make_aircraft):
    root = make_aircraft(tmp_path / "air")
    for given in (root, root / "fgvc-aircraft-2013b"):
        listing = read_aircraft(given)
        assert listing.class_names == ["707-320", "Boeing 717", "A300B4"]
        assert [r.label for r in listing.train] == [0, 0, 1, 1, 2, 2]
        assert [r.label for r in listing.test] == [0, 1, 2]
        assert all((given / r.path).is_file() for r in listing.train + listing.test)
    assert read_aircraft(root).test[0].path == "fgvc-aircraft-2013b/data/images/1000007.jpg"


def test_flowers_through_torchvision_train_plus_val(tmp_path, make_flowers):
    root = make_flowers(tmp_path / "flowers")
    listing = read_flowers(root, verify_checksums=False)
    assert listing.class_names == ["pink primrose", "hard-leaved pocket orchid", "canterbury bells"]
    assert sorted(r.path for r in listing.train) == [
        f"flowers-102/jpg/image_{i:05d}.jpg" for i in (1, 2, 4, 5, 7, 8)
    ]
    assert [(r.path, r.label) for r in listing.test] == [
        (f"flowers-102/jpg/image_{i:05d}.jpg", lab) for i, lab in ((3, 0), (6, 1), (9, 2))
    ]


def test_flowers_checks_official_checksums_by_default(tmp_path, make_flowers):
    root = make_flowers(tmp_path / "flowers")
    with pytest.raises(DataError, match=r"does not match the official MD5.*verify_checksums=False"):
        read_flowers(root)


def test_cars_through_torchvision(tmp_path, make_cars):
    root = make_cars(tmp_path / "cars")
    listing = read_cars(root)
    assert listing.class_names == ["AM General Hummer SUV 2000", "Acura RL Sedan 2012"]
    assert [(r.path, r.label) for r in listing.train[:2]] == [
        ("stanford_cars/cars_train/00001.jpg", 0),
        ("stanford_cars/cars_train/00002.jpg", 1),
    ]
    assert len(listing.test) == 2
    assert all((root / r.path).is_file() for r in listing.train + listing.test)
