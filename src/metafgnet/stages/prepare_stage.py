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
    for name, kind, root in (("target", params.data.target, params.data.target_root),
                             ("auxiliary", params.data.auxiliary, params.data.auxiliary_root)):
        path = out / "synthetic" / name
        if kind == "synthetic" and Path(root) != path:
            raise DataError(f"data.{name}_root must be {path} when the data is synthetic "
                            f"(got {root})")


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
