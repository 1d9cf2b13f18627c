"""Building blocks of the typed parameters (:mod:`metafgnet.params`, :mod:`metafgnet.tuning.
schema`): the frozen, extra-key-refusing section decorator and the constrained number types."""

from __future__ import annotations

from typing import Annotated

from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass

PosInt = Annotated[int, Field(gt=0)]
NonNegInt = Annotated[int, Field(ge=0)]
PosFloat = Annotated[float, Field(gt=0)]
Fraction = Annotated[float, Field(ge=0, le=1)]


def section(cls):
    """A frozen pydantic dataclass that refuses unknown keys (``extra="forbid"``)."""
    return dataclass(frozen=True, config=ConfigDict(extra="forbid"))(cls)
