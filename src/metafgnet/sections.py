"""Building blocks of the typed parameters (:mod:`metafgnet.params`, :mod:`metafgnet.tuning.
schema`): the frozen, extra-key-refusing section decorator and the constrained number types."""

from __future__ import annotations

from typing import Annotated, TypeVar, cast, dataclass_transform

from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass

PosInt = Annotated[int, Field(gt=0)]
NonNegInt = Annotated[int, Field(ge=0)]
PosFloat = Annotated[float, Field(gt=0)]
Fraction = Annotated[float, Field(ge=0, le=1)]


_Section = TypeVar("_Section")


# dataclass_transform: type checkers see each section as the frozen dataclass it becomes
@dataclass_transform(frozen_default=True, field_specifiers=(Field,))
def section(cls: type[_Section]) -> type[_Section]:
    """A frozen pydantic dataclass that refuses unknown keys (``extra="forbid"``)."""
    return cast("type[_Section]", dataclass(frozen=True, config=ConfigDict(extra="forbid"))(cls))
