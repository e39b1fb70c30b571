"""`dvc plots show`: each curve drawn once, against the right x, from columns the stages write.

dvc.yaml defines every plot at top level (x, y per file); the stages declare the CSVs as plain
outs, since a stage `plots:` entry is drawn a second time with DVC's default axes (the last
column against a row index). `make plots` writes the page with local Vega scripts.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from fca.train.fdc import scale_key, train_fdc
from fca.train.generator import GeneratorConfig, train_generator
from pipeline.evaluate import DENSITY_COLUMNS, DENSITY_CURVES
from pipeline.params import load_params

ROOT = Path(__file__).resolve().parents[2]
DVC_YAML = yaml.safe_load((ROOT / "dvc.yaml").read_text())
FDC_CSV, GEN_CSV, DENSITY_CSV = "reports/plots/fdc_accuracy.csv", "reports/plots/generator_loss.csv", "reports/plots/density.csv"
SR_CSV = "reports/plots/sr_loss.csv"
OFFLINE_JS = ("vega5.js", "vega-lite5.js", "vega-embed6.js")


def _entries(entries):
    """dvc.yaml out/plot entries (a path, or {path: options}) -> {path: options}."""
    out = {}
    for e in entries or []:
        out |= {k: v or {} for k, v in e.items()} if isinstance(e, dict) else {e: {}}
    return out


def _plots() -> dict[str, dict]:
    """Top-level plots: id -> definition."""
    return _entries(DVC_YAML["plots"])


def _curves() -> list[tuple[str, str, str, str]]:
    """(plot id, file, x, y column) for every curve the top-level plots draw."""
    curves = []
    for pid, d in _plots().items():
        assert isinstance(d.get("y"), dict), f"plot {pid}: give y as {{file: columns}}, so DVC does not pick a column"
        assert d.get("x"), f"plot {pid}: no x (DVC would draw against a row index)"
        for file, ys in d["y"].items():
            for y in [ys] if isinstance(ys, str) else ys:
                curves.append((pid, file, d["x"], y))
    return curves


def _written_csvs() -> dict[str, str]:
    """CSV -> the stage that writes it."""
    return {p: name for name, s in DVC_YAML["stages"].items() for p in [*_entries(s.get("outs")), *_entries(s.get("metrics"))]
            if p.endswith(".csv")}


def _plot_for(file: str, columns: set[str]) -> dict:
    """The one top-level plot that draws exactly `columns` of `file`."""
    found = [pid for pid, f in {(pid, f) for pid, f, _, _ in _curves()} if f == file
             and {y for p, g, _, y in _curves() if (p, g) == (pid, f)} == columns]
    assert len(found) == 1, f"no single plot of {file} draws exactly {sorted(columns)}"
    return _plots()[found[0]]


def test_each_csv_is_a_plain_out_drawn_once_by_a_top_level_plot():
    for name, s in DVC_YAML["stages"].items():
        assert "plots" not in s, f"stage {name}: a stage plots: entry is drawn again beside the top-level plot; declare the file in outs"
    written = _written_csvs()
    assert set(written) == {FDC_CSV, GEN_CSV, DENSITY_CSV, SR_CSV}
    for csv, stage in written.items():
        assert _entries(DVC_YAML["stages"][stage]["outs"])[csv] == {"cache": False}, f"{csv}: a small tracked report, not cached"
    curves = _curves()
    drawn = [(file, y) for _, file, _, y in curves]
    assert len(drawn) == len(set(drawn)), f"a curve is drawn twice: {drawn}"
    assert {file for file, _ in drawn} == set(written), "every CSV a stage writes is drawn, and nothing else"
    for pid, d in _plots().items():
        assert len(d["y"]) == 1, f"plot {pid}: one file per plot"
        template = d.get("template", "linear")
        assert template in ("simple", "linear") or (ROOT / ".dvc" / "plots" / f"{template}.json").is_file(), (pid, template)


def test_fdc_plot_draws_the_accuracy_per_scale_that_train_fdc_writes():
    """The held-out accuracy acc_s{s} for each s of fdc.eval_scales (not same_mean, DVC's pick of
    the last column), against step; the columns are those of a real (one-step) training run's history,
    which train-fdc writes as the CSV."""
    params = load_params(ROOT / "params.yaml")
    plot = next(d for d in _plots().values() if FDC_CSV in d["y"])
    assert plot["x"] == "step"
    accs = {scale_key("acc", s) for s in params.fdc.eval_scales}
    assert set(plot["y"][FDC_CSV]) == accs
    for preset in sorted((ROOT / "presets").glob("*.yaml")):  # a preset with other scales needs its own plot
        assert {scale_key("acc", s) for s in load_params(preset).fdc.eval_scales} == accs, preset.name
    cfg = dataclasses.replace(params.fdc, steps=1, channels=4, batch_size=2, patch_size=16, eval_every=1, eval_repeats=1, checkpoint_every=1)
    g = torch.Generator().manual_seed(0)
    _, history = train_fdc(cfg, torch.rand(4, 3, 64, 64, generator=g), torch.rand(2, 3, 64, 64, generator=g), progress=False)
    columns = set(pd.DataFrame(history).columns)
    assert {plot["x"], *plot["y"][FDC_CSV]} <= columns
    assert {c for c in columns if re.fullmatch(r"acc_s[\d.]+", c)} == accs


def test_generator_plots_draw_every_loss_and_the_kernel_sigma_apart():
    """Losses (all loss_* columns, loss_consistency included) in one plot, the kernel width
    (another scale) in its own, both against step: the columns of a one-step training run."""
    cfg = GeneratorConfig(
        scale=4.0, patch_size=64, kernel_size=7, kernel_start_steps=2, loss="spectral", w_wd=0.1, spectral_bins=8, batch_size=2, steps=1,
        checkpoint_every=1000, image_every=1000, estimator_bins=(8, 4), estimator_hidden=8, consistency_batch=2, wd_channels=4,
    )  # fmt: skip
    _, history = train_generator(cfg, torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(0)), None,
                                 device=torch.device("cpu"), checkpoint_dir=None, progress=False)
    columns = set(pd.DataFrame(history).columns)
    losses = {c for c in columns if c.startswith("loss_")}
    assert "loss_consistency" in losses
    loss_plot, sigma_plot = _plot_for(GEN_CSV, losses), _plot_for(GEN_CSV, {"kernel_sigma"})
    assert loss_plot["x"] == sigma_plot["x"] == "step" and "step" in columns


def test_sr_plot_draws_the_loss_of_each_kind_of_pairs_that_train_sr_writes():
    """One loss curve per kind of pairs, against step: the loss_<kind> columns of train-sr's CSV."""
    from pipeline.train_sr import KINDS

    plot = _plot_for(SR_CSV, {f"loss_{k}" for k in KINDS})
    assert plot["x"] == "step"


def test_density_plot_draws_each_curve_against_frequency_on_a_log_axis():
    plot = _plot_for(DENSITY_CSV, set(DENSITY_CURVES))
    assert plot["x"] == "frequency" == DENSITY_COLUMNS[0]
    template = json.loads((ROOT / ".dvc" / "plots" / f"{plot['template']}.json").read_text())
    assert template["encoding"]["y"]["scale"]["type"] == "log"
    assert template["encoding"]["x"]["field"] == "<DVC_METRIC_X>"


def test_dvc_renders_one_plot_per_definition_and_the_offline_page_loads_no_cdn(tmp_path, monkeypatch):
    """Through DVC's own parser and renderer (what `dvc plots show` / `make plots` run), on CSVs
    with the writers' columns: one Vega plot per top-level definition, with the declared x and y
    curves, and a page whose scripts are the local copies the Makefile puts beside it."""
    from dvc.render.match import match_defs_renderers
    from dvc.repo import Repo
    from dvc_render.html import render_html

    monkeypatch.chdir(tmp_path)
    Repo.init(str(tmp_path), no_scm=True).close()
    shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    (tmp_path / ".dvc" / "plots").mkdir(exist_ok=True)
    for f in (ROOT / ".dvc" / "plots").iterdir():
        if f.is_file():  # the templates; not js/, Vega's scripts that `make install` copies there
            shutil.copy(f, tmp_path / ".dvc" / "plots" / f.name)
    (tmp_path / "reports" / "plots").mkdir(parents=True)
    for file in _written_csvs():
        cols = sorted({y for _, f, _, y in _curves() if f == file} | {x for _, f, x, _ in _curves() if f == file})
        pd.DataFrame({c: [0.1, 0.2] for c in [*cols, "same_mean"]}).to_csv(tmp_path / file, index=False)
    with Repo(str(tmp_path)) as repo:
        data = repo.plots.show()
        rendered = match_defs_renderers(data=data, out=str(tmp_path / "dvc_plots" / "static"), templates_dir=repo.plots.templates_dir)
    renderers = [r.renderer for r in rendered]
    assert sorted(r.name for r in renderers) == sorted(_plots()), "one plot per definition, none from a stage"
    for r in renderers:
        spec = r.get_filled_template()
        d = _plots()[r.name]
        assert spec["encoding"]["x"]["field"] == d["x"]
        want = {y for pid, _, _, y in _curves() if pid == r.name}
        got = {p.get("field") for p in spec["data"]["values"]} if len(want) > 1 else {spec["encoding"]["y"]["field"]}
        assert got == want, r.name
    page = Path(render_html(renderers, tmp_path / "dvc_plots" / "index.html", html_template=str(ROOT / ".dvc" / "plots" / "offline.html")))
    html = page.read_text()
    sources = re.findall(r'<script src="([^"]+)"', html)
    # The copies beside the page (`make plots`), else make install's in .dvc/plots/js/ (plain `dvc plots show`).
    assert sources[:3] == list(OFFLINE_JS) and sources[3:] == ["../.dvc/plots/js/' + name + '"]
    assert "jsdelivr" not in html and 'src="http' not in html and "vegaEmbed(" in html
    # The Makefile copies them from the wheel in requirements.lock.
    folder = Path(importlib.util.find_spec("js_lib_vega_embed").origin).parent / "static" / "js_lib_vega_embed"
    for js in OFFLINE_JS:
        assert (folder / js).stat().st_size > 50_000, js
    assert "--html-template .dvc/plots/offline.html" in (ROOT / "Makefile").read_text()


@pytest.mark.parametrize("js", OFFLINE_JS)
def test_offline_scripts_are_the_vega_versions_dvc_specs_need(js):
    """DVC writes Vega-Lite 5 specs for vega-embed 6 (its own page loads vega 5, vega-lite 5, vega-embed 6)."""
    folder = Path(importlib.util.find_spec("js_lib_vega_embed").origin).parent / "static" / "js_lib_vega_embed"
    head = (folder / js).read_text(encoding="utf-8")[:1000]  # the UMD header names the global it defines
    assert {"vega5.js": ").vega={}", "vega-lite5.js": ').vegaLite={},e.vega)}(this,(function(e,t){"use strict";var n="5.',
            "vega-embed6.js": ").vegaEmbed=t(e.vega,e.vegaLite)"}[js] in head
