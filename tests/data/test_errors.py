"""Every bad input gives a specific DataError, and a failed prepare writes nothing."""

from __future__ import annotations

import json
import shutil

import pytest
from PIL import Image

from metafgnet.data import (
    DataError,
    ImageDataset,
    prepare_manifests,
    read_aircraft,
    read_cars,
    read_cub,
    read_dogs,
    read_flowers,
    read_folder,
)


def test_missing_root_says_what_is_expected_and_where_it_comes_from(tmp_path):
    with pytest.raises(
        DataError,
        match=r"dataset root .*nope does not exist; expected a folder "
        r"containing images.txt, classes.txt.*vision.caltech.edu/datasets/cub_200_2011",
    ):
        read_cub(tmp_path / "nope")
    with pytest.raises(
        DataError,
        match=r"Stanford Dogs: .* does not exist.*Images/<breed>/\*.jpg"
        r".*ImageNetDogs",
    ):
        read_dogs(tmp_path / "nope")
    with pytest.raises(DataError, match=r"does not exist.*one sub-folder per class.*image-net.org"):
        read_folder(tmp_path / "nope")
    with pytest.raises(DataError, match=r"FGVC-Aircraft: .*does not exist.*fgvc-aircraft-2013b"):
        read_aircraft(tmp_path / "nope")
    with pytest.raises(DataError, match=r"Flowers-102: .*does not exist.*102flowers.tgz"):
        read_flowers(tmp_path / "nope")
    with pytest.raises(DataError, match=r"Stanford Cars: .*does not exist.*cars_meta.mat"):
        read_cars(tmp_path / "nope")


def test_torchvision_sets_with_an_empty_root(tmp_path):
    with pytest.raises(
        DataError,
        match=r"FGVC-Aircraft: dataset not found under .*; expected "
        r"fgvc-aircraft-2013b/data/\{variants.txt",
    ):
        read_aircraft(tmp_path)
    with pytest.raises(
        DataError,
        match=r"Stanford Cars: dataset not found under .*; expected "
        r"stanford_cars/\{devkit/cars_meta.mat",
    ):
        read_cars(tmp_path)
    with pytest.raises(DataError, match=r"Flowers-102: jpg, imagelabels.mat, setid.mat missing in"):
        read_flowers(tmp_path)


def test_aircraft_label_not_in_variants(tmp_path, make_aircraft):
    root = make_aircraft(tmp_path / "air")
    (root / "fgvc-aircraft-2013b/data/variants.txt").write_text("707-320\nBoeing 717\n")
    with pytest.raises(DataError, match=r"FGVC-Aircraft: unreadable metadata under .*A300B4"):
        read_aircraft(root)


def test_synthetic_root_missing_points_at_the_generator(tmp_path, params_for):
    params = params_for(tmp_path / "gone" / "target", tmp_path / "gone" / "auxiliary")
    with pytest.raises(DataError, match=r"synthetic target .*does not exist.*generate_synthetic"):
        prepare_manifests(params, tmp_path / "prep")


def test_root_given_as_a_file(tmp_path):
    (tmp_path / "images.txt").write_text("1 a/b.jpg\n")
    with pytest.raises(DataError, match=r"images.txt is a file, expected a folder"):
        read_cub(tmp_path / "images.txt")
    with pytest.raises(DataError, match=r"is a file, expected a folder"):
        read_folder(tmp_path / "images.txt")


def test_root_without_images_txt(tmp_path):
    (tmp_path / "cub").mkdir()
    with pytest.raises(DataError, match=r"no images.txt in .*cub or .*cub/CUB_200_2011"):
        read_cub(tmp_path / "cub")


@pytest.mark.parametrize("name", ["classes.txt", "image_class_labels.txt", "train_test_split.txt"])
def test_missing_metadata_file_is_named(tmp_path, make_cub, name):
    root = make_cub(tmp_path / "cub")
    (root / name).unlink()
    with pytest.raises(DataError, match=rf"metadata file .*{name} is missing"):
        read_cub(root)


def test_image_id_without_label_names_file_and_id(tmp_path, make_cub):
    root = make_cub(tmp_path / "cub")
    labels = root / "image_class_labels.txt"
    labels.write_text(
        "\n".join(line for line in labels.read_text().splitlines() if not line.startswith("4 "))
        + "\n"
    )
    with pytest.raises(
        DataError,
        match=r"image id 4 of images.txt has no line in "
        r".*image_class_labels.txt \(1 ids missing: 4\)",
    ):
        read_cub(root)


def test_extra_id_unknown_class_bad_split_and_malformed_line(tmp_path, make_cub):
    root = make_cub(tmp_path / "cub")
    split = root / "train_test_split.txt"
    original = split.read_text()
    split.write_text(original + "99 1\n")
    with pytest.raises(
        DataError, match=r"train_test_split.txt lists image id 99, which is not in images.txt"
    ):
        read_cub(root)
    split.write_text(original.replace("2 1\n", "2 7\n"))
    with pytest.raises(DataError, match=r"image id 2 has split '7'; expected 1 \(train\) or 0"):
        read_cub(root)
    split.write_text(original)
    labels = root / "image_class_labels.txt"
    labels.write_text(labels.read_text().replace("5 2\n", "5 9\n"))
    with pytest.raises(
        DataError, match=r"image id 5 has class id '9', which is not in classes.txt"
    ):
        read_cub(root)
    (root / "classes.txt").write_text("1 001.Alpha\nbroken\n")
    with pytest.raises(
        DataError, match=r"classes.txt line 2: expected '<id> <value>', got 'broken'"
    ):
        read_cub(root)
    (root / "classes.txt").write_text("1 001.Alpha\n1 002.Beta\n")
    with pytest.raises(DataError, match=r"classes.txt line 2: duplicate id 1"):
        read_cub(root)


def test_class_count_mismatch(tmp_path, make_cub, make_folder, params_for):
    cub, aux = make_cub(tmp_path / "cub"), make_folder(tmp_path / "aux")
    params = params_for(cub, aux, target="cub", auxiliary="folder", num_target_classes=200)
    with pytest.raises(
        DataError,
        match=r"data.num_target_classes is 200 but the cub dataset at "
        r".* has 3 classes; fix the dataset or set data.num_target_classes to 3",
    ):
        prepare_manifests(params, tmp_path / "prep")
    params = params_for(cub, aux, target="cub", auxiliary="folder", num_auxiliary_classes=1000)
    with pytest.raises(DataError, match=r"data.num_auxiliary_classes is 1000 but .* has 3 classes"):
        prepare_manifests(params, tmp_path / "prep")
    assert not (tmp_path / "prep").exists()


def test_empty_class_folder_is_named(tmp_path, make_folder):
    root = make_folder(tmp_path / "aux")
    (root / "n04_empty").mkdir()
    (root / "n04_empty" / "readme.txt").write_text("no images")
    with pytest.raises(DataError, match=r"class folder .*n04_empty holds no images"):
        read_folder(root)
    (tmp_path / "bare").mkdir()
    with pytest.raises(DataError, match=r"no class folders in .*bare"):
        read_folder(tmp_path / "bare")


def test_dogs_missing_list_and_inconsistent_labels(tmp_path, make_dogs):
    root = make_dogs(tmp_path / "dogs")
    (root / "lists" / "test_list.mat").unlink()
    with pytest.raises(DataError, match=r"split list test_list.mat not found in .*lists or"):
        read_dogs(root)
    root = make_dogs(tmp_path / "dogs2", breeds=("n1-A", "n2-B"))
    shutil.copy(root / "lists" / "train_list.mat", root / "lists" / "test_list.mat")
    (root / "lists" / "train_list.mat").write_bytes(b"not a mat file")
    with pytest.raises(DataError, match=r"train_list.mat is not a readable MATLAB file"):
        read_dogs(root)


def _cub_with_bad_images(tmp_path, make_cub, make_folder):
    cub = make_cub(tmp_path / "cub", per_class=4)
    (cub / "images/002.Beta/Beta_0001.jpg").write_bytes(b"\xff\xd8 definitely not a jpeg")
    png = cub / "images/003.Gamma/Gamma_0002.jpg"
    png.write_bytes(png.read_bytes()[:120])  # truncated
    (cub / "images/001.Alpha/Alpha_0003.jpg").unlink()  # listed in images.txt, missing
    return cub, make_folder(tmp_path / "aux")


def test_corrupt_truncated_and_missing_images_fail_by_default(
    tmp_path, make_cub, make_folder, params_for
):
    cub, aux = _cub_with_bad_images(tmp_path, make_cub, make_folder)
    params = params_for(cub, aux, target="cub", auxiliary="folder")
    with pytest.raises(DataError) as err:
        prepare_manifests(params, tmp_path / "prep")
    msg = str(err.value)
    assert "target dataset at" in msg and "3 of 12 images are missing or unreadable" in msg
    assert "images/001.Alpha/Alpha_0003.jpg (missing)" in msg
    assert "images/002.Beta/Beta_0001.jpg (unreadable (" in msg
    assert "images/003.Gamma/Gamma_0002.jpg (unreadable (" in msg
    assert "set data.on_corrupt: skip" in msg and str(tmp_path) not in msg.split(": ", 1)[1]
    assert not (tmp_path / "prep").exists()


def test_skip_counts_skipped_images_and_fails_above_threshold(
    tmp_path, make_cub, make_folder, params_for
):
    cub, aux = _cub_with_bad_images(tmp_path, make_cub, make_folder)
    params = params_for(
        cub, aux, target="cub", auxiliary="folder", on_corrupt="skip", max_skipped_fraction=0.1
    )
    with pytest.raises(
        DataError,
        match=r"3 of 12 images are missing or unreadable \(25.00%\), "
        r"more than data.max_skipped_fraction = 0.1",
    ):
        prepare_manifests(params, tmp_path / "prep")
    params = params_for(
        cub, aux, target="cub", auxiliary="folder", on_corrupt="skip", max_skipped_fraction=0.3
    )
    prepared = prepare_manifests(params, tmp_path / "prep")
    index = json.loads((tmp_path / "prep" / "index.json").read_text())
    assert index["skipped_count"] == prepared.skipped_count == 3
    assert [s["path"] for s in index["skipped"]] == [
        "images/001.Alpha/Alpha_0003.jpg",
        "images/002.Beta/Beta_0001.jpg",
        "images/003.Gamma/Gamma_0002.jpg",
    ]
    assert len(prepared.train) + len(prepared.val) + len(prepared.test) == 9


def test_non_rgb_images_are_converted_not_rejected(
    tmp_path, make_cub, make_folder, image, params_for
):
    cub = make_cub(tmp_path / "cub")
    image(cub / "images" / "001.Alpha/Alpha_0001.jpg", mode="L")
    image(cub / "images" / "002.Beta/Beta_0001.jpg", mode="CMYK")
    aux = make_folder(tmp_path / "aux", ext=".png")
    image(aux / "n01" / "n01_0.png", mode="RGBA")
    image(aux / "n02" / "n02_0.png", mode="LA")
    image(aux / "n03" / "n03_0.png", mode="P")
    with Image.open(aux / "n03" / "n03_0.png") as im:  # palette with a transparent index
        im.save(aux / "n03" / "n03_1.png", transparency=0)
    with Image.open(aux / "n03" / "n03_1.png") as im:
        assert im.mode == "P" and "transparency" in im.info
    params = params_for(cub, aux, target="cub", auxiliary="folder")
    prepared = prepare_manifests(params, tmp_path / "prep")
    for split in ("train", "val", "auxiliary"):
        dataset = ImageDataset(prepared.records(split), prepared.root(split))
        assert all(dataset[i][0].shape == (3, 8, 8) for i in range(len(dataset)))


def test_failed_prepare_leaves_previous_output_untouched(tmp_path, small_synthetic, params_for):
    good = params_for(small_synthetic / "target", small_synthetic / "auxiliary")
    prepare_manifests(good, tmp_path / "prep")
    before = {p.name: p.read_bytes() for p in (tmp_path / "prep").iterdir()}
    bad = params_for(
        small_synthetic / "target", small_synthetic / "auxiliary", num_target_classes=7
    )
    with pytest.raises(DataError, match="num_target_classes is 7"):
        prepare_manifests(bad, tmp_path / "prep")
    assert {p.name: p.read_bytes() for p in (tmp_path / "prep").iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prep"]


def test_prepare_refuses_a_folder_it_does_not_own(tmp_path, small_synthetic, params_for):
    (tmp_path / "prep").mkdir()
    (tmp_path / "prep" / "model.pt").write_bytes(b"")
    params = params_for(small_synthetic / "target", small_synthetic / "auxiliary")
    with pytest.raises(DataError, match=r"refusing to replace .*prep: it holds model.pt"):
        prepare_manifests(params, tmp_path / "prep")
    with pytest.raises(DataError, match=r"output .*model.pt is a file, expected a folder"):
        prepare_manifests(params, tmp_path / "prep" / "model.pt")
