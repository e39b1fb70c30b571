"""Speed and memory of the library's hot paths, measured side by side in one run (`make bench`).

    python -m benchmarks.run [--device auto|cpu|cuda] [--quick] [--paper] [--json PATH] [--threads N]

Each benchmark runs in a fresh child process (`--only NAME`), so each peak RSS is its own:
  matmul   a dense n x n torch.mm (n = 2048, smaller if a call takes over a second), fp32 and
           bf16: the GFLOP/s this machine reaches.
  train    `fca.train.generator.train_generator` itself at the demo params (params.yaml
           `generator:`), fp32 and bf16 autocast + channels_last (CUDA: fp32 and mixed
           precision, plus a paper-scale run: 512 px patches, batch 8, the paper-size
           estimator, FDC loss). A step is timed between two `on_step` calls, so it is one full step
           (sampling, G forward, discriminator step, G backward, both optimisers); the median
           over the steps after step 1 is reported. The FLOPs of one step are counted with
           `torch.utils.flop_counter.FlopCounterMode` (convolutions and matmuls, forward and
           backward; FFTs, resizes and element-wise ops are not counted). On CUDA, fp32 convs
           may run in TF32 (torch's default) while the fp32 matmul does not.
           The paper-scale column (CUDA, or --paper on a CPU) trains the generator and the
           FDC of presets/paper.yaml (512 px patches, 64-channel estimator, FDC loss).
           On a CPU a row gives bf16's speed over fp32's beside what `cpu_bf16: auto` picks here
           (`fca.train.hardware.choose_cpu_precision`: bf16 exactly where the CPU has AMX).
  degrade  `fca.degrade.degrade_image` on a synthetic 2048 x 2048 image (HR megapixels/s),
           `estimate_image_kernel` on it, and `degrade_folder` end to end including PNG I/O.
  density  `fca.frequency.radial_density` and `mean_density` on 128 x 128 patches, next to
           a bare `torch.fft.rfft2` of the same patches' luma.
  estimator  the spectral kernel estimator of presets/mixed.yaml (one image's kernel, in
           batches of `evaluate.batch_size` and alone) against the non-learned per-image
           density fit (`fca.baseline`, `evaluate.baseline_steps` steps, all images at once),
           on the same 128 x 128 crops: the speed-up that issue 9 asks to be at least 100x;
           and `local_range` against the two max_pool2d calls it replaced.
Every row gives a value, its goal, value / goal and whether the goal is met. Weights are
untrained and images synthetic: the work per step or per pixel does not depend on either.
On a CPU shared with other processes, use --threads 1: with more threads than idle cores,
each parallel region waits for a descheduled thread (measured here: 7x slower training steps,
6x slower degrade_image with 2 threads than with 1 at a load average of 6 on 2 cores).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

warnings.filterwarnings("ignore", message="pkg_resources is deprecated")  # pytorch_wavelets' import, once per child

ROOT = Path(__file__).resolve().parents[1]
BENCHES = ("matmul", "train", "degrade", "density", "estimator")
RSS_GOAL_MB = 2048.0  # the project's memory target for any stage on this 2-core, shared machine
DEMO_BUDGET_S = 600.0  # goal: the demo's generator stage (generator.steps steps) in 10 minutes
MATMUL_SHARE_GOAL = 0.6  # goal: a training step reaches 60 % of a dense matmul's GFLOP/s
DENSITY_GOAL_MPX = 10.0  # goal: the real domain's target density over the demo's ~800 training patches in about a second
DEGRADE_GOAL_MPX = 20.0  # goal: HR megapixels/s through degrade_image on 2 cores
ESTIMATOR_SPEEDUP_GOAL = 100.0  # goal: G's kernel for one image at least 100x cheaper than the per-image fit


# --------------------------------------------------------------------------- helpers


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds_per_call(fn: Callable[[], object], device: torch.device, min_reps: int = 3, min_time: float = 1.0) -> float:
    """Median wall time of fn() over at least `min_reps` calls and `min_time` seconds, after one warm-up call."""
    fn()
    _sync(device)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_reps or time.perf_counter() - start < min_time:
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def demo_params(notes: list[str]):
    """(generator, fdc, degrade) configs from params.yaml. If the file does not validate (someone is
    mid-edit), each section is built from its YAML keys without the loader's checks, or else is the
    dataclass defaults; a note says which."""
    import yaml

    from fca.degrade import DegradeConfig
    from fca.train.fdc import FDCConfig
    from fca.train.generator import GeneratorConfig
    from pipeline.params import ParamsError, load_params

    path = ROOT / "params.yaml"
    try:
        p = load_params(path)
        return p.generator, p.fdc, p.degrade
    except ParamsError as e:
        notes.append(f"params.yaml does not validate ({str(e)[:200]})")
    raw = yaml.safe_load(path.read_text()) if path.is_file() else {}
    configs = []
    for section, cls in (("generator", GeneratorConfig), ("fdc", FDCConfig), ("degrade", DegradeConfig)):
        try:
            configs.append(cls(**raw[section]))
            notes.append(f"{section}: built from params.yaml without validation")
        except (KeyError, TypeError, ValueError) as e:
            configs.append(cls())
            notes.append(f"{section}: {cls.__name__}() defaults ({type(e).__name__}: {e})")
    return tuple(configs)


def synthetic_image(size: int, seed: int = 0) -> np.ndarray:
    """float32 [size, size, 3] in [0, 1]: smooth colour waves plus noise (neither flat nor incompressible)."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, size, dtype=np.float32)
    base = 0.5 + 0.25 * np.sin(40 * t[None, :] + 7 * t[:, None]) * np.cos(31 * t[:, None] - 5 * t[None, :])
    img = np.stack([base + 0.1 * c * t[:, None] for c in range(3)], -1)
    img += rng.normal(0, 0.03, img.shape).astype(np.float32)
    return np.clip(img, 0, 1)


# --------------------------------------------------------------------------- benchmarks (child side)


def bench_matmul(device: torch.device, quick: bool, notes: list[str]) -> dict[str, float]:
    """GFLOP/s of an n x n torch.mm, n = 2048 (1024 with --quick), or the largest power of two that
    takes under a second per call (bf16 on a CPU without native bf16 runs at well under 1 GFLOP/s)."""
    n_max = 1024 if quick else 2048
    out, sizes = {}, []
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        n = 256
        while True:
            a = torch.randn(n, n, device=device).to(dtype)
            b = torch.randn(n, n, device=device).to(dtype)
            t = seconds_per_call(lambda: torch.mm(a, b), device, min_reps=5, min_time=0.5 if quick else 2.0)
            if n >= n_max or t * 8 > 1.0:  # the next size would take over a second per call
                break
            n *= 2
        out[f"matmul.{name}.gflops"] = 2 * n**3 / t / 1e9
        sizes.append(f"{name} {n}x{n}")
    notes.append(f"matmul: torch.mm, {', '.join(sizes)}")
    return out


class _Stop(Exception):
    """Raised from `on_step` to end a timing run early (the LR schedule does not change the work per step)."""


def _run_training(cfg, patches, fdc, fdc_scale: float, device: torch.device, on_step) -> None:
    """`train_generator` (no checkpoints, no progress bar), until `on_step` raises _Stop."""
    from fca.train.generator import train_generator

    cfg = dataclasses.replace(cfg, steps=10**6, checkpoint_every=10**6, image_every=10**6)
    try:
        train_generator(cfg, patches, fdc, device=device, checkpoint_dir=None, fdc_scale=fdc_scale, on_step=on_step, progress=False)
    except _Stop:
        pass


def step_flops(cfg, patches, fdc, fdc_scale: float, device: torch.device) -> int:
    """FLOPs of one training step: the counter's total at the end of step 2 minus that at the end of step 1."""
    from torch.utils.flop_counter import FlopCounterMode

    totals: list[int] = []

    def on_step(step: int, metrics: dict) -> None:
        totals.append(counter.get_total_flops())
        if step == 2:
            raise _Stop

    cfg = dataclasses.replace(cfg, cpu_bf16="off")  # the count does not depend on the precision: no probe
    with FlopCounterMode(display=False) as counter:
        _run_training(cfg, patches, fdc, fdc_scale, device, on_step)
    return totals[1] - totals[0]


def step_seconds(cfg, patches, fdc, fdc_scale: float, device: torch.device, max_steps: int, budget_s: float) -> list[float]:
    """Seconds of each timed step. A step is the time between two `on_step` calls (which read the losses
    with float(), so CUDA is synchronised), so step 1 (first-call setup, Adam state) is never timed;
    then up to `max_steps` are, fewer once `budget_s` has passed (at least one)."""
    stamps: list[float] = []

    def on_step(step: int, metrics: dict) -> None:
        stamps.append(time.perf_counter())
        timed = len(stamps) - 1
        if timed >= max_steps or (timed >= 1 and stamps[-1] - stamps[0] > budget_s):
            raise _Stop

    _run_training(cfg, patches, fdc, fdc_scale, device, on_step)
    return np.diff(stamps).tolist()


def paper_params():
    """(generator, fdc) configs of presets/paper.yaml, through the params loader."""
    from pipeline.params import load_params

    p = load_params(ROOT / "presets" / "paper.yaml")
    return p.generator, p.fdc


def bench_train(device: torch.device, quick: bool, notes: list[str], paper: bool = False) -> dict[str, float]:
    from fca.models.fdc_arch import build_fdc
    from fca.train.hardware import choose_cpu_precision, native_bf16_flags

    gen_cfg, fdc_cfg, _ = demo_params(notes)
    max_steps, budget = (1, 0.0) if quick else (10, 40.0)
    configs = {"demo": (gen_cfg, fdc_cfg)}
    if device.type == "cuda" or paper:
        configs["paper"] = paper_params()
    if quick:  # a smoke run: a quarter of the batch
        configs = {k: (dataclasses.replace(g, batch_size=max(1, g.batch_size // 4)), f) for k, (g, f) in configs.items()}
    precisions = ("fp32", "bf16") if device.type == "cpu" else ("fp32", "amp")
    out: dict[str, float] = {"train.demo.steps": float(gen_cfg.steps)}
    for scale, (cfg, fdc_cfg) in configs.items():
        patches = torch.rand(4 * cfg.batch_size, 3, cfg.patch_size, cfg.patch_size, generator=torch.Generator().manual_seed(0))
        fdc = build_fdc(fdc_cfg.channels, fdc_cfg.normalize_input) if cfg.loss in ("fdc", "both") else None
        fdc_scale = fdc_cfg.scale_end
        out[f"train.{scale}.gflop"] = step_flops(cfg, patches, fdc, fdc_scale, device) / 1e9
        timed = []
        for prec in precisions:
            run_cfg = dataclasses.replace(cfg, cpu_bf16="on" if prec == "bf16" else "off", cuda_amp=prec == "amp")
            seconds = step_seconds(run_cfg, patches, fdc, fdc_scale, device, max_steps, budget)
            out[f"train.{scale}.{prec}.s_per_step"] = float(np.median(seconds))
            timed.append(f"{prec} " + " ".join(f"{t:.3g}" for t in seconds))
        if device.type == "cpu":
            # What cpu_bf16: auto picks on this CPU (by its flags), beside the speed-up measured here:
            # a row that shows auto keeping fp32 where bf16 is faster (or the reverse) is a reason to revisit the rule.
            ratio = out[f"train.{scale}.fp32.s_per_step"] / out[f"train.{scale}.bf16.s_per_step"]
            choice = choose_cpu_precision("auto")
            out["train.native_bf16"] = float(bool(native_bf16_flags()))
            out[f"train.{scale}.auto_bf16"] = float(choice.cpu_bf16)
            notes.append(f"train {scale}: cpu_bf16: auto on this CPU -> {choice.reason} (bf16 / fp32 speed here {ratio:.2f}x)")
        notes.append(
            f"train {scale}: patch {cfg.patch_size}, batch {cfg.batch_size}, channels {cfg.channels}, "
            f"{cfg.dense_blocks} dense + {cfg.res_blocks} res blocks, K {cfg.kernel_size}, loss {cfg.loss}, "
            f"w_wd {cfg.w_wd}{' (--quick: smaller batch)' if quick else ''}; median of the steps after step 1 (seconds: {'; '.join(timed)})"
        )
    return out


def bench_degrade(device: torch.device, quick: bool, notes: list[str]) -> dict[str, float]:
    from fca.data.images import save_png
    from fca.degrade import degrade_folder, degrade_image, estimate_image_kernel
    from fca.train.generator import build_generator

    gen_cfg, _, deg_cfg = demo_params(notes)
    source = build_generator(gen_cfg).to(device).eval()  # the trained generator's shape; weights do not change the work
    size, files = (1024, 1) if quick else (2048, 2)
    image = synthetic_image(size)
    mpx = size * size / 1e6
    kernel = estimate_image_kernel(source, image, deg_cfg)
    t_img = seconds_per_call(lambda: degrade_image(source, image, kernel, deg_cfg), device, min_time=1.0 if quick else 3.0)
    t0 = time.perf_counter()  # once: it is the slow part (the estimator on up to max_tiles crops); the call above warmed up
    estimate_image_kernel(source, image, deg_cfg)
    t_est = time.perf_counter() - t0
    out = {"degrade.image.mpx_s": mpx / t_img, "degrade.kernel.mpx_s": mpx / t_est}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(files):
            save_png(Path(tmp) / "in" / f"{i}.png", synthetic_image(size, seed=i))
        t0 = time.perf_counter()
        degrade_folder(source, Path(tmp) / "in", Path(tmp) / "out", deg_cfg, progress=False)
        out["degrade.folder.mpx_s"] = files * mpx / (time.perf_counter() - t0)
    notes.append(
        f"degrade: {size}x{size} float32 image, x{gen_cfg.scale:g}, K {gen_cfg.kernel_size}, work_tile {deg_cfg.work_tile}; "
        f"kernel from {deg_cfg.kernel_from} ({deg_cfg.max_tiles} x {deg_cfg.tile} px); folder: {files} PNGs"
    )
    return out


def bench_density(device: torch.device, quick: bool, notes: list[str]) -> dict[str, float]:
    from fca.frequency import mean_density, radial_density, to_luma

    n, side, bins = (32 if quick else 256), 128, 32
    x = torch.rand(n, 3, side, side, generator=torch.Generator().manual_seed(0)).to(device)
    luma = to_luma(x)
    mpx = n * side * side / 1e6
    t_rd = seconds_per_call(lambda: radial_density(x, bins), device)
    t_fft = seconds_per_call(lambda: torch.fft.rfft2(luma), device)
    many = x.repeat(1 if quick else 2, 1, 1, 1).cpu()  # mean_density sums on the CPU: it takes CPU tensors only
    t_mean = seconds_per_call(lambda: mean_density(many, bins), torch.device("cpu"))
    notes.append(f"density: batches of {n} RGB {side}x{side} patches, {bins} bins; mean_density over {many.shape[0]} on the CPU (float64, batch 64)")
    return {
        "density.radial.mpx_s": mpx / t_rd,
        "density.fft.mpx_s": mpx / t_fft,
        "density.mean.mpx_s": many.shape[0] * side * side / 1e6 / t_mean,
    }


def bench_estimator(device: torch.device, quick: bool, notes: list[str]) -> dict[str, float]:
    import torch.nn.functional as F

    from fca.baseline import fit_kernels_by_density
    from fca.models.generator_arch import local_range
    from fca.train.generator import build_generator
    from pipeline.params import load_params

    mixed = load_params(ROOT / "presets" / "mixed.yaml")
    g, ev = mixed.generator, mixed.evaluate
    generator = build_generator(g).to(device).eval()
    n = 16 if quick else 64
    x = torch.rand(n, 3, g.patch_size, g.patch_size, generator=torch.Generator().manual_seed(0)).to(device)
    batch = ev.batch_size

    def batched() -> None:
        with torch.no_grad():
            for start in range(0, n, batch):
                generator.estimate_kernel(x[start : start + batch])

    def alone() -> None:
        with torch.no_grad():
            generator.estimate_kernel(x[:1])

    t_batched = seconds_per_call(batched, device) / n
    t_alone = seconds_per_call(alone, device)
    base_n = min(n, 16)
    _, t_base = fit_kernels_by_density(x[:base_n].cpu(), g.scale, g.kernel_size, steps=ev.baseline_steps)
    t_base /= base_n
    y = x[:, :1]
    t_range = seconds_per_call(lambda: local_range(y, 5), device)
    t_pool = seconds_per_call(lambda: F.max_pool2d(y, 5, 1, 2) + F.max_pool2d(-y, 5, 1, 2), device)
    notes.append(f"estimator: presets/mixed.yaml's spectral estimator (untrained: the cost does not depend on the weights) on {n} "
                 f"{g.patch_size}x{g.patch_size} crops in batches of {batch}; baseline: {ev.baseline_steps} steps on {base_n} crops")
    return {
        "estimator.batched.ms_per_image": 1e3 * t_batched,
        "estimator.alone.ms_per_image": 1e3 * t_alone,
        "estimator.baseline.ms_per_image": 1e3 * t_base,
        "estimator.speedup_batched": t_base / t_batched,
        "estimator.speedup_alone": t_base / t_alone,
        "estimator.local_range_speedup": t_pool / t_range,
    }


BENCH_FUNCS = {"matmul": bench_matmul, "train": bench_train, "degrade": bench_degrade, "density": bench_density, "estimator": bench_estimator}


def child(name: str, device: torch.device, quick: bool, result: Path, paper: bool = False) -> None:
    """Run one benchmark and write {values, notes, threads, peak RSS} as JSON to `result`."""
    notes: list[str] = []
    t0 = time.perf_counter()
    values = bench_train(device, quick, notes, paper) if name == "train" else BENCH_FUNCS[name](device, quick, notes)
    values[f"{name}.peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # kB on Linux
    if device.type == "cuda":
        values[f"{name}.cuda_peak_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    values[f"{name}.seconds"] = time.perf_counter() - t0
    result.write_text(json.dumps({"values": values, "notes": notes, "threads": torch.get_num_threads()}))


# --------------------------------------------------------------------------- table (parent side)


def make_rows(v: dict[str, float], device: torch.device) -> list[dict]:
    """The table: one dict per row with benchmark, scale, value, unit, goal (None = for information), better."""
    rows: list[dict] = []

    def row(bench: str, scale: str, value: float | None, unit: str, goal: float | None = None, better: str = "high") -> None:
        if value is not None:
            rows.append({"benchmark": bench, "scale": scale, "value": value, "unit": unit, "goal": goal, "better": better})

    fast = "amp" if device.type == "cuda" else "bf16"
    fast_name = "mixed precision" if device.type == "cuda" else "bf16 autocast + channels_last"
    for scale in ("demo", "paper"):
        if f"train.{scale}.gflop" not in v:
            continue
        fp32_rate = 1 / v[f"train.{scale}.fp32.s_per_step"]
        fp32_goal = v["train.demo.steps"] / DEMO_BUDGET_S if scale == "demo" else None
        row("train step fp32", scale, fp32_rate, "step/s", fp32_goal)
        row(f"train step {fast_name} (goal: fp32)", scale, 1 / v[f"train.{scale}.{fast}.s_per_step"], "step/s", fp32_rate)
        if f"train.{scale}.auto_bf16" in v:
            pick = "bf16 (AMX)" if v[f"train.{scale}.auto_bf16"] else "fp32, no AMX"
            speedup = v[f"train.{scale}.fp32.s_per_step"] / v[f"train.{scale}.bf16.s_per_step"]
            row(f"train step bf16 / fp32 speed (cpu_bf16: auto picks {pick})", scale, speedup, "x")
        row("train step FLOPs (counted)", scale, v[f"train.{scale}.gflop"], "GFLOP")
        for prec, mm in (("fp32", "fp32"), (fast, "bf16")):
            achieved = v[f"train.{scale}.gflop"] / v[f"train.{scale}.{prec}.s_per_step"]
            row(f"train step {prec}", scale, achieved, "GFLOP/s")
            if f"matmul.{mm}.gflops" in v:
                row(f"train {prec} / matmul {mm} GFLOP/s", scale, achieved / v[f"matmul.{mm}.gflops"], "share", MATMUL_SHARE_GOAL)
    row("matmul fp32", "-", v.get("matmul.fp32.gflops"), "GFLOP/s")
    row("matmul bf16", "-", v.get("matmul.bf16.gflops"), "GFLOP/s")
    row("degrade_image", "demo", v.get("degrade.image.mpx_s"), "HR MP/s", DEGRADE_GOAL_MPX)
    row("estimate_image_kernel", "demo", v.get("degrade.kernel.mpx_s"), "HR MP/s")
    row("degrade_folder (PNG I/O)", "demo", v.get("degrade.folder.mpx_s"), "HR MP/s")
    row("radial_density", "-", v.get("density.radial.mpx_s"), "MP/s", DENSITY_GOAL_MPX)
    row("mean_density (float64)", "-", v.get("density.mean.mpx_s"), "MP/s")
    row("bare rfft2 of the luma", "-", v.get("density.fft.mpx_s"), "MP/s")
    if "density.fft.mpx_s" in v:
        row("radial_density / rfft2", "-", v["density.radial.mpx_s"] / v["density.fft.mpx_s"], "share")
    row("kernel estimate, batched", "mixed", v.get("estimator.batched.ms_per_image"), "ms/image")
    row("kernel estimate, one image alone", "mixed", v.get("estimator.alone.ms_per_image"), "ms/image")
    row("per-image density fit (baseline)", "mixed", v.get("estimator.baseline.ms_per_image"), "ms/image")
    row("baseline / estimator, batched", "mixed", v.get("estimator.speedup_batched"), "x", ESTIMATOR_SPEEDUP_GOAL)
    row("baseline / estimator, one image alone", "mixed", v.get("estimator.speedup_alone"), "x", ESTIMATOR_SPEEDUP_GOAL)
    row("max_pool2d pair / local_range", "-", v.get("estimator.local_range_speedup"), "x")
    for name in BENCHES:
        row(f"peak RSS {name}", "-", v.get(f"{name}.peak_rss_mb"), "MB", RSS_GOAL_MB, better="low")
        row(f"peak CUDA memory {name}", "-", v.get(f"{name}.cuda_peak_mb"), "MB")
    for r in rows:
        g = r["goal"]
        r["ratio"] = r["value"] / g if g else None
        r["met"] = None if g is None else (r["value"] >= g if r["better"] == "high" else r["value"] <= g)
    return rows


def format_table(rows: list[dict]) -> str:
    def num(x: float | None) -> str:
        if x is None:
            return "-"
        return f"{x:.3g}" if abs(x) < 1000 else f"{x:.0f}"

    head = ("benchmark", "scale", "value", "unit", "goal", "ratio", "met")
    body = [
        (r["benchmark"], r["scale"], num(r["value"]), r["unit"], ("<= " if r["better"] == "low" and r["goal"] else "") + num(r["goal"]),
         num(r["ratio"]), {None: "", True: "yes", False: "NO"}[r["met"]])
        for r in rows
    ]
    widths = [max(len(str(c)) for c in col) for col in zip(head, *body)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip() for line in (head, *body)]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def machine(device: torch.device, threads: int, load: float) -> dict[str, str]:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "torch": torch.__version__,
        "device": str(device),
        "cpu": f"{cpu} ({os.cpu_count()} logical CPUs, {torch.backends.cpu.get_cpu_capability()})",
        "threads": str(threads),
        "load average before the run (1 min)": f"{load:.2f}",
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (auto: CUDA when available)")
    p.add_argument("--quick", action="store_true", help="small sizes and few repetitions: a smoke run")
    p.add_argument("--paper", action="store_true", help="also time paper-scale training on a CPU (always on with CUDA; slow)")
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's own choice)")
    p.add_argument("--only", choices=BENCHES, help="run one benchmark in this process (what the parent runs in each child)")
    p.add_argument("--result", type=Path, help=argparse.SUPPRESS)  # the child's JSON output
    args = p.parse_args(argv)

    from fca.train.hardware import resolve_device

    try:
        device = resolve_device(args.device)
    except (RuntimeError, ValueError) as e:
        raise SystemExit(f"--device {args.device}: {e}") from None
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.only:
        if args.result is None:  # run by hand: print the values
            with tempfile.TemporaryDirectory() as tmp:
                child(args.only, device, args.quick, Path(tmp) / "r.json", args.paper)
                print(json.dumps(json.loads((Path(tmp) / "r.json").read_text()), indent=1))
        else:
            child(args.only, device, args.quick, args.result, args.paper)
        return 0

    values: dict[str, float] = {}
    notes: list[str] = []
    load = os.getloadavg()[0]  # before our own work: what the neighbours are doing
    threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as tmp:
        for name in BENCHES:
            result = Path(tmp) / f"{name}.json"
            cmd = [sys.executable, "-m", "benchmarks.run", "--only", name, "--device", str(device), "--result", str(result)]
            cmd += ["--quick"] * args.quick + ["--paper"] * args.paper + (["--threads", str(args.threads)] if args.threads else [])
            print(f"[bench] {name} ...", file=sys.stderr, flush=True)
            proc = subprocess.run(cmd, cwd=ROOT)
            if proc.returncode != 0:
                raise SystemExit(f"benchmark {name!r} failed (exit {proc.returncode}): {' '.join(cmd)}")
            res = json.loads(result.read_text())
            values.update(res["values"])
            notes += [n for n in res["notes"] if n not in notes]
            threads = res["threads"]

    info = machine(device, threads, load)
    rows = make_rows(values, device)
    print("\n".join(f"{k}: {v}" for k, v in info.items()))
    print()
    print(format_table(rows))
    print()
    print("\n".join(f"note: {n}" for n in notes))
    if device.type == "cpu" and threads > 1 and load > 1.0:
        print(f"warning: the load average before the run ({load:.1f}) shows other processes on these {os.cpu_count()} CPUs; "
              f"with {threads} threads every parallel region waits for a descheduled thread, which made small ops "
              "10-40x slower here: rerun with --threads 1 for numbers about the code rather than the neighbours")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        tmp_path = args.json.with_name(f".{args.json.name}.tmp")
        tmp_path.write_text(json.dumps({"machine": info, "quick": args.quick, "values": values, "rows": rows, "notes": notes}, indent=1))
        os.replace(tmp_path, args.json)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
