"""The Markdown report: every arm side by side, selection figures, curves, references.

Published reference numbers (``docs/method.md``) are shown beside measured ones only for the
paper's target (CUB-200-2011); they come from the authors' code comments, the last one
unconfirmed.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from metafgnet.evaluation import ARMS
from metafgnet.io import read_json, write_text
from metafgnet.reporting.plots import plot_confusion, plot_curves, read_tsv
from metafgnet.reporting.summary import META_STAGES

REFERENCES = {  # CUB-200-2011 test top-1 (%), see docs/method.md
    "metafgnet (after meta-training, target head)": ("85.795", "authors' code comment"),
    "metafgnet": ("87.17", "authors' code comment"),
    "metafgnet_selected": ("~87.6", "paper headline, unconfirmed"),
}

# (x column, y columns) of the report's curve figures, read from the stages' curves.tsv
META_CURVES = ("step", ["inner_loss", "meta_loss", "aux_loss"])
FINETUNE_CURVES = ("epoch", ["loss", "val_top1"])


def _pct(x: float) -> str:
    return f"{100 * x:.2f}"


def _arm_table(metrics: dict, best: str) -> list[str]:
    lines = ["| arm | val top-1 (%) | test top-1 (%) | test mean class acc (%) |",
             "|---|---:|---:|---:|"]
    for arm in ARMS:
        m = metrics[arm]
        name = f"**{arm}** (best on val)" if arm == best else arm
        lines.append(f"| {name} | {_pct(m['val_top1'])} | {_pct(m['test_top1'])} | "
                     f"{_pct(m['test_mean_class_acc'])} |")
    return lines


def _confusion(predictions: Path) -> np.ndarray:
    with predictions.open() as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    names = sorted({r["actual"] for r in rows} | {r["predicted"] for r in rows})
    index = {n: i for i, n in enumerate(names)}
    conf = np.zeros((len(names), len(names)), dtype=np.int64)
    for r in rows:
        conf[index[r["actual"]], index[r["predicted"]]] += 1
    return conf


def _selection(select: dict) -> list[str]:
    lines = ["## Auxiliary sample selection", "",
             f"- kept {select['selected_images']} of {select['auxiliary_images']} auxiliary "
             f"images ({_pct(select['selected_fraction'])} %)"]
    if "roc_auc" in select:
        lines += [
            f"- ROC AUC of the selection score, related vs unrelated auxiliary classes: "
            f"{select['roc_auc']:.3f} (0.5 is chance; independent of the selection criterion)",
            f"- precision at k = number of related images: "
            f"{_pct(select['precision_at_related'])} % (also independent of the criterion)",
            f"- precision of the kept set: {_pct(select['selection_precision'])} % against a "
            f"related base rate of {_pct(select['related_base_rate'])} % (bounded by the "
            "criterion: keeping a fraction r of the images caps it at base rate / r)"]
    by = "family" if "roc_auc" in select else "class"
    return lines + ["", f"Score distribution per auxiliary {by}:", "",
                    "![scores](../select/score_distribution.png)", "",
                    f"Top and bottom scored images, captioned with their {by}:", "",
                    "![top and bottom scored](../select/top_bottom.png)", ""]


def _cost() -> list[str]:
    """Where the meta-training cost is: timings differ on every run, so they stay out of this
    cached report (its bytes depend only on its inputs) and live in the uncached metrics."""
    files = ", ".join(f"`metrics/{stage}.json`" for stage in META_STAGES)
    return ["## Meta-training cost", "",
            "Seconds per meta-iteration, images/s and peak memory are measured on every run: "
            f"they are in {files} (`dvc exp show`, `dvc metrics diff`), not in this report.", ""]


def _leakage(counts: dict, drop: bool) -> list[str]:
    """The leakage check of ``prepare`` (:mod:`metafgnet.data.leakage`) and what was done."""
    lines = ["## Auxiliary images that copy a target image", "",
             "| target split | byte-identical | near-identical |", "|---|---:|---:|"]
    lines += [f"| {split} | {counts[split]['exact']} | {counts[split]['near']} |"
              for split in ("train", "val", "test")]
    found = counts["auxiliary_images"]
    action = (f"dropped from the auxiliary set ({counts['dropped']} images, "
              "`data.leakage.drop: true`)" if drop else
              "kept in the auxiliary set, as in the paper (`data.leakage.drop: false`)")
    return lines + ["", f"{found} auxiliary images copy a target image (near: perceptual hashes "
                    f"within {counts['max_distance']} bits); they are {action}. The pairs are in "
                    "`data/prepared/manifests/leakage.csv`.", ""]


def build_report(results: Path, models: Path, metrics_dir: Path, out: Path, target: str,
                 leakage: dict, drop: bool) -> Path:
    """Render plots into ``out`` and write ``out/report.md``; returns the report path.
    ``leakage``: the counts of ``prepare``'s leakage check; ``drop``: ``data.leakage.drop``."""
    metrics = read_json(metrics_dir / "evaluate.json")
    best = read_json(results / "evaluate" / "best.json")["best_arm"]
    select = read_json(metrics_dir / "select.json")
    lines = ["# MetaFGNet reproduction report", "",
             f"Target: `{target}`. Every arm's model was chosen on the validation split; "
             "test is reported once.", "", "## Arms", "", *_arm_table(metrics, best), ""]

    lines += _leakage(leakage, drop) + _selection(select) + _cost()

    meta = {s: read_tsv(models / s / "curves.tsv") for s in META_STAGES}
    plot_curves(meta, *META_CURVES, "meta-training", out / "meta_training")
    tune = {a: read_tsv(models / "finetune" / a / "curves.tsv") for a in ARMS}
    plot_curves(tune, *FINETUNE_CURVES, "fine-tuning", out / "finetuning")
    plot_confusion(_confusion(results / "evaluate" / "predictions.tsv"), f"{best} (test)",
                   out / "confusion")
    lines += ["## Curves", "", "![meta-training](meta_training.png)", "",
              "![fine-tuning](finetuning.png)", "", f"## Confusion matrix of `{best}` (test)",
              "", "![confusion](confusion.png)", ""]

    if target == "cub":
        lines += ["## Published reference (CUB-200-2011, test top-1 %)", "",
                  "| setting | published | source | measured |", "|---|---:|---|---:|"]
        measured = {"metafgnet": _pct(metrics["metafgnet"]["test_top1"]),
                    "metafgnet_selected": _pct(metrics["metafgnet_selected"]["test_top1"])}
        for name, (value, source) in REFERENCES.items():
            lines.append(f"| {name} | {value} | {source} | {measured.get(name, '-')} |")
        lines += ["", "The authors chose checkpoints on the test split; the figures measured "
                  "here choose on validation.", ""]
    report = out / "report.md"
    write_text(report, "\n".join(lines))
    return report
