"""Declaring config fields with their constraints.

Each stage's config is a frozen dataclass that lives next to the code that uses it
(nanoGPT style). A field's metadata says what values are legal; the one params
loader (`pipeline/params.py`) enforces it, so a bad value is an error that names
the key before any work starts.
"""

from __future__ import annotations

import dataclasses
from typing import Any


def param(
    default: Any = dataclasses.MISSING,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    choices: tuple | None = None,
    odd: bool = False,
    nonempty: bool = False,
    help: str = "",
) -> Any:
    """A dataclass field with constraints: bounds (ge/gt/le/lt, also applied to each list item), choices, odd integers, non-empty strings/lists."""
    meta = {"ge": ge, "gt": gt, "le": le, "lt": lt, "choices": choices, "odd": odd, "nonempty": nonempty, "help": help}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def check_field(f: dataclasses.Field, value: Any, key: str, shown: Any = dataclasses.MISSING) -> None:
    """Raise ValueError naming `key` if `value` breaks the constraints declared on field `f`.

    `shown` is what the message quotes (the value as the user wrote it); default: `value`.
    """
    m = f.metadata
    if shown is dataclasses.MISSING:
        shown = value
    items = value if isinstance(value, (list, tuple)) else [value]
    for v in items:
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            if m.get("ge") is not None and v < m["ge"]:
                raise ValueError(f"{key} = {shown!r}: must be >= {m['ge']}")
            if m.get("gt") is not None and v <= m["gt"]:
                raise ValueError(f"{key} = {shown!r}: must be > {m['gt']}")
            if m.get("le") is not None and v > m["le"]:
                raise ValueError(f"{key} = {shown!r}: must be <= {m['le']}")
            if m.get("lt") is not None and v >= m["lt"]:
                raise ValueError(f"{key} = {shown!r}: must be < {m['lt']}")
            if m.get("odd") and int(v) % 2 == 0:
                raise ValueError(f"{key} = {shown!r}: must be odd")
        if m.get("choices") is not None and v not in m["choices"]:
            raise ValueError(f"{key} = {v!r}: must be one of {list(m['choices'])}")
    if m.get("nonempty") and len(value) == 0:
        raise ValueError(f"{key} = {shown!r}: must not be empty")
