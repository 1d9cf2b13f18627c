"""Fixtures that WRITE small datasets in the real on-disk formats (tiny images, real .mat files).

Each ``make_*`` fixture returns a builder ``f(root, ...) -> root`` so a test can damage the
result afterwards. The small synthetic benchmark is generated once per session.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from metafgnet.data import generate_synthetic
from metafgnet.params import SyntheticParams, parse_params
from support.datasets import (  # noqa: F401  (re-exported for the data tests)
    SMALL_SYNTHETIC,
    build_aircraft,
    build_cars,
    build_cub,
    build_dogs,
    build_flowers,
    build_folder,
    write_image,
)


@pytest.fixture
def make_cub():
    return build_cub


@pytest.fixture
def make_dogs():
    return build_dogs


@pytest.fixture
def make_folder():
    return build_folder


@pytest.fixture
def make_aircraft():
    return build_aircraft


@pytest.fixture
def make_flowers():
    return build_flowers


@pytest.fixture
def make_cars():
    return build_cars


@pytest.fixture
def image():
    return write_image


@pytest.fixture(scope="session")
def small_synthetic(tmp_path_factory) -> Path:
    """A small synthetic benchmark (3 target classes, 4 auxiliary), generated once. Read-only."""
    out = tmp_path_factory.mktemp("synthetic") / "bench"
    generate_synthetic(SyntheticParams(**SMALL_SYNTHETIC), out)
    return out


@pytest.fixture
def params_for():
    """``params_for(target_root, auxiliary_root, **data_overrides)`` -> Params."""

    def build(target_root, auxiliary_root, seed: int = 0, **data):
        return parse_params(
            {
                "seed": seed,
                "data": {
                    "target_root": str(target_root),
                    "auxiliary_root": str(auxiliary_root),
                    **data,
                },
            }
        )

    return build
