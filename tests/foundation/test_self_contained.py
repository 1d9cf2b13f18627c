"""The repository stands alone: no file points outside it, and every `docs/` page cited exists."""

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUTSIDE = re.compile(r"\.\./shared|\bSPEC\.md|\bTOOLCHAIN\.md|\bSTYLE\.md|\bREVIEW\.md|seed Eq|\bthe seed\b")
THIS = Path(__file__).resolve()


def _tracked_text_files() -> list[Path]:
    names = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split()
    return [ROOT / n for n in names if Path(n).suffix in {".py", ".md", ".yaml", ".toml", ".sh",
                                                          ".txt", ".cfg", ""}
            and (ROOT / n).is_file()]


def test_no_file_points_outside_the_repository():
    found = [f"{p.relative_to(ROOT)}:{i}: {line.strip()}"
             for p in _tracked_text_files() if p.resolve() != THIS
             for i, line in enumerate(p.read_text(errors="replace").splitlines(), 1)
             if OUTSIDE.search(line)]
    assert not found, "\n".join(found)


def test_every_docs_page_cited_exists():
    cited = {m for p in _tracked_text_files()
             for m in re.findall(r"docs/[\w./-]+\.(?:md|png)", p.read_text(errors="replace"))}
    assert "docs/method.md" in cited
    missing = sorted(c for c in cited if not (ROOT / c).exists())
    assert not missing, missing
