"""Stage ``prepare``: the embedded benchmark (when chosen) and the split manifests.

For ``data.target: synthetic`` the benchmark is generated into ``<out>/synthetic`` and the data
roots must point there (the defaults do). On any error the whole output folder is removed, so a
failed prepare leaves nothing half-written.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from metafgnet.data import DataError, generate_synthetic, prepare_manifests
from metafgnet.params import Params


def _check_synthetic_roots(params: Params, out: Path) -> None:
    expected = {"data.target_root": (params.data.target, out / "synthetic" / "target"),
                "data.auxiliary_root": (params.data.auxiliary, out / "synthetic" / "auxiliary")}
    roots = {"data.target_root": params.data.target_root,
             "data.auxiliary_root": params.data.auxiliary_root}
    for key, (kind, path) in expected.items():
        if kind == "synthetic" and Path(roots[key]) != path:
            raise DataError(f"{key} must be {path} when the data is synthetic (got {roots[key]})")


def run_prepare(params: Params, out: Path) -> dict:
    uses_synthetic = "synthetic" in (params.data.target, params.data.auxiliary)
    if uses_synthetic:
        _check_synthetic_roots(params, out)
    try:
        if uses_synthetic:
            generate_synthetic(params.synthetic, out / "synthetic")
        prepared = prepare_manifests(params, out / "manifests")
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    return {"digest": prepared.digest}
