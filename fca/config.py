"""Declaring config fields with their constraints.

Each stage's config is a frozen dataclass that lives next to the code that uses it
(nanoGPT style). A field's metadata says what values are legal; `build_config`
enforces it, for params.yaml (`pipeline/params.py`, before any work starts) and for
the configs stored in checkpoints, so a bad value is an error that names the key.
"""

# Not pydantic (2.14.4 is in requirements.lock only as mlflow's dependency), measured by benchmarks/libraries.py: import
# 75 ms + about 30 ms to build Params' schema vs 2-4 ms for this whole check of params.yaml; each error is 4 lines and a
# URL; its lax mode takes `fdc.augment: "yes"` and `fdc.steps: "7"` (errors here), its strict mode refuses `fdc.steps: 5e4`.

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Collection
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


class ConfigError(ValueError):
    """A config mapping that does not validate; the message names the key and the value."""


def _show(value: Any, limit: int = 60) -> str:
    """repr(value), cut short so that a message stays one readable line."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _join(keys: Any) -> str:
    return ", ".join(sorted(str(k) for k in keys))


def _is_union(origin: Any) -> bool:
    return origin is typing.Union or (origin is not None and origin is getattr(types, "UnionType", None))


def _coerce(value: Any, tp: Any, key: str, ignore_unknown: bool = False) -> Any:
    """Check `value` against the annotation `tp`; return it in the declared type (int -> float, list -> tuple).

    Floats must be finite; an int field takes a float only when it is a whole number
    (so `steps: 5e4` reads as 50000, `size: 64.5` is an error).
    """
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if _is_union(origin):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key, ignore_unknown)
    if dataclasses.is_dataclass(tp):
        return build_config(tp, value, key, ignore_unknown=ignore_unknown)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} = {_show(value)}: expected a list")
        item_tp = args[0] if args else Any
        items = [_coerce(v, item_tp, f"{key}[{i}]", ignore_unknown) for i, v in enumerate(value)]
        if origin is tuple and len(args) > 1 and args[1] is not Ellipsis and len(items) != len(args):
            raise ConfigError(f"{key} = {_show(value)}: expected {len(args)} items")
        return tuple(items) if origin is tuple else items
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} = {_show(value)}: expected true or false")
        return value
    if tp is int:
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{key} = {value!r}: must be finite")
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} = {_show(value)}: expected an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} = {_show(value)}: expected a number")
        try:
            value = float(value)
        except OverflowError:  # an int too large for a float
            raise ConfigError(f"{key} = {_show(value)}: must be finite") from None
        if not math.isfinite(value):
            raise ConfigError(f"{key} = {value!r}: must be finite")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} = {_show(value)}: expected a string")
        return value
    raise TypeError(f"{key}: unsupported annotation {tp!r}")


def build_config(
    cls: type,
    raw: Any,
    key: str = "",
    *,
    ignore_unknown: bool = False,
    required: Collection[str] | None = None,
) -> Any:
    """Build the config dataclass `cls` from the mapping `raw`, checking keys, types and constraints.

    The one validation behind params.yaml (`pipeline/params.py`) and the configs stored
    in checkpoints. `key` is the dotted name of `raw` in messages ("generator", "config").
    Unknown keys are errors unless `ignore_unknown` (checkpoints of older versions);
    every field must be present unless `required` names the ones that must, the others
    then take their defaults. Raises ConfigError naming the key and value at fault.
    """
    where = key or "top level"
    if not isinstance(raw, dict):
        kind = "nothing" if raw is None else f"{type(raw).__name__} {_show(raw)}"
        raise ConfigError(f"{where}: expected a mapping of keys, got {kind}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    expected = set(fields)
    variants = getattr(cls, "VARIANTS", None)
    if variants is not None:
        # A tagged union: `type` picks which of the other keys belong.
        kind = raw.get("type")
        if not isinstance(kind, str) or kind not in variants:
            raise ConfigError(f"{key}.type = {_show(kind)}: must be one of {sorted(variants)}")
        expected = {"type", *variants[kind]}
    unknown = set(raw) - expected
    if unknown and not ignore_unknown:
        raise ConfigError(f"{where}: unknown key(s) {_join(unknown)} (allowed: {_join(expected)})")
    must = expected if required is None else expected & set(required)
    missing = must - set(raw)
    if missing:
        raise ConfigError(f"{where}: missing key(s) {_join(missing)}")
    hints = typing.get_type_hints(cls)
    values = {}
    for name in sorted(expected & set(raw)):
        sub = f"{key}.{name}" if key else name
        value = _coerce(raw[name], hints[name], sub, ignore_unknown)
        try:
            check_field(fields[name], value, sub, shown=raw[name])
        except ValueError as e:
            raise ConfigError(str(e)) from None
        values[name] = value
    try:
        return cls(**values)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{where}: {e}") from None
