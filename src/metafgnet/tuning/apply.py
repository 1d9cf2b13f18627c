"""``metafgnet tune apply``: merge ``best_params.yaml`` into ``params.yaml``, comments kept.

The tuned values then live where every stage reads its settings, so ``dvc params diff`` shows
them and ``dvc repro`` retrains what they affect. Only the value of each ``section.key`` line is
rewritten (its indentation and trailing comment stay); a key missing from its section is added
under the section header; a missing section is appended. The result is validated as a whole
before ``params.yaml`` is replaced (atomically).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from metafgnet.io import parse_yaml_text, read_yaml, write_text
from metafgnet.params import ParamsError, flatten, parse_params

_SECTION = re.compile(r"^(?P<name>[A-Za-z_][\w]*):\s*(#.*)?$")
_KEY = re.compile(r"^(?P<indent>\s+)(?P<name>[A-Za-z_][\w]*):(?P<sp>\s*)(?P<value>[^#]*?)"
                  r"(?P<tail>\s+#.*)?$")


def scalar(value: Any) -> str:
    """``value`` as a one-line YAML scalar (``0.0123``, ``true``, ``second``)."""
    return yaml.safe_dump(value, default_flow_style=True).split("\n", 1)[0]


def _section_span(lines: list[str], section: str) -> tuple[int, int] | None:
    """(header index, end index) of top-level ``section:`` in ``lines``."""
    start = next((i for i, line in enumerate(lines)
                  if (m := _SECTION.match(line)) and m["name"] == section), None)
    if start is None:
        return None
    end = start + 1
    while end < len(lines) and (not lines[end].strip() or lines[end][0] in " \t#"):
        end += 1
    return start, end


def set_value(text: str, section: str, key: str, value: Any) -> str:
    """``text`` (a params file) with ``section.key`` set to ``value``."""
    lines = text.splitlines()
    span = _section_span(lines, section)
    if span is None:
        suffix = "" if text.endswith("\n") or not text else "\n"
        return f"{text}{suffix}\n{section}:\n  {key}: {scalar(value)}\n"
    start, end = span
    indents = [m["indent"] for line in lines[start + 1:end] if (m := _KEY.match(line))]
    indent = min(indents, key=len) if indents else "  "
    for i in range(start + 1, end):
        m = _KEY.match(lines[i])
        if m and m["indent"] == indent and m["name"] == key:
            line = f"{indent}{key}:{m['sp'] or ' '}{scalar(value)}"
            if m["tail"]:  # keep the comment in its column
                comment = m["tail"].lstrip()
                line += " " * max(1, len(lines[i]) - len(comment) - len(line)) + comment
            lines[i] = line
            return "\n".join(lines) + "\n"
    lines.insert(start + 1, f"{indent}{key}: {scalar(value)}")
    return "\n".join(lines) + "\n"


def apply_best(best_file: str | Path, params_file: str | Path) -> dict[str, tuple[Any, Any]]:
    """Merge ``best_file`` into ``params_file``; return ``{dotted key: (old, new)}`` changed.

    Raises :class:`~metafgnet.params.ParamsError` when the merged file would be invalid (the
    params file is then left untouched).
    """
    best_file, params_file = Path(best_file), Path(params_file)
    if not best_file.is_file():
        raise ParamsError(f"{best_file} not found: run `metafgnet tune` first")
    best = flatten(read_yaml(best_file) or {})
    text = params_file.read_text()
    old = flatten(read_yaml(params_file) or {})
    for dotted, value in best.items():
        section, _, key = dotted.partition(".")
        if "." in key:
            raise ParamsError(f"{best_file}: {dotted}: only section.key entries can be applied")
        text = set_value(text, section, key, value)
    merged = parse_yaml_text(text)
    parse_params(merged)  # raises ParamsError naming the key
    if flatten(merged) != {**old, **best}:
        raise ParamsError(f"could not rewrite {params_file} faithfully (unusual layout); merge "
                          f"{best_file} by hand")
    write_text(params_file, text)
    return {k: (old.get(k), v) for k, v in best.items() if old.get(k) != v}

