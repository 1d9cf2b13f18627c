"""The ``metafgnet`` command: params checks, presets, the synthetic benchmark, tuning, comparisons over seeds."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from metafgnet.compare import cli as compare_cli
from metafgnet.errors import EXIT_CODE, UserError
from metafgnet.params import load_params, to_dict
from metafgnet.tuning import cli as tuning_cli


def _params_check(args: argparse.Namespace) -> int:
    params = load_params(args.file)
    print(f"{args.file}: ok ({params.data.target} target, meta.order={params.meta.order})")
    return 0


def _check(args: argparse.Namespace) -> int:
    from metafgnet.preflight import problems, warnings

    for warning in warnings(args.params):
        print(f"warning: {warning}", file=sys.stderr)
    found = problems(args.params)
    if not found:
        print(f"{args.params}: ready to run (params, device, data, weights, disk)")
        return 0
    print(f"{len(found)} problem(s) before any stage runs:", file=sys.stderr)
    for problem in found:
        print(f"  - {problem}", file=sys.stderr)
    return 2


def _params_show(args: argparse.Namespace) -> int:
    import yaml

    print(yaml.safe_dump(to_dict(load_params(args.file)), sort_keys=False), end="")
    return 0


def _preset_list(args: argparse.Namespace) -> int:
    from metafgnet.presets import preset_names, preset_path

    for name in preset_names():
        first = preset_path(name).read_text().splitlines()[0].lstrip("# ")
        print(f"{name:16s} {first}")
    return 0


def _preset_apply(args: argparse.Namespace) -> int:
    from metafgnet.presets import apply_preset

    kept = apply_preset(args.name, args.output, force=args.force)
    how = "updated in place, comments kept" if kept else "written whole"
    print(f"wrote {args.output} from preset {args.name} ({how}); "
          f"run `dvc repro` (or `make run`)")
    return 0


def _generate(args: argparse.Namespace) -> int:
    from metafgnet.data import generate_synthetic

    params = load_params(args.params)
    generate_synthetic(params.synthetic, Path(args.out))
    print(f"synthetic benchmark written to {args.out}")
    return 0


def _plots(args: argparse.Namespace) -> int:
    from metafgnet.reporting.dvc_plots import render

    page = render(args.revs, Path(args.out))
    print(f"wrote {page} (offline: no network needed to view it)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="metafgnet", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    params = sub.add_parser("params", help="validate or show a params file").add_subparsers(
        dest="action", required=True)
    check = params.add_parser("check", help="validate a params file; non-zero exit on error")
    check.add_argument("file", nargs="?", default="params.yaml")
    check.set_defaults(func=_params_check)
    show = params.add_parser("show", help="print the resolved params (defaults filled in)")
    show.add_argument("file", nargs="?", default="params.yaml")
    show.set_defaults(func=_params_show)

    check_all = sub.add_parser("check", help="every problem a run would meet (params, device, "
                                             "data, weights, disk), before it starts")
    check_all.add_argument("--params", default="params.yaml")
    check_all.set_defaults(func=_check)
    preset = sub.add_parser("preset", help="the paper's settings").add_subparsers(
        dest="action", required=True)
    preset.add_parser("list", help="list presets").set_defaults(func=_preset_list)
    apply = preset.add_parser("apply", help="write params.yaml from a preset (its comments "
                                            "and key order kept)")
    apply.add_argument("name")
    apply.add_argument("--output", default="params.yaml")
    apply.add_argument("--force", action="store_true",
                       help="overwrite uncommitted edits of the output file")
    apply.set_defaults(func=_preset_apply)

    gen = sub.add_parser("generate", help="write the synthetic benchmark to a folder")
    gen.add_argument("--params", default="params.yaml")
    gen.add_argument("--out", required=True)
    gen.set_defaults(func=_generate)

    plots = sub.add_parser("plots", help="DVC's plots as an offline HTML page (`dvc plots show`"
                                         " with no REV, `dvc plots diff REV...` otherwise)")
    plots.add_argument("revs", nargs="*", metavar="REV")
    plots.add_argument("--out", default="dvc_plots_offline")
    plots.set_defaults(func=_plots)

    compare_cli.register(sub)
    tuning_cli.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UserError as exc:  # the message names the problem and its fix: no traceback
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CODE


if __name__ == "__main__":
    sys.exit(main())
