"""The front door and the docs stay true: every link resolves, every command shown is run by a test.

Links: every relative link and image in ``README.md`` and ``docs/*.md`` names a file of the
repository, and every ``#anchor`` a heading of the page it points to (GitHub's heading slugs).
Commands: every command of a shell code block (```` ```bash ````, ``sh``, ``shell``,
``console``) of those pages is either found in one test file (its arguments, each a string
literal or a word of one in that file) or marked ``untested here: <reason>``, on its own line
(a trailing comment) or on a comment line opening its block (the whole block).
"""

from __future__ import annotations

import ast
import re
import shlex
import subprocess
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
THIS = Path(__file__).resolve()
# the committed pages: a draft not yet added to git is not held to this yet
PAGES = [ROOT / "README.md", *sorted(
    ROOT / name for name in subprocess.run(["git", "ls-files", "docs/*.md"], cwd=ROOT,
                                           capture_output=True, text=True, check=True
                                           ).stdout.split())]
SHELL = {"bash", "sh", "shell", "console"}
FENCE = re.compile(r"^```(\S*)\s*$")
LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
MARK = re.compile(r"untested here:\s*(\S.*)?$")
# Options that only choose how a command prints: tests ask for --json to assert on the values.
FORMAT_OPTIONS = {"--md"}
# Programs no test starts by name: their commands need an "untested here" mark with the reason.
UNRUN = {"make", "source", "export", "cd"}


def _split_fences(text: str) -> tuple[str, list[tuple[str, list[str]]]]:
    """The page's prose (code blocks blanked) and its code blocks as (language, lines)."""
    prose: list[str] = []
    blocks: list[tuple[str, list[str]]] = []
    current: tuple[str, list[str]] | None = None
    for line in text.splitlines():
        m = FENCE.match(line.strip())
        if m and current is None:
            current = (m.group(1).lower(), [])
            prose.append("")
        elif line.strip() == "```" and current is not None:
            blocks.append(current)
            current = None
            prose.append("")
        elif current is not None:
            current[1].append(line)
            prose.append("")
        else:
            prose.append(line)
    assert current is None, "a code block is never closed"
    return "\n".join(prose), blocks


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


@cache
def anchors(page: Path) -> frozenset[str]:
    prose, _ = _split_fences(page.read_text())
    seen: dict[str, int] = {}
    out = set()
    for line in prose.splitlines():
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        base = slug(m.group(1))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return frozenset(out)


def broken_links(page: Path, root: Path = ROOT) -> list[str]:
    """Each link of ``page`` whose file is missing (or outside ``root``) or whose anchor is no
    heading of the page it names."""
    prose, _ = _split_fences(page.read_text())
    prose = re.sub(r"<https?://[^>]+>", "", prose)
    bad = []
    for target in LINK.findall(prose):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto: ...
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists() or (root not in dest.parents and dest != root):
            bad.append(f"{page.relative_to(root)}: {target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            bad.append(f"{page.relative_to(root)}: {target} (no heading #{anchor} in "
                       f"{dest.relative_to(root)}; it has {sorted(anchors(dest))})")
    return bad


def shell_commands(page: Path) -> list[tuple[str, str | None]]:
    """Every command of the page's shell blocks, with its "untested here" reason (None: none).
    A reason of ``""`` is a mark without a reason."""
    _, blocks = _split_fences(page.read_text())
    found: list[tuple[str, str | None]] = []
    for lang, lines in blocks:
        if lang not in SHELL:
            continue
        block_reason: str | None = None
        logical: list[str] = []
        pending = ""
        for raw in lines:
            line = raw.strip()
            if lang == "console":
                if not line.startswith("$ ") and not pending:
                    continue  # output, not a command
                line = line.removeprefix("$ ")
            if line.endswith("\\"):
                pending += line[:-1].rstrip() + " "
                continue
            logical.append(pending + line)
            pending = ""
        for i, line in enumerate(logical):
            if not line:
                continue
            if line.startswith("#"):
                m = MARK.search(line)
                if m and all(not x or x.startswith("#") for x in logical[:i]):
                    block_reason = m.group(1) or ""
                continue
            m = MARK.search(line)
            reason = (m.group(1) or "") if m else block_reason
            code = line.split(" #", 1)[0]
            for part in re.split(r"&&|;", code):
                if part.strip():
                    found.append((part.strip(), reason))
    return found


def _words(tree: ast.AST) -> set[str]:
    words: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            words.add(node.value)
            words.update(node.value.split())
    return words


@cache
def _test_files() -> dict[Path, frozenset[str]]:
    return {p: frozenset(_words(ast.parse(p.read_text())))
            for p in sorted((ROOT / "tests").rglob("*.py")) if p.resolve() != THIS}


def required(command: str) -> tuple[str, list[str]]:
    """The program and the arguments a test must show for ``command`` to count as run by it:
    every argument but output-format options and bare numbers (tests run smaller counts)."""
    tokens = shlex.split(command)
    while tokens and re.match(r"^[A-Z_][A-Z0-9_]*=", tokens[0]):
        tokens = tokens[1:]  # environment assignments
    program, args = tokens[0], tokens[1:]
    return program, [a for a in args if a not in FORMAT_OPTIONS and not a.isdigit()]


def running_test(command: str) -> Path | None:
    program, args = required(command)
    if program in UNRUN:
        return None
    for path, words in _test_files().items():
        if all(a in words for a in args):
            return path
    return None


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_resolves(page):
    assert not broken_links(page), "\n".join(broken_links(page))


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_command_is_run_by_a_test_or_marked(page):
    problems = []
    for command, reason in shell_commands(page):
        if reason == "":
            problems.append(f"{command}: 'untested here' needs a reason after the colon")
        elif reason is None and running_test(command) is None:
            program, args = required(command)
            problems.append(f"{command}: no test file has all of {args}"
                            + (f" ({program} is never run by a test)" if program in UNRUN
                               else "") + "; run it in a test or mark it 'untested here: <why>'")
    assert not problems, f"{page.relative_to(ROOT)}:\n" + "\n".join(problems)


def test_the_front_door_links_every_docs_page():
    prose, _ = _split_fences((ROOT / "README.md").read_text())
    linked = {(ROOT / t.partition("#")[0]).resolve() for t in LINK.findall(prose)}
    unlinked = [p.name for p in PAGES[1:] if p.resolve() not in linked]
    assert not unlinked, f"README.md does not link docs/{unlinked}"


def test_the_front_door_stays_short():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; move detail into docs/"


def test_every_environment_variable_is_documented():
    used = {m for base in ("src", "pipeline") for p in (ROOT / base).rglob("*.py")
            for m in re.findall(r"METAFGNET_[A-Z_]+", p.read_text())}
    documented = set(re.findall(r"METAFGNET_[A-Z_]+", (ROOT / "docs/parameters.md").read_text()))
    assert used, "no METAFGNET_* variable found: the search is wrong"
    assert not used - documented, f"docs/parameters.md misses {sorted(used - documented)}"


# The checkers themselves, on pages written to fail.

def test_a_broken_link_and_a_missing_anchor_are_reported(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "other.md").write_text("# Other\n\n## Environment variables\n")
    page = tmp_path / "docs" / "probe.md"
    page.write_text("# Probe\n\n[ok](other.md#environment-variables) [gone](nowhere.md) "
                    "[bad](other.md#no-such-heading) [self](#probe) [web](https://example.org)"
                    " [out](../../escape.md)\n```bash\n[in code](nowhere-in-code.md)\n```\n")
    (tmp_path.parent / "escape.md").write_text("# Outside\n")
    bad = broken_links(page, root=tmp_path)
    assert len(bad) == 3, bad
    assert "nowhere.md (no such file)" in bad[0]
    assert "no heading #no-such-heading" in bad[1]
    assert "../../escape.md (no such file)" in bad[2]


def test_unmarked_untested_commands_are_found(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("```bash\n# untested here: needs a GPU\nnvidia-smi\n```\n\n"
                    "```bash\nmake run            # untested here:\n"
                    "dvc exp run -n first-order \\\n    -S meta.order=first\n"
                    "metafgnet frobnicate --wibble   # a comment\n```\n")
    commands = shell_commands(page)
    assert commands == [("nvidia-smi", "needs a GPU"), ("make run", ""),
                        ("dvc exp run -n first-order -S meta.order=first", None),
                        ("metafgnet frobnicate --wibble", None)]
    assert running_test(commands[2][0]) is not None  # tests/pipeline/conftest.py runs it
    assert running_test(commands[3][0]) is None


def test_slugs_follow_github():
    assert slug("The paper's settings") == "the-papers-settings"
    assert slug("Over seeds: `metafgnet compare`") == "over-seeds-metafgnet-compare"
    assert slug("Multi-GPU, one node") == "multi-gpu-one-node"
