"""Writing a mapping into existing YAML text with its comments, key order, quotes and flow
styles kept (ruamel's round-trip mode): how ``metafgnet preset apply`` and ``metafgnet tune
apply`` rewrite a params file."""

from __future__ import annotations

import copy
import io
from collections.abc import Callable
from typing import Any

import yaml
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError as RuamelYAMLError
from ruamel.yaml.scalarstring import DoubleQuotedScalarString

from metafgnet.io import parse_yaml_text


def render_into(existing: str | None, new: dict, reads_back: Callable[[str], bool]
                ) -> tuple[str, bool]:
    """YAML text of the mapping ``new``, written into the YAML text ``existing`` in place:
    each value set (keys ``existing`` lacks added, keys ``new`` lacks removed), its comments and
    key order kept.

    Falls back to a fresh document (second item ``False``) when ``existing`` is missing, not a
    mapping, or the updated text fails ``reads_back`` (the caller's check that it loads as
    ``new`` should). Raises ``AssertionError`` if even the fresh document fails it (a bug).
    """
    if existing is not None:
        try:
            doc = _round_trip().load(existing)
        except RuamelYAMLError:
            doc = None
        if isinstance(doc, CommentedMap):
            _update_map(doc, new)
            text = _dump(doc)
            if reads_back(text):
                return text, True
    text = _dump(_update_map(CommentedMap(), new))
    if not reads_back(text):  # pragma: no cover - a bug, not a user error
        raise AssertionError(f"the rendered YAML does not read back as intended:\n{text}")
    return text, False


def _round_trip() -> YAML:
    rt = YAML()  # round-trip mode: comments, key order, flow styles and quotes are kept
    rt.preserve_quotes = True
    rt.width = 4096  # never re-wrap the user's lines
    return rt


def _dump(doc: CommentedMap) -> str:
    buf = io.StringIO()
    _round_trip().dump(doc, buf)
    return buf.getvalue()


def _same(old: Any, new: Any) -> bool:
    """Whether the file's scalar ``old`` already holds ``new`` (then its spelling is kept); a
    bool never holds a number, though ``True == 1``."""
    return old == new and isinstance(old, bool) == isinstance(new, bool)


def _node(value: Any) -> Any:
    """``value`` as a new round-trip node: mappings in block style, sequences in flow style,
    strings quoted where the params loader would not read them back as the same string."""
    if isinstance(value, dict):
        return _update_map(CommentedMap(), value)
    if isinstance(value, list):
        seq = CommentedSeq(_node(v) for v in value)
        seq.fa.set_flow_style()
        return seq
    if isinstance(value, str):
        try:
            plain = parse_yaml_text(value)
        except yaml.YAMLError:
            plain = None
        if plain != value or "\n" in value:
            return DoubleQuotedScalarString(value)
    return value


def _update(old: Any, new: Any) -> Any:
    """``old`` (a node of the file) holding ``new``: updated in place where both are mappings
    or sequences, kept where it already equals ``new``, else a new node."""
    if isinstance(new, dict) and isinstance(old, CommentedMap):
        return _update_map(old, new)
    if isinstance(new, list) and isinstance(old, CommentedSeq):
        for i, value in enumerate(new):
            if i < len(old):
                old[i] = _update(old[i], value)
            else:
                old.append(_node(value))
        while len(old) > len(new):
            old.pop()
        return old
    if not isinstance(new, (dict, list)) and not isinstance(old, (dict, list)) and _same(old, new):
        return old
    return _node(new)


def _update_map(doc: CommentedMap, new: dict) -> CommentedMap:
    """Set every key of ``new`` into ``doc`` in place; remove keys ``new`` does not have."""
    for key in [k for k in doc if k not in new]:
        last = list(doc)[-1]
        del doc[key]
        if key == last and doc:
            _move_trailing_lines(doc, key, list(doc)[-1])
    for key, value in new.items():
        if key in doc:
            updated = _update(doc[key], value)
            if updated is not doc[key]:
                doc[key] = updated
        else:
            last = list(doc)[-1] if doc else None
            doc[key] = _node(value)
            if last is not None:
                _move_trailing_lines(doc, last, key)
    return doc


def _move_trailing_lines(doc: CommentedMap, old_key: Any, new_key: Any) -> None:
    """Blank lines after a mapping's old last entry (section spacing) stay at the mapping's
    end, after ``new_key``; an end-of-line comment stays with its own key."""
    items = doc.ca.items
    old, new = items.get(old_key), items.setdefault(new_key, [None, None, None, None])
    if not old or len(old) < 3 or len(new) < 3 or old[2] is None or new[2] is not None:
        return
    if old[2].value.startswith("\n"):
        old[2], new[2] = None, old[2]
    elif "\n\n" in old[2].value:  # its own comment, then the blank lines: split them
        comment, blank = old[2].value.split("\n", 1)
        moved = copy.copy(old[2])
        old[2].value, moved.value = comment + "\n", "\n" + blank
        new[2] = moved
