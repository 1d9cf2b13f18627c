"""`metafgnet preset apply` keeps the comments and key order of params.yaml and refuses to
overwrite uncommitted edits without --force (real git repositories in tmp_path)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from metafgnet.cli import main
from metafgnet.io import read_yaml
from metafgnet.params import load_params
from metafgnet.presets import preset_names, render_params, resolve_preset

ROOT = Path(__file__).resolve().parents[2]
GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*GIT, "-C", str(repo), *args], check=True, capture_output=True,
                          text=True)


def _repo(tmp_path: Path) -> Path:
    """A git repository holding the project's params.yaml, committed; returns that file."""
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    shutil.copy(ROOT / "params.yaml", repo / "params.yaml")
    _git(repo, "add", "params.yaml")
    _git(repo, "commit", "-qm", "params")
    return repo / "params.yaml"


def _comments(text: str) -> list[str]:
    """Every comment of a YAML file (whole-line and end-of-line), without the leading spaces."""
    return [m.group(0).strip() for line in text.splitlines() if (m := re.search(r"#.*$", line))]


def _apply(*args: str) -> int:
    return main(["preset", "apply", *args])


def _not_in_git(path: Path) -> bool:
    done = subprocess.run(["git", "-C", str(path), "rev-parse", "--is-inside-work-tree"],
                          capture_output=True, text=True)
    return done.returncode != 0


@pytest.mark.parametrize("name", preset_names())
def test_apply_keeps_every_comment_and_key_order_of_params_yaml(tmp_path, name, capsys):
    params = _repo(tmp_path)
    original = params.read_text()
    assert _apply(name, "--output", str(params)) == 0  # committed, unchanged: no --force needed
    assert "comments kept" in capsys.readouterr().out
    text = params.read_text()
    assert text != original
    missing = [c for c in _comments(original) if c not in text]
    assert not missing, f"comments lost: {missing}"
    assert text.startswith(original.splitlines()[0])  # the header comment stays on top

    raw, expected = resolve_preset(name)
    assert load_params(params) == expected
    assert read_yaml(params) == raw
    assert main(["params", "check", str(params)]) == 0

    before, after = read_yaml(ROOT / "params.yaml"), read_yaml(params)
    assert list(after)[:len(before)] == list(before)  # sections in their order
    for section, values in before.items():
        if isinstance(values, dict):  # the file's keys first, in their order
            assert list(after[section])[:len(values)] == list(values), section


def test_uncommitted_edits_are_refused_and_left_untouched(tmp_path, capsys):
    params = _repo(tmp_path)
    edited = params.read_text().replace("seed: 0   ", "seed: 7   ", 1) + "# my note\n"
    params.write_text(edited)
    assert _apply("cub_lbird", "--output", str(params)) == 2
    err = capsys.readouterr().err
    assert str(params) in err and "uncommitted edits" in err and "--force" in err
    assert "commit or stash" in err.lower()
    assert params.read_text() == edited


def test_staged_edits_are_refused_too(tmp_path, capsys):
    params = _repo(tmp_path)
    edited = params.read_text().replace("width: 16", "width: 8")
    params.write_text(edited)
    _git(params.parent, "add", "params.yaml")
    assert _apply("cub_lbird", "--output", str(params)) == 2
    assert "uncommitted edits" in capsys.readouterr().err
    assert params.read_text() == edited


def test_force_overwrites_uncommitted_edits_and_keeps_comments(tmp_path):
    params = _repo(tmp_path)
    params.write_text(params.read_text().replace("seed: 0   ", "seed: 7   ", 1)
                      + "# my note\n")
    assert _apply("dogs_imagenet", "--output", str(params), "--force") == 0
    assert load_params(params) == resolve_preset("dogs_imagenet")[1]
    assert "# my note" in params.read_text()
    assert "# the method's randomness" in params.read_text()


def test_applying_after_a_commit_needs_no_force(tmp_path):
    params = _repo(tmp_path)
    params.write_text(params.read_text().replace("width: 16", "width: 8"))
    _git(params.parent, "commit", "-qam", "narrower")
    assert _apply("cub_imagenet", "--output", str(params)) == 0
    assert load_params(params) == resolve_preset("cub_imagenet")[1]
    # the applied file is uncommitted now: a second preset is refused until committed
    assert _apply("cub_lbird", "--output", str(params)) == 2
    _git(params.parent, "commit", "-qam", "cub_imagenet")
    assert _apply("cub_lbird", "--output", str(params)) == 0
    assert load_params(params) == resolve_preset("cub_lbird")[1]


def test_untracked_file_is_refused_unless_it_already_holds_the_preset(tmp_path, capsys):
    params = _repo(tmp_path)
    other = params.with_name("other.yaml")
    other.write_text(params.read_text())  # untracked, and differs from what would be written
    assert _apply("cub_lbird", "--output", str(other)) == 2
    err = capsys.readouterr().err
    assert str(other) in err and "not committed" in err and "--force" in err
    assert other.read_text() == params.read_text()
    assert _apply("cub_lbird", "--output", str(other), "--force") == 0
    written = other.read_text()
    assert _apply("cub_lbird", "--output", str(other)) == 0  # same content: nothing to lose
    assert other.read_text() == written


def test_outside_git_an_existing_different_file_counts_as_edits(tmp_path, capsys):
    if not _not_in_git(tmp_path):
        pytest.skip("tmp_path lies inside a git work tree")
    params = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", params)
    assert _apply("cub_lbird", "--output", str(params)) == 2
    err = capsys.readouterr().err
    assert str(params) in err and "not in a git repository" in err and "--force" in err
    assert params.read_text() == (ROOT / "params.yaml").read_text()
    assert _apply("cub_lbird", "--output", str(params), "--force") == 0
    assert load_params(params) == resolve_preset("cub_lbird")[1]


def test_a_missing_output_file_is_written_whole(tmp_path, capsys):
    out = tmp_path / "new" / "params.yaml"
    assert _apply("dogs_imagenet", "--output", str(out)) == 0
    assert "written whole" in capsys.readouterr().out
    raw, expected = resolve_preset("dogs_imagenet")
    assert load_params(out) == expected and read_yaml(out) == raw
    assert "milestones: [80, 120]" in out.read_text()  # sequences stay on one line


def test_unknown_preset_leaves_the_file_alone(tmp_path, capsys):
    params = _repo(tmp_path)
    assert _apply("nope", "--output", str(params)) == 2
    assert "unknown preset 'nope'; available:" in capsys.readouterr().err
    assert params.read_text() == (ROOT / "params.yaml").read_text()


def test_keys_are_added_and_removed_in_place():
    raw, expected = resolve_preset("cub_lbird")
    original = (ROOT / "params.yaml").read_text()
    edited = (re.sub(r"  nnodes: 1 .*\n", "", original)
              .replace("  width: 16\n", "  width: 16\n  bogus: 3           # stray\n"))
    text, kept = render_params(raw, expected, edited)
    assert kept
    assert "bogus" not in text and "# stray" not in text
    assert edited != original and "nnodes" not in edited
    assert "  nnodes: 1\n\nexecution:" in text  # added at the section's end, spacing kept
    assert "# crop (paper: 224)" in text


def test_strings_the_loader_would_misread_are_quoted():
    raw, expected = resolve_preset("cub_lbird", {"tracking": {"experiment": "yes"}})
    text, _ = render_params(raw, expected, (ROOT / "params.yaml").read_text())
    assert expected.tracking.experiment == "yes"
    assert "experiment: \"yes\"" in text


@pytest.mark.slow
def test_the_cli_refuses_and_forces_in_a_subprocess(tmp_path):
    params = _repo(tmp_path)
    params.write_text(params.read_text() + "# my note\n")
    cmd = [sys.executable, "-m", "metafgnet.cli", "preset", "apply", "cub_lbird"]
    refused = subprocess.run(cmd, cwd=params.parent, capture_output=True, text=True)
    assert refused.returncode == 2
    assert "params.yaml has uncommitted edits" in refused.stderr and "--force" in refused.stderr
    assert params.read_text().endswith("# my note\n")
    forced = subprocess.run([*cmd, "--force"], cwd=params.parent, capture_output=True,
                            text=True)
    assert forced.returncode == 0, forced.stderr
    assert load_params(params) == resolve_preset("cub_lbird")[1]
    check = subprocess.run([sys.executable, "-m", "metafgnet.cli", "params", "check"],
                           cwd=params.parent, capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
