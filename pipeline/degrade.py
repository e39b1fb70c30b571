"""Stage `degrade` (also `fca degrade` for any folder): HR images -> realistic LR images."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import sys
import typing
from collections.abc import Sequence
from pathlib import Path

from fca.config import ConfigError, check_field
from fca.degrade import DegradeConfig, degrade_folder
from fca.train.generator import load_generator
from pipeline import stage, tracking
from pipeline.params import ParamsError, load_params, section_dict

log = logging.getLogger("fca")

DESCRIPTION = """\
Degrade every image under --input with a trained generator: for each image its
kernel is estimated (--kernel-from tiles averages the kernels of up to --max-tiles
textured tiles of --tile pixels; center uses one centre crop), then
LR = bicubic_down(x, s) (*) k, computed in tiles so any image size fits in bounded
memory (up to --max-pixels per image).

Give one of two outputs:
  --output OUT  OUT/lr/<name>.png, OUT/kernels/<name>.npy and .png (<name>: the
                input's path under --input, subfolders kept, suffix .png/.npy)
  --pairs OUT   an HR/LR training set for BasicSR-style paired loaders:
                OUT/hr/NAME      the input mod-cropped: the bottom rows and right
                                 columns past the last multiple of s are cut off,
                                 so HR is exactly s x LR (451x300 at x4: 448x300)
                OUT/lr_x{s}/NAME the LR image the generator makes from that HR
                                 image (112x75)
                The same NAME on both sides: the input's path without its suffix,
                subfolders joined and whitespace replaced by "_", then .png
                ("sub/my photo.jpg" -> "sub_my_photo.png"), as BasicSR's loaders
                need flat folders and names without spaces. Also OUT/meta_info.txt,
                one line "NAME (H,W,3)" per pair (the HR size, BasicSR's meta_info
                format), and OUT/kernels/NAME .npy and .png. s must be a whole number.
Both write OUT/manifest.csv: one row per file under --input, with status ok,
skipped (unreadable, too small or too large, with the reason; --on-bad-image) or
ignored (not an image file, hidden, a link out of the folder, ...: the reason says).
Two inputs whose outputs would have the same name are named before any work.
Existing outputs are never overwritten unless --overwrite is given, and
--overwrite replaces only a folder that fca wrote (it holds a .fca-output file).
OUT appears whole or not at all, and two runs cannot write the same OUT at once:
the second stops with an error naming the first one's pid.

Settings: the scale s and the kernel size are the checkpoint's. Each of
--kernel-from, --tile, --max-tiles, --min-std, --work-tile, --on-bad-image takes
its value from the option when given, else from the degrade section of the params
file (--params FILE, or ./params.yaml when the current folder has one, as in the
pipeline, whose degrade stage runs in the project folder), else from the built-in
default (the project's params.yaml values). So fca degrade runs from any folder.

examples:
  fca degrade --checkpoint models/generator.pt --input photos/ --output photos_lr/
  fca degrade --checkpoint models/generator.pt --input photos/ --pairs photos_x4/"""

# The degrade settings that are also options: params key -> option.
SETTINGS = {name: "--" + name.replace("_", "-") for name in ("kernel_from", "tile", "max_tiles", "min_std", "work_tile", "on_bad_image")}
_FIELDS = {f.name: f for f in dataclasses.fields(DegradeConfig)}
_TYPES = typing.get_type_hints(DegradeConfig)


def build() -> argparse.ArgumentParser:
    p = stage.parser("degrade", DESCRIPTION, params_help=(
        "params file whose degrade section gives the settings not given as options (default: params.yaml if the "
        "current folder has one, else none: built-in defaults); validated before any work"))
    p.add_argument("--checkpoint", type=Path, required=True, help="trained generator (.pt) from train-generator; gives the scale and kernel size")
    p.add_argument("--input", type=Path, required=True, help="folder of HR images (searched recursively)")
    out = p.add_mutually_exclusive_group(required=True)
    out.add_argument("--output", type=Path, metavar="OUT", help="output folder for LR images, kernels and the manifest (must not exist or be empty)")
    out.add_argument("--pairs", type=Path, metavar="OUT",
                     help="output folder for an HR/LR training set: OUT/hr (inputs mod-cropped to a multiple of the scale: "
                          "bottom/right remainder cut off), OUT/lr_x{s}, OUT/meta_info.txt, kernels, manifest (see above)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a non-empty output folder that an earlier fca run wrote (after the new one is complete); "
                        "any other non-empty folder is refused")
    settings = p.add_argument_group("degradation settings (default: the params file's degrade.<key>, else the value shown)")
    for name, option in SETTINGS.items():
        f = _FIELDS[name]
        m = f.metadata
        allowed = (f"one of {', '.join(m['choices'])}; " if m.get("choices") else
                   f"{m['ge']:g} to {m['le']:g}; " if m.get("ge") is not None and m.get("le") is not None else "")
        settings.add_argument(option, metavar="X" if _TYPES[name] is float else "N" if _TYPES[name] is int else "MODE",
                              help=f"{m['help']} ({allowed}default {f.default})")
    stage.add_max_pixels(p, too_big="an unreadable image (see --on-bad-image)")
    stage.add_device(p, distributed=False)
    return p


def _option_value(name: str, text: str) -> object:
    """An option's text as the setting's type, checked like params.yaml's value; ConfigError naming the option."""
    option, kind = SETTINGS[name], _TYPES[name]
    value: object = text
    if kind is int:
        try:
            number = float(text)
        except ValueError:
            number = math.nan
        if not (math.isfinite(number) and number.is_integer()):
            raise ConfigError(f"{option} {text}: expected a whole number")
        value = int(number)
    elif kind is float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise ConfigError(f"{option} {text}: expected a finite number")
    try:
        check_field(_FIELDS[name], value, option)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return value


def settings(args: argparse.Namespace) -> DegradeConfig:
    """The degrade settings of this run: options, over the params file's degrade section
    (--params, or ./params.yaml if there is one), over DegradeConfig's defaults."""
    given = {name: _option_value(name, getattr(args, name)) for name in SETTINGS if getattr(args, name) is not None}
    path, implicit = args.params, False
    if path is None and Path("params.yaml").is_file():
        path, implicit = Path("params.yaml"), True
    if path is None:
        base, source = DegradeConfig(), "built-in defaults"
    else:
        try:
            base = load_params(path).degrade
        except ParamsError as e:
            if implicit:
                raise ParamsError(f"{e} (params.yaml is read because it is in the current folder; give --params FILE, "
                                  "or run from another folder for the built-in defaults)") from None
            raise
        source = f"{path} (degrade section)"
    cfg = dataclasses.replace(base, **given)
    log.info("degrade settings from %s%s: %s", source, f", options {', '.join(SETTINGS[n] for n in given)}" if given else "",
             ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(cfg).items()))
    return cfg


def domain_warning(checkpoint: Path) -> str | None:
    """A warning when the generator in `checkpoint` learned a synthetic camera (the patches stage
    blurred the photos by a kernel it knows, as `make run`'s demo does): its degradation is that
    camera's, not the user's. None for a generator trained on photos as they are, or one whose
    checkpoint records no domain."""
    from fca.train.checkpoint import load_checkpoint

    domain = load_checkpoint(checkpoint, map_location="cpu").get("domain")
    if not isinstance(domain, dict) or not domain.get("kernel_known"):
        return None
    noise = domain.get("noise", "none")
    camera = f"photos blurred by a known {domain.get('kernel_type', '')} kernel" + (f" with {noise} noise" if noise != "none" else "")
    return (f"{checkpoint} learned a synthetic camera ({camera} in the patches stage), not yours: these LR images carry "
            "that camera's degradation. To learn your camera, train on a folder of your photos with presets/photos.yaml "
            "(docs/usage.md).")


def body(args: argparse.Namespace, cfg: DegradeConfig) -> None:
    device = stage.setup_torch(args)
    generator = load_generator(args.checkpoint, device)
    warning = domain_warning(args.checkpoint)
    if warning:
        print(f"fca degrade: warning: {warning}", file=sys.stderr, flush=True)
    pairs = args.pairs is not None
    out = args.pairs if pairs else args.output
    extra = {"checkpoint": str(args.checkpoint), "input": str(args.input)} | ({"pairs": str(args.pairs)} if pairs else {})
    # standalone: outside the pipeline its own experiment, and no run for an error found before any work
    with tracking.stage_run("degrade", section_dict(cfg) | extra | stage.runtime(device), standalone=True) as run:
        manifest = degrade_folder(
            generator, args.input, out, cfg, overwrite=args.overwrite, pairs=pairs,
            progress=stage.progress_enabled(args), on_step=lambda i, m: run.log_metrics(m, i), max_pixels=stage.max_pixels(args),
        )
        run.log_artifact(out / "manifest.csv")
    ok = manifest[manifest.status == "ok"]
    skipped, ignored = int((manifest.status == "skipped").sum()), int((manifest.status == "ignored").sum())
    what = (f"{len(ok)} HR/LR pairs written into {out} (hr/, lr_x{int(generator.scale)}/, meta_info.txt for BasicSR, meta_info_realesrgan.txt for Real-ESRGAN)" if pairs
            else f"{len(ok)} images degraded into {out}")
    print(f"degrade: {what}"
          + (f", {skipped} skipped" if skipped else "") + (f", {ignored} files not images (ignored)" if ignored else "")
          + (" (reasons in manifest.csv)" if skipped or ignored else "")
          + (f"; kernel sigma {ok.kernel_sigma.mean():.3f} on average" if len(ok) else ""))


def main(argv: Sequence[str] | None = None) -> int:
    return stage.run("degrade", argv, build, body, load=settings)
