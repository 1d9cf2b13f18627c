"""The comparison's results: per arm and level mean ± std over seeds, the paired difference with
its confidence interval (:mod:`metafgnet.compare.stats`), the cost ratio, a figure, Markdown."""

from __future__ import annotations

import math
from pathlib import Path

from metafgnet.compare.grid import EVALUATE, Grid
from metafgnet.compare.stats import describe, paired_difference, ratio_of_means
from metafgnet.evaluation import ARMS
from metafgnet.io import write_json, write_text
from metafgnet.reporting.plots import plt, save_figure
from metafgnet.reporting.summary import META_STAGES

ACCURACY = ("test_top1", "val_top1")
COST_CAVEAT = ("Times are as each execution ran: executions run side by side (`--jobs` above 1) "
               "or beside other work share the cores, which confounds them. For the cost of a "
               "switch, compare executions run one at a time on a quiet machine "
               "(`--jobs 1`), or the side-by-side measurement of `bench/meta_step.py`.")
COSTS = ("seconds_per_iter", "images_per_s", "peak_memory_mib")


def _levels(grid: Grid) -> tuple[str, ...]:
    return grid.levels or ("all",)


def summarise(grid: Grid, records: dict[str, dict]) -> dict:
    """``records``: finished experiments by name (:func:`metafgnet.compare.grid.experiments`)."""
    conditions: dict[tuple, dict[str, dict[int, dict]]] = {}
    for point in grid.points():
        level = point.value(grid.factor) if grid.factor else "all"
        by_level = conditions.setdefault(grid.condition(point), {})
        by_level.setdefault(level, {})[int(point.value("seed"))] = records[point.name]
    out = {"factor": grid.factor, "levels": list(_levels(grid)), "seeds": list(grid.seeds),
           "conditions": []}
    for condition, by_level in conditions.items():
        out["conditions"].append(_condition(grid, dict(condition), by_level))
    return out


def _condition(grid: Grid, condition: dict, by_level: dict[str, dict[int, dict]]) -> dict:
    def arm_values(level: str, arm: str, key: str) -> dict[int, float]:
        return {s: float(r["metrics"][EVALUATE][arm][key]) for s, r in by_level[level].items()}

    def cost_values(level: str, stage: str, key: str) -> list[float]:
        return [float(c) for r in by_level[level].values()
                if (c := ((r["metrics"].get(f"metrics/{stage}.json") or {}).get("cost") or {})
                    .get(key)) is not None]

    levels = _levels(grid)
    result = {"condition": condition,
              "arms": {arm: {lvl: {k: describe(list(arm_values(lvl, arm, k).values()))
                                   for k in ACCURACY} for lvl in levels} for arm in ARMS},
              "cost": {st: {lvl: {k: describe(cost_values(lvl, st, k)) for k in COSTS}
                            for lvl in levels} for st in META_STAGES}}
    if grid.factor:
        a, b = levels
        result["difference"] = {arm: {k: paired_difference(arm_values(a, arm, k),
                                                           arm_values(b, arm, k))
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


def markdown(summary: dict, command: str) -> str:
    factor, levels = summary["factor"], summary["levels"]
    lines = ["# Comparison over seeds", "",
             f"`{command}`; seeds {', '.join(map(str, summary['seeds']))}. Accuracies in %, mean "
             "± sample standard deviation over seeds."]
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
        lines += ["**meta-training cost** (median per run, mean ± std over seeds)", "",
                  "| stage | " + " | ".join(f"{lvl}: s/iter, MiB" for lvl in levels)
                  + (f" | {levels[1]} / {levels[0]}: time, memory" if factor else "") + " |",
                  "|---|" + "---:|" * (len(levels) + bool(factor))]
        for stage, per in cond["cost"].items():
            cells = [f"{_pm(per[lvl]['seconds_per_iter'], 1):s}, "
                     f"{_pm(per[lvl]['peak_memory_mib'], 1)}" for lvl in levels]
            if factor:
                r = cond["cost_ratio"][stage]
                cells.append(f"{r['seconds_per_iter']:.2f}x, {r['peak_memory_mib']:.2f}x")
            lines.append(f"| {stage} | " + " | ".join(cells) + " |")
        lines += ["", COST_CAVEAT]
    lines += ["", "![accuracy and cost per arm and level](compare.png)"]
    return "\n".join(lines) + "\n"


def figure(summary: dict, out: Path) -> list[Path]:
    """Accuracy per arm and level with error bars (std over seeds); cost bars per stage."""
    conds = summary["conditions"]
    levels = summary["levels"]
    fig, axes = plt.subplots(len(conds), 2, figsize=(11, 3.6 * len(conds)), squeeze=False)
    width = 0.8 / len(levels)
    for row, cond in zip(axes, conds, strict=True):
        for i, lvl in enumerate(levels):
            stats = [cond["arms"][arm][lvl]["test_top1"] for arm in ARMS]
            row[0].bar([j + i * width for j in range(len(ARMS))],
                       [100 * s["mean"] for s in stats], width,
                       yerr=[0 if math.isnan(s["std"]) else 100 * s["std"] for s in stats],
                       capsize=3, label=f"{summary['factor']}={lvl}" if summary["factor"] else lvl)
            cost = [cond["cost"][st][lvl]["seconds_per_iter"] for st in META_STAGES]
            row[1].bar([j + i * width for j in range(len(META_STAGES))],
                       [c["mean"] for c in cost], width,
                       yerr=[0 if math.isnan(c["std"]) else c["std"] for c in cost], capsize=3,
                       label=lvl)
        title = ", ".join(f"{k}={v}" for k, v in cond["condition"].items())
        row[0].set_xticks([j + width * (len(levels) - 1) / 2 for j in range(len(ARMS))], ARMS,
                          fontsize=8)
        row[0].set_ylabel("test top-1 (%)")
        row[0].set_title(f"test top-1, mean ± std over seeds {title}".strip())
        row[0].legend(fontsize=7)
        row[1].set_xticks([j + width * (len(levels) - 1) / 2 for j in range(len(META_STAGES))],
                          META_STAGES, fontsize=8)
        row[1].set_ylabel("s / meta-iteration")
        row[1].set_title("meta-training cost (median per run)")
        for ax in row:
            ax.grid(alpha=0.3, axis="y")
    return save_figure(fig, out.with_suffix(".png"), out.with_suffix(".svg"))


def write(summary: dict, out: Path, command: str) -> str:
    text = markdown(summary, command)
    write_json(out / "compare.json", summary)
    write_text(out / "summary.md", text)
    figure(summary, out / "compare")
    return text
