"""The one params loader: reads params.yaml and validates every section before any work.

Unknown keys, missing keys, wrong types and out-of-range values are errors that
name the file, the key and the value. Each section maps to a frozen dataclass
declared next to the code that uses it (see `fca/config.py`).
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any

import yaml

from fca.config import check_field
from fca.data.download import DownloadConfig
from fca.data.patches import PatchesConfig
from fca.degrade import DegradeConfig
from fca.evaluate import EvaluateConfig
from fca.report import ReportConfig
from fca.train.fdc import FDCConfig
from fca.train.generator import GeneratorConfig

# Section name in params.yaml -> its config class. The order is the stage order.
SECTIONS: dict[str, type] = {
    "download": DownloadConfig,
    "patches": PatchesConfig,
    "fdc": FDCConfig,
    "generator": GeneratorConfig,
    "degrade": DegradeConfig,
    "evaluate": EvaluateConfig,
    "report": ReportConfig,
}


class ParamsError(ValueError):
    """A params file that does not validate; the message names the file and key."""


@dataclasses.dataclass(frozen=True)
class Params:
    download: DownloadConfig
    patches: PatchesConfig
    fdc: FDCConfig
    generator: GeneratorConfig
    degrade: DegradeConfig
    evaluate: EvaluateConfig
    report: ReportConfig


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against the annotation `tp`; return it in the declared type (int -> float, list -> tuple)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union or (origin is not None and str(origin) == "<class 'types.UnionType'>"):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise ParamsError(f"{key} = {value!r}: expected a list")
        item_tp = args[0] if args else Any
        items = [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
        if origin is tuple and len(args) > 1 and args[1] is not Ellipsis and len(items) != len(args):
            raise ParamsError(f"{key} = {value!r}: expected {len(args)} items")
        return tuple(items) if origin is tuple else items
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ParamsError(f"{key} = {value!r}: expected true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParamsError(f"{key} = {value!r}: expected an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ParamsError(f"{key} = {value!r}: expected a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ParamsError(f"{key} = {value!r}: expected a string")
        return value
    raise TypeError(f"{key}: unsupported annotation {_type_name(tp)}")


def _build(cls: type, raw: Any, key: str) -> Any:
    """Build dataclass `cls` from the mapping `raw`, checking keys, types and constraints."""
    if not isinstance(raw, dict):
        raise ParamsError(f"{key}: expected a mapping of keys, got {raw!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    expected = set(fields)
    variants = getattr(cls, "VARIANTS", None)
    if variants is not None:
        # A tagged union: `type` picks which of the other keys belong.
        kind = raw.get("type")
        if kind not in variants:
            raise ParamsError(f"{key}.type = {kind!r}: must be one of {sorted(variants)}")
        expected = {"type", *variants[kind]}
    unknown = sorted(set(raw) - expected)
    if unknown:
        raise ParamsError(f"{key or 'top level'}: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(expected))})")
    missing = sorted(expected - set(raw))
    if missing:
        raise ParamsError(f"{key or 'top level'}: missing key(s) {', '.join(missing)}")
    hints = typing.get_type_hints(cls)
    values = {}
    for name in sorted(expected):
        sub = f"{key}.{name}" if key else name
        value = _coerce(raw[name], hints[name], sub)
        try:
            check_field(fields[name], value, sub, shown=raw[name])
        except ValueError as e:
            raise ParamsError(str(e)) from None
        values[name] = value
    try:
        return cls(**values)
    except (ValueError, TypeError) as e:
        raise ParamsError(f"{key}: {e}") from None


def parse_params(raw: Any, source: str = "params") -> Params:
    """Validate an already-parsed params mapping; errors are prefixed with `source`."""
    try:
        return _build(Params, raw, "")  # type: ignore[return-value]
    except ParamsError as e:
        raise ParamsError(f"{source}: {e}") from None


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate a params file. Raises ParamsError naming the file and key at fault."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: params file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ParamsError(f"{path}: not valid YAML: {e}") from None
    return parse_params(raw, str(path))


def section_dict(config: Any) -> dict[str, Any]:
    """A config dataclass as a flat {dotted.key: value} dict, e.g. for MLflow params."""
    out: dict[str, Any] = {}

    def walk(obj: Any, prefix: str) -> None:
        for f in dataclasses.fields(obj):
            v = getattr(obj, f.name)
            if dataclasses.is_dataclass(v):
                walk(v, f"{prefix}{f.name}.")
            elif v is not None:
                out[f"{prefix}{f.name}"] = v

    walk(config, "")
    return out
