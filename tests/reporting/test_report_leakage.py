"""The report's leakage section says what ``prepare`` found and whether the copies were kept."""

from metafgnet.reporting.report import _leakage


def _counts(dropped: int) -> dict:
    return {"train": {"exact": 1, "near": 0}, "val": {"exact": 0, "near": 2},
            "test": {"exact": 3, "near": 1}, "auxiliary_images": 6, "max_distance": 6,
            "dropped": dropped}


def test_report_gives_counts_per_split_and_says_the_copies_were_kept():
    text = "\n".join(_leakage(_counts(0), drop=False))
    assert "| train | 1 | 0 |" in text and "| val | 0 | 2 |" in text
    assert "| test | 3 | 1 |" in text
    assert "6 auxiliary images copy a target image" in text and "within 6 bits" in text
    assert "kept in the auxiliary set, as in the paper (`data.leakage.drop: false`)" in text


def test_report_says_when_the_copies_were_dropped():
    text = "\n".join(_leakage(_counts(6), drop=True))
    assert "dropped from the auxiliary set (6 images, `data.leakage.drop: true`)" in text
    assert "kept" not in text
