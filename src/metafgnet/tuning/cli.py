"""``metafgnet tune``: run or resume the study; ``metafgnet tune apply``: use its result.

Examples::

    metafgnet tune --n-trials 8                 # resume-or-create the study of params.yaml
    metafgnet tune --workers 2                  # two worker processes on this machine
    metafgnet tune --storage postgresql://u:pw@db/optuna --worker-id gpu-3   # one of many
    metafgnet tune apply                        # merge the newest best_params.yaml
    metafgnet tune dashboard                    # optuna-dashboard on the study storage

The command writes to ``results/tune-cli/``, never into ``results/tune/`` (the DVC stage
``tune``'s output, which ``dvc repro`` replaces). ``tune apply`` takes the newer of the two
``best_params.yaml``, or ``--best``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from metafgnet.errors import UserError
from metafgnet.params import load_params

CLI_OUT = Path("results/tune-cli")
STAGE_OUT = Path("results/tune")  # the `tune` stage's DVC output: the command never writes it


def _tune(args: argparse.Namespace) -> int:
    from metafgnet.tuning.run import report_only, run_tune, with_overrides
    from metafgnet.tuning.study import StudyMismatch

    if Path(args.out).resolve() == STAGE_OUT.resolve():
        raise UserError(f"--out {args.out} is the DVC stage `tune`'s output (dvc repro replaces "
                        f"it); choose another folder (default {CLI_OUT})")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", force=True)
    params = with_overrides(load_params(args.params), n_trials=args.n_trials,
                            workers=args.workers, storage=args.storage,
                            study_name=args.study_name, timeout=args.timeout)
    try:
        if args.report_only:
            summary = report_only(params, Path(args.out))
        else:
            summary = run_tune(params, out=Path(args.out), data_dir=Path(args.data),
                               init=Path(args.init), worker_id=args.worker_id,
                               fail_running_first=args.fail_running)
    except (StudyMismatch, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    best = summary["best"]
    print(f"best trial {best['number']}: validation top-1 {best['value']:.4f} "
          f"({', '.join(f'{k}={v:.4g}' if isinstance(v, float) else f'{k}={v}' for k, v in best['params'].items())})")
    print(f"wrote {args.out}/best_params.yaml; apply it with `metafgnet tune apply`")
    return 0


def _apply(args: argparse.Namespace) -> int:
    from metafgnet.tuning.apply import apply_best

    if args.best:
        best = Path(args.best)
    else:  # the newer of the command's and the stage's
        found = [d / "best_params.yaml" for d in (CLI_OUT, STAGE_OUT)
                 if (d / "best_params.yaml").is_file()]
        if not found:
            raise UserError(f"no best_params.yaml in {CLI_OUT} or {STAGE_OUT}: run "
                            "`metafgnet tune` (or `dvc repro tune`) first")
        best = max(found, key=lambda p: p.stat().st_mtime_ns)
    print(f"applying {best}")
    changed = apply_best(best, args.params_file)
    for key, (old, new) in changed.items():
        print(f"{key}: {old} -> {new}")
    print(f"{args.params_file}: {len(changed)} value(s) changed"
          + ("; `dvc params diff` shows them, `dvc repro` retrains" if changed else ""))
    return 0


def _dashboard(args: argparse.Namespace) -> int:
    """Serve the study storage with ``optuna-dashboard`` (replaces this process)."""
    import os
    import shutil

    from metafgnet.tuning.storage import JOURNAL_PREFIX, resolve_url

    url = resolve_url(args.storage if args.storage is not None
                      else load_params(args.params_file).tune.storage)
    target = url.removeprefix(JOURNAL_PREFIX)  # the dashboard reads a journal file by its path
    exe = shutil.which("optuna-dashboard") or str(Path(sys.executable).with_name("optuna-dashboard"))
    print(f"optuna-dashboard on http://{args.host}:{args.port} for {target}", flush=True)
    os.execv(exe, [exe, target, "--host", args.host, "--port", str(args.port)])
    return 0  # not reached


def register(sub) -> None:
    """Add ``tune`` (and ``tune apply``) to the ``metafgnet`` command's subparsers."""
    p = sub.add_parser("tune", help="hyper-parameter search with Optuna (resumable, parallel)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--workers", type=int, help="worker processes (default tune.workers)")
    p.add_argument("--n-trials", type=int, help="COMPLETE + PRUNED trials in the study, in all")
    p.add_argument("--storage", help="database URL or journal:<path> (default tune.storage)")
    p.add_argument("--study-name", help="default tune.study_name")
    p.add_argument("--timeout", type=int, help="seconds before no new trial starts")
    p.add_argument("--worker-id", help="distinct id per separately started process (seeds the "
                   "sampler; default: its index)")
    p.add_argument("--out", default=str(CLI_OUT))
    p.add_argument("--data", default="data/prepared/manifests",
                   help="prepared manifests (default: %(default)s, what `prepare` writes)")
    p.add_argument("--init", default="models/pretrain/model.pt")
    p.add_argument("--fail-running", action="store_true",
                   help="first mark RUNNING trials FAIL (journal storage after a killed worker; "
                        "only when no worker is running)")
    p.add_argument("--report-only", action="store_true",
                   help="rewrite the outputs from the stored study, run no trial")
    p.set_defaults(func=_tune)
    actions = p.add_subparsers(dest="tune_action", metavar="{apply,dashboard}")
    apply = actions.add_parser("apply", help="merge best_params.yaml into params.yaml")
    apply.add_argument("--best", help=f"default: the newer of {CLI_OUT}/best_params.yaml and "
                                      f"{STAGE_OUT}/best_params.yaml")
    apply.add_argument("--params", dest="params_file", default="params.yaml")
    apply.set_defaults(func=_apply)
    dash = actions.add_parser("dashboard", help="serve the study with optuna-dashboard")
    dash.add_argument("--params", dest="params_file", default="params.yaml")
    dash.add_argument("--storage", help="default: tune.storage of the params file")
    dash.add_argument("--host", default="127.0.0.1")
    dash.add_argument("--port", type=int, default=8080)
    dash.set_defaults(func=_dashboard)

