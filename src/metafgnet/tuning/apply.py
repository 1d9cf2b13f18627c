"""``metafgnet tune apply``: merge ``best_params.yaml`` into ``params.yaml``, comments kept.

The tuned values then live where every stage reads its settings, so ``dvc params diff`` shows
them and ``dvc repro`` retrains what they affect. The file is rewritten in place by
:func:`metafgnet.yaml_edit.render_into` (comments, key order and spelling kept; a missing key
is added at its section's end, a missing section at the file's end). The result is validated
as a whole before ``params.yaml`` is replaced (atomically).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from metafgnet.io import parse_yaml_text, read_yaml, write_text
from metafgnet.params import ParamsError, deep_merge, flatten, parse_params
from metafgnet.yaml_edit import render_into


def apply_best(best_file: str | Path, params_file: str | Path) -> dict[str, tuple[Any, Any]]:
    """Merge ``best_file`` into ``params_file``; return ``{dotted key: (old, new)}`` changed.

    Raises :class:`~metafgnet.params.ParamsError` when the merged file would be invalid (the
    params file is then left untouched).
    """
    best_file, params_file = Path(best_file), Path(params_file)
    if not best_file.is_file():
        raise ParamsError(f"{best_file} not found: run `metafgnet tune` first")
    nested = read_yaml(best_file) or {}
    best = flatten(nested)
    raw = read_yaml(params_file) or {}
    old = flatten(raw)
    for dotted in best:
        if "." in dotted.partition(".")[2]:
            raise ParamsError(f"{best_file}: {dotted}: only section.key entries can be applied")
    merged = deep_merge(raw, nested)
    parse_params(merged)  # raises ParamsError naming the key
    text, _ = render_into(params_file.read_text(), merged,
                          lambda text: parse_yaml_text(text) == merged)
    write_text(params_file, text)
    return {k: (old.get(k), v) for k, v in best.items() if old.get(k) != v}
