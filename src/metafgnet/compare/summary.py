"""The comparison's results: per arm and level mean ± std over seeds, the paired contrasts with
their intervals and power figures (:mod:`metafgnet.compare.stats`), the cost ratio, a figure,
Markdown.

The contrasts, per condition, each on :data:`CONTRAST_METRICS`:

- the compared factor, ``B − A`` of its two levels, per arm (``difference``);
- the arm contrasts of :data:`ARM_CONTRASTS` within each execution, per level (``contrasts``):
  meta-training against plain fine-tuning and against joint training, the selected
  auxiliary subset against all of it, and against a random subset of its size with the same
  schedule (``metafgnet_selected − metafgnet_random``: the selection criterion's own effect).

Costs are compared only where they were measured alone: a grid point whose record says it
shared the cores (``cores_shared`` true, or ``jobs`` above 1) or does not say is left out of the
cost table, ratio and panel (:func:`measured_alone`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from metafgnet.compare.grid import EVALUATE, SOURCES, Grid, point_threads
from metafgnet.compare.stats import (
    BOOTSTRAP_RESAMPLES,
    MAX_SEEDS,
    describe,
    paired_difference,
    ratio_of_means,
)
from metafgnet.evaluation import ARMS
from metafgnet.io import write_json, write_text
from metafgnet.reporting.plots import plt, save_png_svg
from metafgnet.reporting.summary import META_STAGES

ACCURACY = ("test_top1", "test_mean_class_acc", "val_top1")
CONTRAST_METRICS = ("test_top1", "test_mean_class_acc")
# the arms a meta-training factor changes
META_ARMS = ("metafgnet", "metafgnet_selected", "metafgnet_random")
ARM_CONTRASTS = (("metafgnet", "finetune"), ("metafgnet", "joint"),
                 ("metafgnet_selected", "metafgnet"),
                 ("metafgnet_selected", "metafgnet_random"))  # (first, second): first − second
COST_CAVEAT = ("Only executions recorded as run alone (`--jobs 1`) count here: executions run "
               "side by side share the cores, which confounds their times. Work beside the "
               "grid on the same machine still does; for the cost of a switch see also the "
               "side-by-side measurement of `bench/meta_step.py`.")
COSTS = ("seconds_per_iter", "images_per_s", "peak_memory_mib")


def measured_alone(record: dict) -> bool:
    """Whether a grid point's costs were measured without sharing the cores: its record says
    ``cores_shared: false``, or (without that flag) ``jobs: 1``. A record that says neither
    counts as shared: its times cannot be trusted for a comparison."""
    if "cores_shared" in record:
        return not record["cores_shared"]
    return record.get("jobs") == 1


def arm_contrast_key(first: str, second: str) -> str:
    return f"{first}-{second}"


def summarise(grid: Grid, records: dict[str, dict]) -> dict:
    """``records``: finished experiments by name (:func:`metafgnet.compare.grid.experiments`)."""
    conditions: dict[tuple, dict[str, dict[int, dict]]] = {}
    for point in grid.points():
        level = point.value(grid.factor) if grid.factor else "all"
        by_level = conditions.setdefault(grid.condition(point), {})
        by_level.setdefault(level, {})[int(point.value("seed"))] = records[point.name]
    out = {"factor": grid.factor, "levels": list(grid.levels or ("all",)), "seeds": list(grid.seeds),
           "randomness": randomness(grid, records), "conditions": []}
    for condition, by_level in conditions.items():
        out["conditions"].append(_condition(grid, dict(condition), by_level))
    return out


def randomness(grid: Grid, records: dict[str, dict]) -> dict[str, list[dict]]:
    """Which sources of randomness (:data:`metafgnet.compare.grid.SOURCES`) moved with the
    seed and which were held fixed, with the values the fixed ones had in the grid's points."""
    def values(key: str) -> list:
        found = set()
        for point in grid.points():
            value = records[point.name].get("params") or {}
            for part in key.split("."):
                value = value.get(part) if isinstance(value, dict) else None
            found.add(json.dumps(value))
        return [json.loads(v) for v in sorted(found)]

    return {"varied": [{"source": s, "key": k, "decides": what}
                       for s, (k, what) in SOURCES.items() if s in grid.vary],
            "fixed": [{"source": s, "key": k, "decides": what, "values": values(k)}
                      for s, (k, what) in SOURCES.items() if s not in grid.vary]}


def randomness_note(summary: dict) -> str:
    """One sentence naming what the seeds varied and what they held fixed."""
    varied = summary.get("randomness", {}).get("varied", [])
    fixed = summary.get("randomness", {}).get("fixed", [])
    text = ("Varied from seed to seed: " + "; ".join(f"{v['decides']} (`{v['key']}`)" for v in varied)
            + ".")
    if fixed:
        held = "; ".join(f"{f['decides']} (`{f['key']}` = "
                         f"{', '.join('-' if x is None else str(x) for x in f['values'])})"
                         for f in fixed)
        text += (f" Held fixed: {held}; the intervals say nothing about how results move with "
                 "these (`metafgnet compare --vary seed,split,source` moves them too).")
    return text


def _condition(grid: Grid, condition: dict, by_level: dict[str, dict[int, dict]]) -> dict:
    def arm_values(level: str, arm: str, key: str) -> dict[int, float]:
        return {s: float(r["metrics"][EVALUATE][arm][key]) for s, r in by_level[level].items()}

    def cost_values(level: str, stage: str, key: str) -> list[float]:
        return [float(c) for r in by_level[level].values() if measured_alone(r)
                if (c := ((r["metrics"].get(f"metrics/{stage}.json") or {}).get("cost") or {})
                    .get(key)) is not None]

    levels = grid.levels or ("all",)
    result = {"condition": condition,
              "arms": {arm: {lvl: {k: describe(list(arm_values(lvl, arm, k).values()))
                                   for k in ACCURACY} for lvl in levels} for arm in ARMS},
              "contrasts": {lvl: {arm_contrast_key(first, second): {
                  k: paired_difference(arm_values(lvl, second, k), arm_values(lvl, first, k))
                  for k in CONTRAST_METRICS} for first, second in ARM_CONTRASTS}
                  for lvl in levels},
              "cost": {st: {lvl: {k: describe(cost_values(lvl, st, k)) for k in COSTS}
                            for lvl in levels} for st in META_STAGES},
              "cost_left_out": {lvl: sum(not measured_alone(r) for r in by_level[lvl].values())
                                for lvl in levels}}
    result["threads"] = {lvl: {s: point_threads(r) for s, r in by_level[lvl].items()}
                         for lvl in levels}
    if grid.factor:
        a, b = levels
        # CPU results depend on the thread count: a seed whose two points ran at different
        # counts (a grid resumed with another --jobs) is not paired
        unpaired = sorted(s for s in set(by_level[a]) & set(by_level[b])
                          if point_threads(by_level[a][s]) != point_threads(by_level[b][s]))

        def paired(level: str, arm: str, k: str) -> dict[int, float]:
            return {s: v for s, v in arm_values(level, arm, k).items() if s not in unpaired}

        result["unpaired_seeds"] = unpaired
        result["difference"] = {arm: {k: paired_difference(paired(a, arm, k), paired(b, arm, k))
                                      for k in ACCURACY} for arm in ARMS}
        result["cost_ratio"] = {st: {k: ratio_of_means(cost_values(b, st, k), cost_values(a, st, k))
                                     for k in ("seconds_per_iter", "peak_memory_mib")}
                                for st in META_STAGES}
    return result


def _pm(stats: dict, scale: float = 100.0) -> str:
    if not stats["n"]:
        return "-"
    std = "" if math.isnan(stats["std"]) else f" ± {scale * stats['std']:.2f}"
    return f"{scale * stats['mean']:.2f}{std}"


def _ci(diff: dict) -> str:
    if math.isnan(diff["low"]):
        return f"{100 * diff['mean']:+.2f} (n = {diff['n']}, no interval)"
    return f"{100 * diff['mean']:+.2f} [{100 * diff['low']:+.2f}, {100 * diff['high']:+.2f}]"


def contrast_rows(cond: dict, factor: str | None, levels: list[str]) -> list[tuple[str, dict]]:
    """``(label, {metric: paired difference})`` of every contrast of a condition, in the order
    the table and the figure list them: the factor's, per meta-trained arm, then the arm
    contrasts per level."""
    rows = []
    if factor:
        rows += [(f"{arm}: {factor} {levels[1]} − {levels[0]}", cond["difference"][arm])
                 for arm in META_ARMS]
    for lvl in levels:
        where = f" ({factor}={lvl})" if factor else ""
        rows += [(f"{first} − {second}{where}",
                  cond["contrasts"][lvl][arm_contrast_key(first, second)])
                 for first, second in ARM_CONTRASTS]
    return rows


def _interval(low: float, high: float) -> str:
    return "-" if math.isnan(low) else f"[{100 * low:+.2f}, {100 * high:+.2f}]"


def _seeds(value: float) -> str:
    if math.isnan(value):
        return "-"
    return f"> {MAX_SEEDS}" if math.isinf(value) else str(int(value))


def _contrast_cells(diff: dict) -> list[str]:
    ahead = "-" if not diff["n"] else f"{round(diff['ahead'] * diff['n'])}/{diff['n']}"
    mde = "-" if math.isnan(diff["mde"]) else f"{100 * diff['mde']:.2f}"
    return [f"{100 * diff['mean']:+.2f}", _interval(diff["low"], diff["high"]),
            _interval(diff["boot_low"], diff["boot_high"]), ahead, mde,
            _seeds(diff["seeds_for_one_point"])]


CONTRAST_NOTE = (
    "Each contrast is first − second at the same seed, in accuracy points: the mean paired "
    "difference, its 95 % Student-t interval, its 95 % paired bootstrap interval (percentile, "
    f"{BOOTSTRAP_RESAMPLES} resamples of the seeds, fixed seed; it cannot reach beyond the "
    "observed differences, so with few seeds it is too narrow), and the seeds where the first "
    "is ahead. An interval that contains 0 does not show a difference. *Detectable* is the "
    "smallest true difference a two-sided paired t-test at alpha 0.05 finds with power 0.8 at "
    "this number of seeds and the observed spread of the differences; *seeds for 1 point* is "
    "how many seeds that test needs to find a one-point difference at that spread (both from "
    "the noncentral t distribution, taking the observed spread as the true one; - where the "
    "differences do not vary).")


def markdown(summary: dict, command: str) -> str:
    factor, levels = summary["factor"], summary["levels"]
    lines = ["# Comparison over seeds", "",
             f"`{command}`; seeds {', '.join(map(str, summary['seeds']))}. Accuracies in %, mean "
             "± sample standard deviation over seeds.", "", randomness_note(summary)]
    if factor:
        lines += ["", f"The effect of `{factor}` is the paired difference {levels[1]} − "
                  f"{levels[0]} at the same seed, with a 95 % Student-t confidence interval "
                  "over the seeds (an interval that contains 0 does not show a difference)."]
    for cond in summary["conditions"]:
        title = ", ".join(f"{k}={v}" for k, v in cond["condition"].items()) or "all runs"
        lines += ["", f"## {title}", ""]
        for key in ACCURACY:
            head = [f"{factor}={lvl}" if factor else "mean ± std" for lvl in levels]
            cols = head + ([f"{levels[1]} − {levels[0]} [95 % CI]"] if factor else []) + ["n"]
            lines += [f"**{key}**", "", "| arm | " + " | ".join(cols) + " |",
                      "|---|" + "---:|" * len(cols)]
            for arm in ARMS:
                cells = [_pm(cond["arms"][arm][lvl][key]) for lvl in levels]
                if factor:
                    cells.append(_ci(cond["difference"][arm][key]))
                cells.append(str(min(cond["arms"][arm][lvl][key]["n"] for lvl in levels)))
                lines.append(f"| {arm} | " + " | ".join(cells) + " |")
            lines.append("")
        lines += ["**paired contrasts** (accuracy points)", "",
                  "| contrast | metric | mean | 95 % t interval | 95 % bootstrap interval | "
                  "first ahead | detectable | seeds for 1 point |",
                  "|---|---|" + "---:|" * 6]
        for label, per_metric in contrast_rows(cond, factor, levels):
            for key in CONTRAST_METRICS:
                lines.append(f"| {label} | {key} | "
                             + " | ".join(_contrast_cells(per_metric[key])) + " |")
        lines += ["", CONTRAST_NOTE, ""]
        left_out = cond.get("cost_left_out", {})
        lines += ["**meta-training cost** (median per run, mean ± std over the seeds measured "
                  "alone; left out as run beside others or not recorded: "
                  + ", ".join(f"{lvl} {left_out.get(lvl, 0)}" for lvl in levels) + ")", "",
                  "| stage | " + " | ".join(f"{lvl}: s/iter, MiB" for lvl in levels)
                  + (f" | {levels[1]} / {levels[0]}: time, memory" if factor else "") + " |",
                  "|---|" + "---:|" * (len(levels) + bool(factor))]
        for stage, per in cond["cost"].items():
            cells = [f"{_pm(per[lvl]['seconds_per_iter'], 1):s}, "
                     f"{_pm(per[lvl]['peak_memory_mib'], 1)}" for lvl in levels]
            if factor:
                r = cond["cost_ratio"][stage]
                cells.append(", ".join("-" if math.isnan(r[k]) else f"{r[k]:.2f}x"
                                       for k in ("seconds_per_iter", "peak_memory_mib")))
            lines.append(f"| {stage} | " + " | ".join(cells) + " |")
        lines += ["", COST_CAVEAT, "", threads_note(cond)]
    lines += ["", "![paired contrasts with their intervals, and cost per level](compare.png)"]
    return "\n".join(lines) + "\n"


def threads_note(cond: dict) -> str:
    """The thread counts the condition's points ran at, and the seeds left unpaired for it."""
    counts = sorted({t for per in cond["threads"].values() for t in per.values()},
                    key=lambda t: (t is None, t or 0))
    note = ("Threads per point (`runtime.num_threads`): "
            + ", ".join("not recorded" if t is None else str(t) for t in counts) + ".")
    if cond.get("unpaired_seeds"):
        note += (" Not paired (each listed seed's two points ran at different thread counts, so "
                 "their results differ by more than the factor): seeds "
                 + ", ".join(map(str, cond["unpaired_seeds"])) + ".")
    return note


def _contrast_panel(ax, rows: list[tuple[str, dict]], key: str) -> None:
    """One row per contrast: the mean, its t interval (thin) and bootstrap interval (thick)."""
    for y, (_, per_metric) in enumerate(rows):
        d = per_metric[key]
        ax.plot([100 * d["low"], 100 * d["high"]], [y, y], color="C0", lw=1.2,
                label="95 % t" if y == 0 else None)
        ax.plot([100 * d["boot_low"], 100 * d["boot_high"]], [y, y], color="C1", lw=4,
                alpha=0.6, label="95 % bootstrap" if y == 0 else None)
        ax.plot([100 * d["mean"]], [y], "o", color="k", ms=4)
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_yticks(range(len(rows)), [label for label, _ in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(f"{key}: first − second (points)")
    ax.grid(alpha=0.3, axis="x")


def figure(summary: dict, out: Path) -> list[Path]:
    """Per condition: the paired contrasts with their intervals on each of
    :data:`CONTRAST_METRICS` (one row per contrast), and the meta-training cost per stage and
    level from the executions measured alone (:func:`measured_alone`)."""
    conds, levels, factor = summary["conditions"], summary["levels"], summary["factor"]
    rows_per = [len(contrast_rows(c, factor, levels)) for c in conds]
    fig, axes = plt.subplots(len(conds), len(CONTRAST_METRICS) + 1,
                             figsize=(15, sum(0.32 * n + 1.6 for n in rows_per)), squeeze=False,
                             gridspec_kw={"width_ratios": [1.4] * len(CONTRAST_METRICS) + [1]})
    width = 0.8 / len(levels)
    for row, cond in zip(axes, conds, strict=True):
        title = ", ".join(f"{k}={v}" for k, v in cond["condition"].items())
        rows = contrast_rows(cond, factor, levels)
        for ax, key in zip(row, CONTRAST_METRICS, strict=False):
            _contrast_panel(ax, rows, key)
            ax.set_title(f"paired contrasts {title}".strip(), fontsize=9)
            if ax is not row[0]:
                ax.set_yticklabels([])
        row[0].legend(fontsize=7)
        cost_ax = row[-1]
        drawn = False
        for i, lvl in enumerate(levels):
            cost = [cond["cost"][st][lvl]["seconds_per_iter"] for st in META_STAGES]
            if not any(c["n"] for c in cost):
                continue
            drawn = True
            cost_ax.bar([j + i * width for j in range(len(META_STAGES))],
                        [c["mean"] if c["n"] else 0 for c in cost], width,
                        yerr=[0 if math.isnan(c["std"]) else c["std"] for c in cost], capsize=3,
                        label=f"{factor}={lvl}" if factor else lvl)
        if drawn:
            cost_ax.legend(fontsize=7)
        else:
            cost_ax.text(0.5, 0.5, "no execution measured alone\n(run with --jobs 1)",
                         ha="center", va="center", transform=cost_ax.transAxes, fontsize=8)
        cost_ax.set_xticks([j + width * (len(levels) - 1) / 2 for j in range(len(META_STAGES))],
                           META_STAGES, fontsize=8, rotation=12, ha="right")
        cost_ax.set_ylabel("s / meta-iteration")
        cost_ax.set_title("meta-training cost, executions run alone", fontsize=9)
        cost_ax.grid(alpha=0.3, axis="y")
    return save_png_svg(fig, out)


def write(summary: dict, out: Path, command: str) -> str:
    text = markdown(summary, command)
    write_json(out / "compare.json", summary)
    write_text(out / "summary.md", text)
    figure(summary, out / "compare")
    return text
