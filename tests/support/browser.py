"""Headless Chromium reading what the MLflow UI renders: the DOM as text, ag-grid rows, and
screenshots."""

from __future__ import annotations

import html
import re
import shutil
import subprocess
import uuid
from html.parser import HTMLParser
from pathlib import Path

CHROMIUM = next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser"),
                             "/usr/bin/chromium") if p and Path(p).exists()), None)
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--virtual-time-budget=20000"]
# Where the UI checks leave their screenshots for a person to open.
SCREENSHOTS = Path("/tmp/metafgnet-ui")


def chromium(profile_dir: Path, *args: str, size: str = "2200,1100") -> subprocess.CompletedProcess:
    profile = profile_dir / f"chromium-{uuid.uuid4().hex[:8]}"
    return subprocess.run([CHROMIUM, *FLAGS, f"--window-size={size}",
                           f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=180)


def dump_dom(profile_dir: Path, url: str, size: str = "2200,1100") -> str:
    return chromium(profile_dir, "--dump-dom", url, size=size).stdout


def screenshot(profile_dir: Path, url: str, name: str, size: str = "2200,1100") -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / name
    path.unlink(missing_ok=True)
    chromium(profile_dir, f"--screenshot={path}", url, size=size)
    return path


def text_of(dom: str) -> str:
    return html.unescape(" ".join(re.sub(r"<[^>]+>", " ", dom).split()))


class _GridRows(HTMLParser):
    """Cells of an ag-grid table: ``{row-index: {col-id: text}}`` (pinned and centre parts of a
    row share its row-index)."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, dict[str, str]] = {}
        self._stack: list[tuple[str, str | None, str | None]] = []  # (tag, row, col)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        row = a.get("row-index") or (self._stack[-1][1] if self._stack else None)
        col = a.get("col-id") if a.get("role") == "gridcell" or "col-id" in a and row else None
        col = col or (self._stack[-1][2] if self._stack else None)
        if tag not in ("br", "img", "input", "meta", "link", "hr", "source", "wbr"):
            self._stack.append((tag, row, col))

    def handle_startendtag(self, tag, attrs):  # <path ... />: nothing to enter
        pass

    def handle_endtag(self, tag):
        if all(t != tag for t, _, _ in self._stack):
            return
        while self._stack:
            if self._stack.pop()[0] == tag:
                break

    def handle_data(self, data):
        if self._stack and self._stack[-1][1] is not None and self._stack[-1][2] is not None:
            _, row, col = self._stack[-1]
            cell = self.rows.setdefault(row, {})
            cell[col] = " ".join(f"{cell.get(col, '')} {data}".split())


def grid_rows(dom: str) -> list[dict[str, str]]:
    """The rendered rows of the runs table, top to bottom, each ``{col-id: text}``."""
    parser = _GridRows()
    parser.feed(dom)
    return [parser.rows[k] for k in sorted(parser.rows, key=int)]
