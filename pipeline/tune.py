"""Stage `tune` (opt-in): hyper-parameter search, guarded by `tune.enabled`.

Why guarded: a plain `dvc repro` reproduces every stage of `dvc.yaml`, and a frozen stage whose
outputs are missing fails it ("missing data"), so an opt-in stage cannot simply be frozen. With
`tune.enabled: false` (the default) this stage runs no trial, opens no study and no tracking
run: it only writes `results/tune/best_params.yaml` holding the CURRENT values of the search
space keys (applying it changes nothing) and a summary saying tuning is off, in well under a
second. No other stage depends on it, so the default pipeline never waits for a search.

To tune: set `tune.enabled: true` and run `dvc repro tune` (or run `metafgnet tune` directly, the
same code, with `--workers` / `--n-trials` overrides). The study lives in `tune.storage`
(default `<repo root>/optuna.db`, git-ignored like `mlflow.db`): it is state that persists and
resumes across runs, not a stage output, so it is not declared in `outs`. Consume the result
with `metafgnet tune apply` (merges `results/tune/best_params.yaml` into `params.yaml`; then
`dvc params diff` shows the tuned values and `dvc repro` retrains what they change).
"""

import argparse
import logging
from pathlib import Path

from metafgnet.stages.shell import stage_shell
from metafgnet.tuning.space import SECTIONS

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("results/tune"))
    parser.add_argument("--data", type=Path, required=True, help="prepared manifests folder")
    parser.add_argument("--init", type=Path, default=Path("models/pretrain/model.pt"))
    args = parser.parse_args()
    with stage_shell("tune", SECTIONS) as params:
        if params.tune.enabled:
            from metafgnet.tuning.run import run_tune

            run_tune(params, out=args.out, data_dir=args.data, init=args.init)
        else:
            from metafgnet.tuning.report import write_untuned

            write_untuned(params, args.out)
            logging.getLogger("metafgnet").info(
                "tune.enabled is false: wrote the current values to %s/best_params.yaml; set "
                "tune.enabled: true and `dvc repro tune` to search", args.out)
