"""Paper presets: params override files for the published settings (docs/method.md).

A preset holds only what differs from the dataclass defaults of :class:`metafgnet.params.Params`;
:func:`resolve_preset` merges it onto those defaults and validates the result, so applying a
preset writes a complete, checked ``params.yaml``. :func:`apply_preset` writes it into the
existing file in place (its comments and key order are kept) and refuses to overwrite edits
that git does not hold unless forced.
"""

from __future__ import annotations

import io
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError as RuamelYAMLError
from ruamel.yaml.scalarstring import DoubleQuotedScalarString

from metafgnet.errors import UserError
from metafgnet.io import write_text
from metafgnet.params import (
    Params,
    ParamsError,
    deep_merge,
    parse_params,
    parse_yaml_text,
    read_yaml,
    to_dict,
)
from metafgnet.provenance import git_output


class UncommittedEditsError(UserError):
    """The file a preset would be written to holds edits that git does not hold."""


def preset_names() -> list[str]:
    """Names of the shipped presets (file stems)."""
    files = resources.files(__package__).iterdir()
    return sorted(f.name.removesuffix(".yaml") for f in files if f.name.endswith(".yaml"))


def preset_path(name: str) -> Path:
    names = preset_names()
    if name not in names:
        raise ParamsError(f"unknown preset {name!r}; available: {', '.join(names)}")
    return Path(str(resources.files(__package__) / f"{name}.yaml"))


def resolve_preset(name: str, overrides: dict | None = None) -> tuple[dict, Params]:
    """The full params mapping of preset ``name`` (defaults + preset + ``overrides``), validated."""
    raw = deep_merge(to_dict(Params()), read_yaml(preset_path(name)) or {})
    if overrides:
        raw = deep_merge(raw, overrides)
    return raw, parse_params(raw)


def apply_preset(name: str, output: str | Path = "params.yaml", force: bool = False) -> bool:
    """Write preset ``name`` (resolved: defaults + preset) into ``output``.

    An existing file is updated in place: its comments and key order are kept, each value is
    set from the resolved mapping (keys missing from the file are added, keys the mapping lacks
    are removed).
    Without ``force``, a file with uncommitted edits (tracked and different from ``HEAD``; or
    untracked, or outside a git repository, and different from what would be written) is left
    untouched and :class:`UncommittedEditsError` is raised. The write is atomic.

    Returns whether the existing file's comments could be kept (``False`` when it had none to
    keep: missing, or not a YAML mapping).
    """
    raw, params = resolve_preset(name)
    output = Path(output)
    try:
        existing = output.read_text() if output.is_file() else None
    except UnicodeDecodeError:  # not YAML: written whole, once --force allows it
        existing = ""
    text, kept = render_params(raw, params, existing)
    if existing is not None and not force:
        edits = uncommitted_edits(output, text)
        if edits:
            raise UncommittedEditsError(
                f"{output} has uncommitted edits ({edits}); `metafgnet preset apply {name}` "
                f"would overwrite them. Commit or stash them first, or pass --force to "
                f"overwrite them.")
    write_text(output, text)
    return kept


def render_params(raw: dict, params: Params, existing: str | None = None) -> tuple[str, bool]:
    """YAML text of the complete params mapping ``raw`` (which validates to ``params``),
    written into the YAML text ``existing`` with its comments and key order kept.

    Falls back to a fresh document (second item ``False``) when ``existing`` is missing, not a
    mapping, or could not be updated so that it reads back as ``params``."""
    if existing is not None:
        try:
            doc = _round_trip().load(existing)
        except RuamelYAMLError:
            doc = None
        if isinstance(doc, CommentedMap):
            _update_map(doc, raw)
            text = _dump(doc)
            if _reads_back(text, params):
                return text, True
    text = _dump(_update_map(CommentedMap(), raw))
    if not _reads_back(text, params):  # pragma: no cover - a bug, not a user error
        raise AssertionError(f"the rendered params do not read back as the preset:\n{text}")
    return text, False


def uncommitted_edits(path: Path, text: str) -> str | None:
    """Why writing ``text`` to the existing file ``path`` would lose edits; ``None`` if not.

    Tracked by git: edits are the differences from ``HEAD`` (staged or not). Untracked, or
    outside a git repository: any difference from ``text`` is an edit."""
    def git(*args: str) -> str | None:
        return git_output("--literal-pathspecs", *args, cwd=path.parent)

    if git("rev-parse", "--is-inside-work-tree") == "true":
        if git("ls-files", "--error-unmatch", "--", path.name) is not None:
            changed = git("diff", "--name-only", "--no-ext-diff", "HEAD", "--", path.name)
            if changed == "":
                return None
            if changed:
                return "it differs from the last commit"
            # no HEAD yet (or git failed): judge by content, as for an untracked file
        where = "it is not committed to git"
    else:
        where = "it is not in a git repository"
    if path.read_bytes() == text.encode():
        return None
    return f"{where} and differs from what the preset writes"


def _round_trip() -> YAML:
    rt = YAML()  # round-trip mode: comments, key order, flow styles and quotes are kept
    rt.preserve_quotes = True
    rt.width = 4096  # never re-wrap the user's lines
    return rt


def _dump(doc: CommentedMap) -> str:
    buf = io.StringIO()
    _round_trip().dump(doc, buf)
    return buf.getvalue()


def _reads_back(text: str, params: Params) -> bool:
    """Whether ``text`` loads (as :func:`metafgnet.params.load_params` reads it) to ``params``."""
    try:
        return parse_params(parse_yaml_text(text) or {}) == params
    except (yaml.YAMLError, ParamsError):
        return False


def _kind(value: Any) -> str:
    if isinstance(value, bool):  # before numbers: True == 1
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "str"
    return "none" if value is None else type(value).__name__


def _same(old: Any, new: Any) -> bool:
    """Whether the file's scalar ``old`` already holds ``new`` (then its spelling is kept)."""
    return _kind(old) == _kind(new) and old == new


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
