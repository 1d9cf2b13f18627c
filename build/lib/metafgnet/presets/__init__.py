"""Paper presets: params override files for the published settings (docs/method.md).

A preset holds only what differs from the dataclass defaults of :class:`metafgnet.params.Params`;
:func:`resolve_preset` merges it onto those defaults and validates the result, so applying a
preset writes a complete, checked ``params.yaml``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from metafgnet.params import Params, ParamsError, deep_merge, parse_params, read_yaml, to_dict


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
