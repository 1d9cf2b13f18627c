"""docs/comparing.md's comparison commands, as written, on a fresh clone after ``make run`` and
the first-order experiment (the ``two_executions`` fixture): every figure of the resulting
``metafgnet plots`` page shows both the baseline and the experiment."""

from __future__ import annotations

import re
import shlex
import subprocess

import pytest
import yaml

from support.repo import ROOT

PAGE = ROOT / "docs" / "comparing.md"
SETUP = "source .venv/bin/activate"  # the test environment's PATH has the venv's bin first
EXPERIMENT = "dvc exp run -n first-order -S meta.order=first"  # run by the fixture
FLOW = (
    "BASE=run-$(git rev-parse --short HEAD)",
    ["dvc", "exp", "show", "--md", "--drop", ".*", "--keep",  # shell-quoted: shlex.join
     "Experiment|meta.order|seed|.*test_top1|.*meta_train.json:cost.seconds_per_iter"],
    "dvc metrics diff $BASE first-order --md",
    "dvc plots diff $BASE first-order",
    "metafgnet plots $BASE first-order",
    "dvc metrics diff HEAD $BASE --md",
)


def _line(command: str | list[str]) -> str:
    return command if isinstance(command, str) else shlex.join(command)


def documented() -> list[str]:
    """The commands of the page's first bash block: continuations joined, comments dropped."""
    block = PAGE.read_text().split("```bash\n", 1)[1].split("```", 1)[0]
    commands, pending = [], ""
    for line in block.splitlines():
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1].strip() + " "
            continue
        command = (pending + line.strip()).split(" #", 1)[0].strip()
        pending = ""
        if command:
            commands.append(command)
    return commands


def _figures(page: str) -> dict[str, list[str]]:
    """Each section (one declared plot) of the page: its title and its figures' captions."""
    return {title: re.findall(r"<figcaption>(.*?)</figcaption>", body)
            for title, body in re.findall(r"<section><h2>(.*?)</h2>(.*?)</section>", page)}


@pytest.mark.slow
def test_the_documented_commands_compare_the_saved_baseline_and_the_experiment(two_executions):
    repo, env, _ = two_executions
    marker = "=== next command ==="
    script = "set -euo pipefail\n" + f"\necho '{marker}'\n".join(map(_line, FLOW)) + "\n"
    done = subprocess.run(["bash", "-c", script], cwd=repo, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "failed to load" not in done.stderr, done.stderr
    _, shown, diff, _, offline, reference = done.stdout.split(marker)
    base = two_executions.baseline
    assert base.startswith("run-") and base in shown and "first-order" in shown
    assert "second" in shown and "first" in shown and "test_top1" in shown
    # a table of what changed, baseline against experiment (the tiny config may leave the arms'
    # accuracy equal; the meta-training losses and cost differ)
    assert f"| {base}" in diff and "| first-order" in diff and "metrics/meta_train.json" in diff
    assert "metrics/meta_train.json" in reference  # the cost: timed on every run

    dvc_page = (repo / "dvc_plots" / "index.html").read_text()
    assert base in dvc_page and "first-order" in dvc_page
    assert "dvc_plots_offline" in offline
    page = (repo / "dvc_plots_offline" / "index.html").read_text()
    assert "<pre>" not in page and "DataIndexDirError" not in page  # no DVC error object
    declared = {next(iter(p)) if isinstance(p, dict) else p
                for p in yaml.safe_load((repo / "dvc.yaml").read_text())["plots"]}
    figures = _figures(page)
    assert set(figures) == declared
    for title, captions in figures.items():
        shown = {rev.strip() for caption in captions for rev in caption.split(",")}
        assert {base, "first-order"} <= shown, (title, captions)


def test_the_page_shows_the_commands_the_flow_test_runs():
    """The first two are the fixture's (the environment, ``dvc exp run``), the rest the test's."""
    assert documented() == [SETUP, EXPERIMENT, *map(_line, FLOW)]
