"""DVC's plots as one offline HTML page (``metafgnet plots [REV ...]``).

``dvc plots show`` / ``dvc plots diff`` write an HTML page that loads vega, vega-lite and
vega-embed from a CDN, so on a machine without network the page is blank. This module asks DVC
for the same plots as JSON (``--json``: complete vega-lite specs with the data inlined, and image
plots as PNG files DVC copies out per revision), renders every spec to SVG with vl-convert (which
bundles vega, no network) and writes ``index.html`` with the SVGs inlined and the images embedded
as data URIs, plus one ``.svg`` file per spec beside it. The page references nothing outside
itself. A revision whose outputs are not in the DVC cache is one error line with the fix
(:func:`check_cached`), not a page missing that revision.
"""

from __future__ import annotations

import base64
import html
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from metafgnet.errors import UserError
from metafgnet.io import write_text

# where an id is defined or referenced, up to the id itself
_ID_REF = re.compile(r'\bid="(?=[^"]+")|url\(#(?=[^)]+\))|href="#(?=[^"]+")')


def dvc_plots_json(revs: list[str], repo: Path, images_dir: Path) -> dict:
    """DVC's ``--json`` answer: ``{"data": {title: [{"type": "vega"|"image", "revisions": [...],
    "content": spec | "url": png path}, ...]}, "errors"?: [{"name", "rev", "msg", ...}]}``."""
    repo = Path(repo).resolve()
    if not any((d / ".dvc").is_dir() for d in (repo, *repo.parents)):
        # `dvc plots show --json` outside a repository prints `{}` and succeeds
        raise UserError(f"{repo} is not inside a DVC repository (no .dvc folder here or above); "
                        "run `metafgnet plots` from the project's checkout")
    cmd = [sys.executable, "-m", "dvc", "plots", *(["diff", *revs] if revs else ["show"]),
           "--json", "-o", str(images_dir)]
    try:
        out = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UserError(f"could not run `dvc plots` in {repo}: {exc}") from exc
    if out.returncode != 0:
        detail = (out.stderr.strip() or out.stdout.strip()).splitlines()
        raise UserError(f"`{' '.join(cmd[2:])}` failed in {repo}: "
                        + (" ".join(detail[-3:]) or f"exit status {out.returncode}")
                        + " (run it inside a DVC repository whose dvc.yaml declares plots)")
    try:
        return json.loads(out.stdout)
    except json.JSONDecodeError as exc:
        raise UserError(f"`dvc plots` printed no JSON ({exc}): {out.stdout[:200]!r}") from exc


def _is_uncached(error: dict) -> bool:
    """Whether DVC's plot ``error`` says the revision's output is not in the cache: a directory
    output it cannot load (``DataIndexDirError``), or a file output with no stored copy."""
    return error.get("type") == "DataIndexDirError" or (
        error.get("type") == "FileNotFoundError"
        and "No storage files available" in str(error.get("msg")))


def check_cached(errors: list[dict]) -> None:
    """Raise one line (which revisions, which outputs, the fix) when DVC could not read some
    revisions' plots because their outputs are not in this DVC cache: a page drawn without
    them would compare nothing."""
    missing: dict[str, set[str]] = {}
    for error in filter(_is_uncached, errors):
        missing.setdefault(str(error.get("rev")), set()).add(str(error.get("source")))
    if missing:
        revs = ", ".join(missing)
        sources = ", ".join(sorted(set().union(*missing.values())))
        raise UserError(f"the outputs of {revs} are not in this DVC cache ({sources}): run "
                        "`dvc repro` at that revision, or `dvc pull` from a remote that has them")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "plot"


def _scoped_svg(svg: str, prefix: str) -> str:
    """``svg`` with its ids (vega's ``clip1``...) prefixed, so several inlined SVGs don't clash."""
    return _ID_REF.sub(lambda m: m.group(0) + prefix, svg)


def render(revs: list[str], out: Path) -> Path:
    """Write ``out/index.html`` (self-contained) and ``out/*.svg`` for the plots of the DVC
    repository here at ``revs`` (none: the workspace, as ``dvc plots show``); return the page's
    path."""
    import vl_convert

    sections: list[str] = []
    with tempfile.TemporaryDirectory() as images:
        answer = dvc_plots_json(revs, Path("."), Path(images))
        plots = answer.get("data") or {}
        errors = answer.get("errors") or []
        check_cached(errors)
        if not any(plots.values()):
            why = "; ".join(f"{e.get('rev')}: {e.get('msg')}" for e in errors)
            raise UserError("DVC found no plots (is there a `plots:` section in dvc.yaml, and do "
                            "its files exist at the revisions asked for?)"
                            + (f": {why}" if why else ""))
        out.mkdir(parents=True, exist_ok=True)
        for number, (title, entries) in enumerate(plots.items()):
            parts = []
            for index, entry in enumerate(entries):
                revisions = ", ".join(entry.get("revisions") or [])
                if entry.get("type") == "vega":
                    try:
                        svg = vl_convert.vegalite_to_svg(entry["content"])
                    except ValueError as exc:
                        raise UserError(f"plot {title!r}: vl-convert could not render its "
                                        f"vega-lite spec (check its template): {exc}") from exc
                    name = f"{number:02d}_{_slug(title)}" + (f"_{index}" if index else "") + ".svg"
                    write_text(out / name, svg)
                    parts.append(f'<figure>{_scoped_svg(svg, f"p{number}_{index}_")}'
                                 f"<figcaption>{html.escape(revisions)}</figcaption></figure>")
                elif entry.get("type") == "image":
                    png = base64.b64encode(Path(entry["url"]).read_bytes()).decode()
                    parts.append(f'<figure><img alt="{html.escape(title)}" '
                                 f'src="data:image/png;base64,{png}">'
                                 f"<figcaption>{html.escape(revisions)}</figcaption></figure>")
            failed = [f"{e.get('rev')}: {e.get('msg')}" for e in errors if e.get("name") == title]
            note = f"<pre>{html.escape(chr(10).join(failed))}</pre>" if failed else ""
            sections.append(f"<section><h2>{html.escape(title)}</h2>{note}{''.join(parts)}"
                            "</section>")
    other = [e for e in errors if e.get("name") not in plots]
    note = f"<pre>{html.escape(json.dumps(other, indent=1))}</pre>" if other else ""
    heading = "dvc plots " + (f"diff {' '.join(revs)}" if revs else "show (workspace)")
    page = out / "index.html"
    write_text(
        page, "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(heading)}</title><style>figure{{display:inline-block;"
        "margin:0 1em 1em 0;vertical-align:top}img{max-width:100%}</style></head><body>"
        f"<h1>{html.escape(heading)}</h1>{note}{''.join(sections)}</body></html>\n")
    return page
