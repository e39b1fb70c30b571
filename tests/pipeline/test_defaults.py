"""One source of defaults: each config dataclass built with no arguments is params.yaml.

The dataclasses are what library code, tests and benchmarks get when they do not pass
a value; params.yaml is what the pipeline runs. When they differ, a number measured
with `FDCConfig()` is not the number the pipeline gives. So every field of every
section's dataclass (nested ones included, e.g. evaluate.sr) must default to
params.yaml's value; a failure names each differing field and both values.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from pipeline.params import SECTIONS, load_params

ROOT = Path(__file__).resolve().parents[2]


def _differences(default: Any, shipped: Any, key: str) -> list[str]:
    """'key: default X != params.yaml Y' for each leaf field where the two differ."""
    out = []
    for f in dataclasses.fields(shipped):
        a, b = getattr(default, f.name), getattr(shipped, f.name)
        sub = f"{key}.{f.name}"
        if dataclasses.is_dataclass(a) and dataclasses.is_dataclass(b) and type(a) is type(b):
            out += _differences(a, b, sub)
            # The nested class on its own, too (e.g. SRConfig() as the SR trainer's default),
            # except tagged unions (BlurConfig): without `type` and its keys they are not a value.
            cls = type(b)
            if getattr(cls, "VARIANTS", None) is None:
                out += [f"{d} (as {cls.__name__}())" for d in _differences(cls(), b, sub)]
        elif a != b or type(a) is not type(b):
            out.append(f"{sub}: {type(default).__name__} default {a!r} != params.yaml {b!r}")
    return sorted(set(out))


@pytest.fixture(scope="module")
def shipped():
    return load_params(ROOT / "params.yaml")


@pytest.mark.parametrize("section", list(SECTIONS))
def test_config_defaults_are_params_yaml(section, shipped):
    cls = SECTIONS[section]
    diffs = _differences(cls(), getattr(shipped, section), section)
    assert not diffs, f"{cls.__module__}.{cls.__name__}() differs from params.yaml in {len(diffs)} field(s):\n" + "\n".join(diffs)


def test_the_comparison_sees_a_changed_default(shipped):
    """The check has teeth: a default moved away from params.yaml is reported by name, with both values."""
    fdc = SECTIONS["fdc"]()
    changed = dataclasses.replace(fdc, eval_repeats=fdc.eval_repeats + 1)
    assert _differences(changed, shipped.fdc, "fdc") == [
        f"fdc.eval_repeats: FDCConfig default {fdc.eval_repeats + 1} != params.yaml {shipped.fdc.eval_repeats}"
    ]
    evaluate = SECTIONS["evaluate"]()
    nested = dataclasses.replace(evaluate, sr=dataclasses.replace(evaluate.sr, steps=evaluate.sr.steps + 1))
    assert any(d.startswith("evaluate.sr.steps: SRConfig default") for d in _differences(nested, shipped.evaluate, "evaluate"))
