"""Paper presets: params override files for the published settings (docs/method.md).

A preset holds only what differs from the dataclass defaults of :class:`metafgnet.params.Params`;
:func:`resolve_preset` merges it onto those defaults and validates the result, so applying a
preset writes a complete, checked ``params.yaml``. :func:`apply_preset` writes it into the
existing file in place (its comments and key order are kept) and refuses to overwrite edits
that git does not hold unless forced.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import yaml

from metafgnet.errors import UserError
from metafgnet.io import parse_yaml_text, read_yaml, write_text
from metafgnet.params import Params, ParamsError, deep_merge, parse_params, to_dict
from metafgnet.provenance import git_output
from metafgnet.yaml_edit import render_into


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
    written into the YAML text ``existing`` with its comments and key order kept
    (:func:`metafgnet.yaml_edit.render_into`; second item ``False`` when a fresh document
    had to be written)."""
    return render_into(existing, raw, lambda text: _reads_back(text, params))


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


def _reads_back(text: str, params: Params) -> bool:
    """Whether ``text`` loads (as :func:`metafgnet.params.load_params` reads it) to ``params``."""
    try:
        return parse_params(parse_yaml_text(text) or {}) == params
    except (yaml.YAMLError, ParamsError):
        return False
