"""`metafgnet plots`: DVC's plots as one HTML page that needs no network (a real git + DVC repo)."""

from __future__ import annotations

import os
import re
import shutil
import struct
import sys
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path

import pytest

from support.repo import run

pytestmark = pytest.mark.slow

DVC_YAML = """\
plots:
  - training loss:
      template: linear
      x: step
      y:
        curve.tsv: loss
  - figure.png
"""


def _png(rgb: tuple[int, int, int]) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = b"".join(b"\x00" + bytes(rgb) * 2 for _ in range(2))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


@pytest.fixture
def repo(tmp_path: Path) -> tuple[Path, dict]:
    root = tmp_path / "repo"
    root.mkdir()
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    env.pop("DVC_ROOT", None)
    run(["git", "init", "-q"], root, env)
    run([sys.executable, "-m", "dvc", "init", "-q"], root, env)
    (root / "dvc.yaml").write_text(DVC_YAML)
    for loss, rgb, message in (("1.0\n1\t0.5", (255, 0, 0), "one"),
                               ("0.9\n1\t0.4\n2\t0.2", (0, 0, 255), "two")):
        (root / "curve.tsv").write_text(f"step\tloss\n0\t{loss}\n")
        (root / "figure.png").write_bytes(_png(rgb))
        run(["git", "add", "-A"], root, env)
        run(["git", "commit", "-qm", message], root, env)
    return root, env


def _metafgnet(args: list[str], cwd: Path, env: dict, check: bool = True):
    return run([sys.executable, "-m", "metafgnet.cli", "plots", *args], cwd, env, check=check)


def _check_offline_page(out: Path, revisions: int) -> str:
    page = (out / "index.html").read_text()
    assert "<h2>training loss</h2>" in page and "<h2>figure.png</h2>" in page
    assert "<svg" in page
    svgs = sorted(out.glob("*.svg"))
    assert svgs
    for svg in svgs:
        assert ET.parse(svg).getroot().tag == "{http://www.w3.org/2000/svg}svg"
    assert page.count('src="data:image/png;base64,') == revisions
    # nothing is fetched: no http(s) in any src/href (vega's xmlns URLs are names, not fetches)
    links = re.findall(r"""\b(?:src|href)\s*=\s*["']([^"']*)""", page, flags=re.IGNORECASE)
    assert not [link for link in links if re.match(r"\s*(https?:)?//", link, re.IGNORECASE)]
    assert not re.search(r"<(script|link)\b", page, re.IGNORECASE)
    return page


def test_show_and_diff_write_an_offline_page(repo):
    root, env = repo
    out = _metafgnet([], root, env)
    assert "dvc_plots_offline" in out.stdout
    _check_offline_page(root / "dvc_plots_offline", revisions=1)

    _metafgnet(["HEAD~1", "HEAD", "--out", "diff"], root, env)
    page = _check_offline_page(root / "diff", revisions=2)
    assert "HEAD~1, HEAD" in page  # both revisions' curves in one chart


def test_outside_a_dvc_repo_and_a_bad_revision_are_one_clear_error(repo, tmp_path):
    root, env = repo
    plain = tmp_path / "plain"
    plain.mkdir()
    out = _metafgnet([], plain, env, check=False)
    assert out.returncode == 2 and "not inside a DVC repository" in out.stderr
    assert "Traceback" not in out.stderr and not (plain / "dvc_plots_offline").exists()

    out = _metafgnet(["no-such-rev"], root, env, check=False)
    assert out.returncode == 2 and "unknown Git revision" in out.stderr
    assert "Traceback" not in out.stderr


def test_a_revision_whose_outputs_are_not_cached_is_one_line_with_the_fix(repo):
    """The plots of a stage output whose cache is gone (a fresh clone, or another machine's
    ``dvc.lock``): one line naming the revision, the output and both fixes, no page."""
    root, env = repo
    (root / "dvc.yaml").write_text(
        "stages:\n  curve:\n    cmd: mkdir -p out && printf 'step\\tloss\\n0\\t1\\n1\\t0.5\\n'"
        " > out/curve.tsv\n    outs:\n      - out\n" + DVC_YAML.replace("curve.tsv", "out/curve.tsv"))
    run([sys.executable, "-m", "dvc", "repro", "-q"], root, env)
    run(["git", "add", "-A"], root, env)
    run(["git", "commit", "-qm", "curve from a stage"], root, env)
    _metafgnet(["HEAD", "--out", "cached"], root, env)  # cached: a page, both revisions
    assert "workspace, HEAD" in (root / "cached" / "index.html").read_text()

    shutil.rmtree(root / ".dvc" / "cache")
    out = _metafgnet(["HEAD", "--out", "uncached"], root, env, check=False)
    assert out.returncode == 2, out.stdout + out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("error: the outputs of HEAD are not in this DVC cache (out/curve.tsv)")
    assert "`dvc repro` at that revision" in lines[0] and "`dvc pull`" in lines[0]
    assert "DataIndexDirError" not in out.stderr and not (root / "uncached").exists()
