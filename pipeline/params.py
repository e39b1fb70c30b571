"""The one params loader: reads params.yaml and validates every section before any work.

Unknown keys, missing keys, wrong types, NaN/inf and out-of-range values are errors
that name the file, the key and the value. Each section maps to a frozen dataclass
declared next to the code that uses it; `fca.config.build_config` checks a section
against it (the same check the configs stored in checkpoints go through; why not pydantic:
the comment at the top of fca/config.py). On top of
that this module reads the YAML (numbers in scientific notation are numbers,
duplicate keys are errors, a syntax error is one line naming file, line and column)
and checks the limits that tie one section to another (`_check_cross_section`).
"""

from __future__ import annotations

import dataclasses
import typing
import re
from pathlib import Path
from typing import Any

import yaml

from fca.config import ConfigError, build_config
from fca.data.download import DownloadConfig
from fca.data.patches import PatchesConfig
from fca.degrade import DegradeConfig
from fca.evaluate import EvaluateConfig
from fca.report import ReportConfig
from fca.train.fdc import FDCConfig
from fca.train.generator import GeneratorConfig
from fca.train.sr import TrainSRConfig

# Section name in params.yaml -> its config class. The order is the stage order.
SECTIONS: dict[str, type] = {
    "download": DownloadConfig,
    "patches": PatchesConfig,
    "fdc": FDCConfig,
    "generator": GeneratorConfig,
    "degrade": DegradeConfig,
    "evaluate": EvaluateConfig,
    "train_sr": TrainSRConfig,
    "report": ReportConfig,
}


class ParamsError(ConfigError):
    """A params file that does not validate; the message names the file and key."""


@dataclasses.dataclass(frozen=True)
class Params:
    download: DownloadConfig
    patches: PatchesConfig
    fdc: FDCConfig
    generator: GeneratorConfig
    degrade: DegradeConfig
    evaluate: EvaluateConfig
    train_sr: TrainSRConfig
    report: ReportConfig


# --------------------------------------------------------------------------- YAML

# YAML 1.2's floats (PyYAML implements YAML 1.1, whose floats need a dot and a signed
# exponent, so `1e-3` and `5e4` would be strings): a dot or an exponent, or both.
_FLOAT = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)[eE][-+]?[0-9]+
    |[-+]?\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)
_FLOAT_TAG = "tag:yaml.org,2002:float"
_MERGE_TAG = "tag:yaml.org,2002:merge"


class ParamsLoader(yaml.SafeLoader):
    """yaml.SafeLoader with YAML 1.2 floats: `1e-3`, `5e4`, `-2E+1` are numbers (PyYAML reads them as strings)."""

    yaml_implicit_resolvers = {
        first: [(tag, _FLOAT if tag == _FLOAT_TAG else regexp) for tag, regexp in resolvers]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _yaml_error(path: Path, text: str, e: yaml.YAMLError) -> ParamsError:
    """A YAML error as one line: the file, line and column, and what is wrong."""
    if isinstance(e, yaml.reader.ReaderError):
        line = text.count("\n", 0, e.position) + 1
        column = e.position - (text.rfind("\n", 0, e.position) + 1) + 1
        char = chr(e.character) if isinstance(e.character, int) else e.character
        return ParamsError(f"{path}: not valid YAML at line {line}, column {column}: character {char!r} is not allowed")
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    problem = _one_line(getattr(e, "problem", None) or e)
    context = getattr(e, "context", None)
    if context:
        cmark = getattr(e, "context_mark", None)
        at = f" at line {cmark.line + 1}" if cmark is not None and mark is not None and cmark.line != mark.line else ""
        problem += f" ({_one_line(context)}{at})"
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return ParamsError(f"{path}: not valid YAML{where}: {problem}")


def _check_duplicates(path: Path, node: yaml.Node | None, where: str = "", done: set[int] | None = None) -> None:
    """Raise ParamsError for a key set twice in one mapping (PyYAML keeps the last silently)."""
    done = set() if done is None else done
    if node is None or id(node) in done:
        return
    done.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first: dict[str, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:  # `<<: *anchor` merges may be overridden on purpose
                _check_duplicates(path, value_node, where, done)
                continue
            name = key_node.value if isinstance(key_node, yaml.ScalarNode) else "?"
            dotted = f"{where}.{name}" if where else name
            line = key_node.start_mark.line + 1
            if isinstance(key_node, yaml.ScalarNode):
                if name in first:
                    raise ParamsError(f"{path}: duplicate key {dotted} on line {line} (first on line {first[name]})")
                first[name] = line
            _check_duplicates(path, value_node, dotted, done)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _check_duplicates(path, item, f"{where}[{i}]", done)


def read_yaml(path: str | Path) -> Any:
    """Parse a YAML file with `ParamsLoader`; every problem is one ParamsError line naming the file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ParamsError(f"{path}: cannot read the params file ({e.strerror or e})") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ParamsError(
            f"{path}: not UTF-8 text (byte 0x{data[e.start]:02x} on line {line}, offset {e.start}); save the file as UTF-8"
        ) from None
    loader = None
    try:
        loader = ParamsLoader(text)
        node = loader.get_single_node()
        _check_duplicates(path, node)
        return loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as e:
        raise _yaml_error(path, text, e) from None
    except RecursionError:
        raise ParamsError(f"{path}: not valid YAML: nested too deeply") from None
    finally:
        if loader is not None:
            loader.dispose()


# --------------------------------------------------------------------------- checks across sections


def _check_cross_section(params: Params) -> None:
    """Limits that tie one section's values to another's, checked here so that a bad
    combination stops `dvc repro` before the first stage, not when the later stage
    runs. The stages keep their own checks (they guard library users too)."""
    p, g, f, e = params.patches, params.generator, params.fdc, params.evaluate
    lr_side = max(1, round(g.patch_size / g.scale))  # fca.train.generator.lr_side
    uses_fdc = g.loss in ("fdc", "both") and g.w_fdc > 0
    uses_spectral = g.loss in ("spectral", "both") and g.w_spectral > 0

    # train_generator crops generator.patch_size from the patches.
    if g.patch_size > p.size:
        raise ParamsError(
            f"generator.patch_size = {g.patch_size}: must be <= patches.size = {p.size} (the generator trains on crops of the patches)"
        )
    if lr_side <= g.kernel_size // 2:
        raise ParamsError(
            f"generator.kernel_size = {g.kernel_size}: the generator's LR crops (generator.patch_size / generator.scale = "
            f"{lr_side} px) must be larger than {g.kernel_size // 2} px"
        )
    if uses_spectral and g.spectral_bins > lr_side // 2:
        raise ParamsError(
            f"generator.spectral_bins = {g.spectral_bins}: must be <= {lr_side // 2}, half the generator's LR crop "
            f"(generator.patch_size {g.patch_size} / generator.scale {g.scale:g} = {lr_side} px)"
        )
    if uses_fdc:
        fdc_side = min(lr_side, max(1, round(g.patch_size / f.scale_end)))  # fca.train.generator._fdc_references
        if fdc_side < 8:
            raise ParamsError(
                f"generator.patch_size = {g.patch_size}: the comparator (generator.loss = {g.loss}) needs crops of at least "
                f"8 px, but generator.patch_size / generator.scale gives {fdc_side} px"
            )
    # The spectral estimator and its consistency loss (getattr: fields of a GeneratorConfig still in the making).
    estimator, bins = getattr(g, "estimator", None), getattr(g, "estimator_bins", None)
    if estimator == "spectral" and bins is not None and bins[0] > lr_side // 2:
        raise ParamsError(
            f"generator.estimator_bins = {list(bins)}: at most {lr_side // 2} radial bins, half the generator's LR crop "
            f"(generator.patch_size {g.patch_size} / generator.scale {g.scale:g} = {lr_side} px)"
        )
    if getattr(g, "w_consistency", 0) > 0 and estimator is not None and estimator != "spectral":
        raise ParamsError(
            f"generator.w_consistency = {g.w_consistency:g}: the consistency loss needs generator.estimator = spectral "
            f"(got {estimator}); set w_consistency: 0 for the paper's estimator"
        )
    sigmas = getattr(g, "consistency_sigma", None)
    if sigmas is not None and sigmas[0] > sigmas[1]:
        raise ParamsError(f"generator.consistency_sigma = {list(sigmas)}: the first value must not exceed the second")
    # train_fdc shrinks patches by up to max(scale_start, eval_scales) and still crops fdc.patch_size.
    shrink = max(f.scale_start, *f.eval_scales)
    if shrink * f.patch_size > p.size + 1e-6:
        raise ParamsError(
            f"fdc.patch_size = {f.patch_size}: patches of patches.size = {p.size} shrunk by {shrink:g} "
            f"(fdc.scale_start / fdc.eval_scales) are smaller; need fdc.patch_size <= {int(p.size / shrink + 1e-6)}"
        )
    # evaluate: an SR probe with pixel shuffle, on LR/HR pairs made from whole patches.
    if g.scale != int(g.scale):
        raise ParamsError(f"generator.scale = {g.scale:g}: the evaluate stage's SR probe needs a whole-number scale")
    s = int(g.scale)
    if p.size % s:
        raise ParamsError(f"patches.size = {p.size}: must be a multiple of generator.scale = {s} (the evaluate stage downscales whole patches)")
    most = (p.size // s - 1) // 2
    if e.density_bins > most:
        raise ParamsError(
            f"evaluate.density_bins = {e.density_bins}: must be <= {most}; LR patches of patches.size / generator.scale = "
            f"{p.size // s} px resolve at most {most} radial bins"
        )
    if e.sr.patch_size % s:
        raise ParamsError(f"evaluate.sr.patch_size = {e.sr.patch_size}: must be a multiple of generator.scale = {s}")
    if e.sr.patch_size > p.size:
        raise ParamsError(f"evaluate.sr.patch_size = {e.sr.patch_size}: must be <= patches.size = {p.size}")
    # train_sr crops its pairs from the whole training patches, like the SR probe.
    t = params.train_sr
    if t.patch_size % s:
        raise ParamsError(f"train_sr.patch_size = {t.patch_size}: must be a multiple of generator.scale = {s}")
    if t.patch_size > p.size:
        raise ParamsError(f"train_sr.patch_size = {t.patch_size}: must be <= patches.size = {p.size}")


# The folder `patches.blur.type: file` kernels must live in. dvc.yaml's patches stage
# declares it as a dep (deps are static, so the folder, not the one file params.yaml
# names, is what both engines watch; Snakemake via pipeline/dag.py sees its files).
KERNELS_DIR = "kernels"


def _check_kernel_file(params: Params) -> None:
    """A `file` kernel must be a relative path inside kernels/, else editing it would not re-run `patches`."""
    blur = params.patches.blur
    if blur.type != "file" or blur.path is None:
        return
    parts = Path(blur.path).parts
    normal = Path(*[p for p in parts if p != "."]).parts if parts else ()
    if Path(blur.path).is_absolute() or ".." in normal or len(normal) < 2 or normal[0] != KERNELS_DIR:
        raise ParamsError(
            f"patches.blur.path = {blur.path!r}: a kernel file must be inside {KERNELS_DIR}/ (a path relative to the project, "
            f"e.g. {KERNELS_DIR}/my_kernel.npy): dvc.yaml's patches stage depends on that folder, so a changed kernel "
            f"re-runs it (see {KERNELS_DIR}/README.md)"
        )


# --------------------------------------------------------------------------- loading


def parse_params(raw: Any, source: str = "params") -> Params:
    """Validate an already-parsed params mapping; errors are prefixed with `source`."""
    sections = ", ".join(SECTIONS)
    if raw is None:
        raise ParamsError(f"{source}: holds no settings (empty, or only comments); expected a mapping of sections ({sections})")
    if not isinstance(raw, dict):
        kind = _KINDS.get(type(raw), type(raw).__name__)
        raise ParamsError(f"{source}: the top level is a {kind} ({_short(raw)}), not a mapping of sections ({sections})")
    try:
        params = build_config(Params, raw, "")
        _check_cross_section(params)
        _check_kernel_file(params)
    except ConfigError as e:
        raise ParamsError(f"{source}: {e}") from None
    return params


_KINDS = {list: "list", str: "string", int: "number", float: "number", bool: "boolean"}


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate a params file. Raises ParamsError naming the file and key at fault."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: params file not found")
    return parse_params(read_yaml(path), str(path))


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


def with_defaults(raw: dict[str, Any]) -> dict[str, Any]:
    """`raw` params (plain YAML data) with every section and key it lacks at the dataclass default,
    as plain YAML data: e.g. a small params file (tests/params_tiny.yaml) completed into one the
    loader accepts. The defaults are the values params.yaml holds (tests/pipeline/test_defaults.py)."""

    def plain(v: Any) -> Any:
        if isinstance(v, (tuple, list)):
            return [plain(x) for x in v]
        return {k: plain(x) for k, x in v.items()} if isinstance(v, dict) else v

    return raw | {name: plain(dataclasses.asdict(kind())) | raw.get(name, {}) for name, kind in typing.get_type_hints(Params).items()}
