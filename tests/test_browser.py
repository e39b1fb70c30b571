"""The pages a person looks at, drawn by a real browser (headless Chromium).

- DVC plots: `make plots-page` (what `make plots` runs) in a temporary project with the repo's
  dvc.yaml and plot templates, on CSVs with the columns the stages write; the page is opened from
  disk (no network) and every plot of dvc.yaml must be drawn, with one line of at least two points
  per declared curve. The check is shown to fail on a CSV missing a curve's column and on a page
  whose Vega scripts are missing.
- MLflow UI: two pipeline runs (a parent run, its stage runs with params, metrics and figures,
  logged through pipeline.tracking into a SQLite store), `mlflow ui` on that store, then the
  experiment's page from `python -m pipeline.tracking link` (runs table, stage runs under their
  parent), the compare view of the two train_generator runs (params side by side), and a run's
  figure artifact (listed and shown).

Chromium is driven through the DevTools protocol over a pipe (--remote-debugging-pipe): no Python
dependency, and each page is waited for until it shows what is checked, not for a fixed time.
The browser is Debian's `chromium` (`.ci/chromium.sh` installs it in CI), or FCA_CHROMIUM=path.
Without one these tests skip; with FCA_REQUIRE_BROWSER=1 (CI sets it) they fail instead.
Screenshots (PNG) go to $FCA_SCREENSHOTS, default a `screenshots` folder in pytest's temp dir.

    .venv/bin/python -m pytest -m browser            # only these tests
"""

from __future__ import annotations

import base64
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
VIEWPORT = (1600, 1000)


# -- the browser -------------------------------------------------------------------------------

def _chromium() -> str | None:
    if os.environ.get("FCA_CHROMIUM"):
        return os.environ["FCA_CHROMIUM"]
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser")) if p), None)


class Browser:
    """Headless Chromium spoken to over --remote-debugging-pipe: JSON messages ending in NUL,
    read by the browser from fd 3 and written to fd 4."""

    def __init__(self, exe: str, profile: Path, log: Path) -> None:
        to_browser, self._w = os.pipe()
        self._r, from_browser = os.pipe()
        args = ["--headless=new", "--disable-gpu", "--no-sandbox", "--disable-dev-shm-usage", "--remote-debugging-pipe",
                f"--user-data-dir={profile}", "--no-first-run", "--no-default-browser-check", "--hide-scrollbars",
                "--mute-audio", "--disable-background-networking", "--disable-extensions", "about:blank"]
        self.log = log
        with open(log, "wb") as err:
            self.proc = subprocess.Popen(
                ["bash", "-c", f'exec "$0" "$@" 3<&{to_browser} 4>&{from_browser}', exe, *args],  # bash: sh takes no fd > 9
                pass_fds=(to_browser, from_browser), stdin=subprocess.DEVNULL, stdout=err, stderr=err,
            )
        os.close(to_browser)
        os.close(from_browser)
        self._buf = b""
        self._id = 0

    def call(self, method: str, session: str | None = None, timeout: float = 60, **params):
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params} | ({"sessionId": session} if session else {})
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" in self._buf:
                raw, self._buf = self._buf.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == self._id:  # events and other replies are not needed
                    if "error" in reply:
                        raise RuntimeError(f"{method}: {reply['error']}")
                    return reply["result"]
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"Chromium did not answer {method} in {timeout} s")
            if select.select([self._r], [], [], left)[0]:
                chunk = os.read(self._r, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"Chromium exited; its log:\n{self.log.read_text(errors='replace')[-3000:]}")
                self._buf += chunk

    def page(self, height: int = VIEWPORT[1]) -> "Page":
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.call("Emulation.setDeviceMetricsOverride", session, width=VIEWPORT[0], height=height,
                  deviceScaleFactor=1, mobile=False)
        return Page(self, session, target)

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=10)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._w)
        os.close(self._r)


class Page:
    def __init__(self, browser: Browser, session: str, target: str) -> None:
        self.browser, self.session, self.target = browser, session, target

    def __enter__(self) -> "Page":
        return self

    def __exit__(self, *exc) -> None:
        self.browser.call("Target.closeTarget", targetId=self.target)

    def open(self, url: str) -> None:
        self.browser.call("Page.navigate", self.session, url=url)

    def js(self, expression: str):
        """The value of a JavaScript expression in the page (a promise is awaited)."""
        reply = self.browser.call("Runtime.evaluate", self.session, expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in reply:
            raise RuntimeError(f"{expression[:80]}...: {reply['exceptionDetails']}")
        return reply["result"].get("value")

    def text(self) -> str:
        return self.js("document.body ? document.body.innerText : ''") or ""

    def wait(self, expression: str, timeout: float, what: str, shot: Path | None = None):
        """Poll `expression` until it is truthy; fail with the page's text (and a screenshot) if it never is."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.js(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                if shot is not None:
                    self.screenshot(shot)
                pytest.fail(f"after {timeout} s the page shows no {what}" + (f" (screenshot {shot})" if shot else "")
                            + f"; its text:\n{self.text()[:3000]}")
            time.sleep(0.25)

    def wait_text(self, needles: list[str], timeout: float, shot: Path | None = None) -> str:
        self.wait(f"(t => {json.dumps(needles)}.every(n => t.includes(n)))(document.body ? document.body.innerText : '')",
                  timeout, f"text {needles}", shot)
        return self.text()

    def screenshot(self, path: Path) -> Path:
        """A PNG of the viewport (MLflow's pages scroll inside it: a taller page is a taller viewport)."""
        data = self.browser.call("Page.captureScreenshot", self.session, format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        return path


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    exe = _chromium()
    if exe is None:
        why = "no Chromium: `chromium` is not on PATH and FCA_CHROMIUM is unset (as root: bash .ci/chromium.sh)"
        if os.environ.get("FCA_REQUIRE_BROWSER") == "1":
            pytest.fail(f"FCA_REQUIRE_BROWSER=1 but {why}")
        pytest.skip(why)
    tmp = tmp_path_factory.mktemp("chromium")
    b = Browser(exe, tmp / "profile", tmp / "chromium.log")
    try:
        b.call("Browser.getVersion", timeout=120)
        yield b
    finally:
        b.close()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory) -> Path:
    folder = Path(os.environ["FCA_SCREENSHOTS"]) if os.environ.get("FCA_SCREENSHOTS") else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# -- DVC plots ---------------------------------------------------------------------------------

DVC_YAML = yaml.safe_load((ROOT / "dvc.yaml").read_text())


def _plot_curves() -> dict[str, tuple[str, str, list[str]]]:
    """dvc.yaml's top-level plots: id -> (file, x, [y columns])."""
    plots = {}
    for entry in DVC_YAML["plots"]:
        (pid, d), = entry.items()
        (file, ys), = d["y"].items()
        plots[pid] = (file, d["x"], [ys] if isinstance(ys, str) else list(ys))
    return plots


def _plots_project(root: Path, drop: tuple[str, str] | None = None) -> Path:
    """A DVC project with the repo's dvc.yaml and plot templates, and the plotted CSVs with every
    column dvc.yaml names (positive values: one plot has a log axis); `drop`: (file, column) left out."""
    root.mkdir()
    shutil.copy(ROOT / "dvc.yaml", root / "dvc.yaml")
    subprocess.run([str(BIN / "dvc"), "init", "--no-scm", "-q"], cwd=root, check=True, env=_env())
    shutil.copytree(ROOT / ".dvc" / "plots", root / ".dvc" / "plots", dirs_exist_ok=True, ignore=shutil.ignore_patterns("js"))
    shutil.copy(ROOT / ".dvc" / "config", root / ".dvc" / "config")  # its [plots] html_template
    columns: dict[str, list[str]] = {}
    for file, x, ys in _plot_curves().values():
        columns.setdefault(file, [x])
        columns[file] += [y for y in ys if y not in columns[file]]
    for file, cols in columns.items():
        cols = [c for c in cols if (file, c) != drop]
        rows = [",".join(str(step + 1) if c == cols[0] else f"{(j + 1) / (step + 2):.4f}" for j, c in enumerate(cols))
                for step in range(8)]
        (root / file).parent.mkdir(parents=True, exist_ok=True)
        (root / file).write_text("\n".join([",".join(cols), *rows]) + "\n")
    return root


def _env(**extra: str) -> dict[str, str]:
    return dict(os.environ, DVC_NO_ANALYTICS="1", PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", **extra)


def _make_plots_page(project: Path) -> Path:
    out = subprocess.run(["make", "--no-print-directory", "-f", str(ROOT / "Makefile"), "-C", str(project), "plots-page"],
                         capture_output=True, text=True, env=_env(XDG_CACHE_HOME=str(project / ".cache")), timeout=300)
    assert out.returncode == 0, f"make plots-page failed:\n{out.stdout}\n{out.stderr}"
    return project / "dvc_plots" / "index.html"


# What each plot container of the page holds once drawn: its state (set by .dvc/plots/offline.html)
# and every line mark of its SVG, with Vega's label (it names the curve) and its number of points.
_DRAWN = """Array.from(document.querySelectorAll('body > div[id]')).map(div => ({
  id: div.id, state: div.getAttribute('data-plot'), error: div.getAttribute('data-plot-error'),
  svg: div.querySelector('svg') ? [div.querySelector('svg').getAttribute('width'), div.querySelector('svg').getAttribute('height')] : null,
  lines: Array.from(div.querySelectorAll('path[aria-roledescription="line mark"]')).map(p => {
    const d = p.getAttribute('d') || '';
    return {label: p.getAttribute('aria-label') || '', points: /NaN|Infinity/.test(d) ? 0 : (d.match(/[ML]/g) || []).length};
  }),
}))"""


def _undrawn(drawn: list[dict]) -> list[str]:
    """What dvc.yaml asks for and the page does not show: [] when every plot has every curve."""
    problems = []
    by_id = {d["id"]: d for d in drawn}
    for pid, (file, x, ys) in _plot_curves().items():
        d = by_id.get(pid)
        if d is None:
            problems.append(f"{pid}: no plot on the page (DVC could not read {file}?)")
            continue
        if d["state"] != "drawn":
            problems.append(f"{pid}: not drawn ({d['error'] or 'vega-embed did not finish'})")
            continue
        if not d["svg"] or not all(float(v or 0) > 0 for v in d["svg"]):
            problems.append(f"{pid}: no SVG of non-zero size")
        curves = {}
        for line in d["lines"]:
            m = re.search(r"(?:^|; )field: ([^;]+)", line["label"])
            curve = m.group(1) if m else (ys[0] if len(ys) == 1 else "?")
            curves[curve] = max(curves.get(curve, 0), line["points"])
        for y in ys:
            if curves.get(y, 0) < 2:
                problems.append(f"{pid}: curve {y} of {file} has {curves.get(y, 0)} points against {x}")
    return problems


def _draw(page: Page, html: Path, shot: Path) -> list[dict]:
    page.open(html.as_uri())
    n = len(_plot_curves())
    # Every container says drawn or failed; an absent plot or a page without Vega never does.
    try:
        page.wait("(ds => ds.length > 0 && ds.every(d => d.hasAttribute('data-plot') || d.hasAttribute('data-plot-error')))"
                  f"(Array.from(document.querySelectorAll('body > div[id]'))) && document.querySelectorAll('body > div[id]').length >= {n}",
                  timeout=20, what="finished plots")
    except pytest.fail.Exception:
        pass  # reported below, plot by plot
    page.screenshot(shot)
    return page.js(_DRAWN)


def test_the_plots_page_draws_every_curve_of_dvc_yaml(tmp_path, browser, screenshots):
    """`make plots-page`, opened offline: each plot is an SVG with a line of >= 2 points per y column."""
    html = _make_plots_page(_plots_project(tmp_path / "proj"))
    with browser.page() as page:
        drawn = _draw(page, html, screenshots / "dvc_plots.png")
    assert [d["id"] for d in drawn] == list(_plot_curves()), "one plot per dvc.yaml definition, in its order"
    assert _undrawn(drawn) == [], f"screenshot: {screenshots / 'dvc_plots.png'}"


def test_plain_dvc_plots_show_draws_offline_after_make_install(tmp_path, browser, screenshots):
    """What DVC users type: `dvc plots show`, no options. .dvc/config names the offline template, and
    the scripts `make install` copies into .dvc/plots/js/ (`make plots-js`) draw every curve."""
    project = _plots_project(tmp_path / "proj")
    env = _env(XDG_CACHE_HOME=str(project / ".cache"))
    make = subprocess.run(["make", "--no-print-directory", "-f", str(ROOT / "Makefile"), "-C", str(project), "plots-js"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert make.returncode == 0, make.stderr
    shown = subprocess.run([str(BIN / "dvc"), "plots", "show"], cwd=project, capture_output=True, text=True, env=env, timeout=300)
    assert shown.returncode == 0, shown.stderr
    html = project / "dvc_plots" / "index.html"
    assert not list(html.parent.glob("*.js")) and not re.search(r'src="(https?:)?//', html.read_text())  # nothing beside it, nothing online
    with browser.page() as page:
        drawn = _draw(page, html, screenshots / "dvc_plots_plain.png")
    assert _undrawn(drawn) == [], f"screenshot: {screenshots / 'dvc_plots_plain.png'}"


@pytest.mark.parametrize("breakage", ["missing column", "no vega scripts"])
def test_the_plots_check_fails_on_an_empty_plot(tmp_path, browser, screenshots, breakage):
    """The check above has teeth: a curve whose column the CSV lacks, or a page that cannot draw."""
    pid = "sr_losses"
    file, _, ys = _plot_curves()[pid]
    project = _plots_project(tmp_path / "proj", drop=(file, ys[-1]) if breakage == "missing column" else None)
    html = _make_plots_page(project)
    if breakage == "no vega scripts":
        (html.parent / "vega-embed6.js").unlink()
    with browser.page() as page:
        problems = _undrawn(_draw(page, html, screenshots / f"dvc_plots_broken_{breakage.replace(' ', '_')}.png"))
    if breakage == "missing column":  # Vega draws none of that plot's curves; the others are whole
        assert problems and all(p.startswith(f"{pid}: ") for p in problems), problems
        assert f"{pid}: curve {ys[-1]} of {file} has 0 points against step" in problems
    else:
        assert len(problems) == len(_plot_curves()) and all("not drawn" in p for p in problems), problems


# -- MLflow UI ---------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


STAGES = ("patches", "train_generator", "evaluate")
GENERATOR_LRS = ("0.0002", "0.0001")  # the two pipeline runs differ in generator.lr


def _log_pipelines(project: Path) -> dict:
    """Two pipeline invocations, each a parent run with three stage runs, through pipeline.tracking."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from mlflow.tracking import MlflowClient

    from pipeline import tracking

    def figure(title: str):
        fig, ax = plt.subplots(figsize=(3, 2), dpi=100)
        ax.plot([0, 1, 2, 3], [1.0, 0.6, 0.4, 0.3])
        ax.set_title(title)
        return fig

    runs: dict = {"stages": []}
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(project)
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{project / 'mlflow.db'}")
        mp.setenv("FCA_EXPERIMENT", "fca")
        for var in ("FCA_TRACKING", "FCA_MLFLOW_ARTIFACTS"):
            mp.delenv(var, raising=False)
        for i, lr in enumerate(GENERATOR_LRS):
            mp.setenv("FCA_PIPELINE_ID", f"dvc-browser-{i}")
            ids = {}
            with tracking.stage_run("patches", {"size": 64, "blur.type": "gaussian"}) as run:
                run.log_figure(figure("kernel"), "kernel.png")
                ids["patches"] = run.run_id
            with tracking.stage_run("train_generator", {"lr": lr, "loss": "fdc", "steps": 4}) as run:
                for step in range(1, 5):
                    run.log_metrics({"loss_g": 1.0 / step, "kernel_sigma": 1.2 + 0.01 * step}, step)
                fig = figure("kernels at step 4")
                run.log_figure(fig, "kernels/step_000004.png")
                plt.close("all")
                ids["train_generator"] = run.run_id
            with tracking.stage_run("evaluate", {"bootstrap": 200}) as run:
                run.log_metrics({"density.w1_ours": 0.01 * (i + 1), "kernel.sigma_err": 0.1})
                ids["evaluate"] = run.run_id
            runs["stages"].append(ids)
        client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
        runs["parents"] = [client.get_run(client.get_run(ids["patches"]).data.tags["mlflow.parentRunId"]).info.run_name
                           for ids in runs["stages"]]
        runs["experiment"] = client.get_experiment_by_name("fca").experiment_id
    return runs


@pytest.fixture(scope="module")
def mlflow_ui(tmp_path_factory):
    """`mlflow ui` on a SQLite store holding two pipeline runs: (UI url, the runs, the project folder)."""
    project = tmp_path_factory.mktemp("mlflow-ui")
    shutil.copy(ROOT / "tests" / "params_tiny.yaml", project / "params.yaml")  # the parent runs log it
    runs = _log_pipelines(project)
    port = _free_port()
    log = project / "mlflow-ui.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(BIN / "mlflow"), "ui", "--backend-store-uri", f"sqlite:///{project / 'mlflow.db'}",
             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            cwd=project, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=_env(),
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow ui did not answer on {url}; its log:\n{log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.5)
        yield url, runs, project
    finally:
        try:  # mlflow ui (uvicorn) and its worker: the session started for it
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _ml_view(url: str) -> str:
    """The MLflow 3 UI opens a page in the GenAI view unless told otherwise: the link of
    `pipeline.tracking link` says so, and so must the other pages opened by URL (in this browser,
    opening the link does not make later pages open in the model-training view)."""
    return url + ("&" if "?" in url.split("#")[-1] else "?") + "workflowType=machine_learning"


def _assert_model_training_view(text: str) -> None:
    """The "Model training" view's sidebar, not the GenAI one's (Observability, Evaluation runs, ...)."""
    assert "Evaluation runs" not in text and "Observability" not in text, f"the page opened in the GenAI view:\n{text[:800]}"


def test_mlflow_runs_table_shows_the_pipeline_runs_and_their_stage_runs(browser, mlflow_ui, screenshots):  # browser first: no server when it skips
    url, runs, project = mlflow_ui
    link = subprocess.run([sys.executable, "-m", "pipeline.tracking", "link", url], cwd=project, capture_output=True, text=True,
                          env=_env(MLFLOW_TRACKING_URI=f"sqlite:///{project / 'mlflow.db'}"), timeout=120)
    assert link.returncode == 0, link.stderr
    link = link.stdout.strip().splitlines()[-1]
    assert link == f"{url}/#/experiments/{runs['experiment']}/runs?workflowType=machine_learning"
    with browser.page() as page:
        page.open(link)
        shot = screenshots / "mlflow_runs.png"
        # The first load compiles MLflow's scripts: slow on a busy machine.
        text = page.wait_text(runs["parents"], timeout=150, shot=shot)
        _assert_model_training_view(text)
        # Stage runs are nested under their parent run, which starts collapsed: expand each parent.
        expanders = "document.querySelectorAll('[role=\"gridcell\"][col-id=\"attributes.`Run Name`\"] button')"
        assert page.js(f"{expanders}.length") == len(runs["parents"]), "one expander per parent run (the stage runs are nested)"
        page.js(f"{expanders}.forEach(b => b.click())")
        page.wait(f"document.querySelectorAll('[role=\"gridcell\"][col-id=\"attributes.`Run Name`\"] a').length >= {len(runs['parents']) * (1 + len(STAGES))}",
                  timeout=30, what="stage runs under the parent runs", shot=shot)
        names = page.js("Array.from(document.querySelectorAll('[role=\"gridcell\"][col-id=\"attributes.`Run Name`\"] a')).map(a => a.innerText.trim())")
        page.screenshot(shot)
        assert sorted(names) == sorted([*runs["parents"], *[s for _ in runs["parents"] for s in STAGES]]), names


def test_mlflow_compare_view_shows_the_params_of_two_stage_runs(browser, mlflow_ui, screenshots):  # browser first: no server when it skips
    url, runs, _ = mlflow_ui
    ids = [r["train_generator"] for r in runs["stages"]]
    query = urllib.parse.urlencode({"runs": json.dumps(ids), "experiments": json.dumps([runs["experiment"]])})
    with browser.page(height=2000) as page:  # tall enough for the plot and the params table
        page.open(_ml_view(f"{url}/#/compare-runs?{query}"))
        shot = screenshots / "mlflow_compare.png"
        text = page.wait_text(["Comparing 2 Runs", "generator.lr", "loss_g", *GENERATOR_LRS], timeout=150, shot=shot)
        _assert_model_training_view(text)
        # The parallel-coordinates figure of the param and the metric that differ (Plotly, loaded last).
        page.wait("document.querySelector('.js-plotly-plot .main-svg')", timeout=60, what="parallel-coordinates plot", shot=shot)
        axes = page.wait("(t => t.includes('generator.lr') && t.includes('loss_g') && t)"
                         "(Array.from(document.querySelectorAll('.js-plotly-plot text')).map(e => e.textContent).join(' '))",
                         timeout=30, what="generator.lr and loss_g axes in the plot", shot=shot)
        assert "generator.lr" in axes
        page.screenshot(shot)
        # The params table: generator.lr with the two runs' values side by side on one row.
        assert re.search(r"generator\.lr\s+" + r"\s+".join(map(re.escape, GENERATOR_LRS)), text), text[:3000]
        assert text.count("train_generator") >= 2


def test_mlflow_run_page_lists_and_shows_the_figure_artifact(browser, mlflow_ui, screenshots):  # browser first: no server when it skips
    url, runs, project = mlflow_ui
    run_id = runs["stages"][0]["train_generator"]
    with browser.page() as page:
        page.open(_ml_view(f"{url}/#/experiments/{runs['experiment']}/runs/{run_id}/artifactPath/kernels/step_000004.png"))
        shot = screenshots / "mlflow_run_artifact.png"
        text = page.wait_text(["train_generator", "kernels", "step_000004.png"], timeout=150, shot=shot)
        _assert_model_training_view(text)
        # The preview: the PNG as MLflow serves it, decoded by the browser at its size (3 x 2 in at 100 dpi).
        size = page.wait("(imgs => imgs.length ? [imgs[0].naturalWidth, imgs[0].naturalHeight] : null)"
                         "(Array.from(document.images).filter(i => i.src.startsWith('blob:') && i.complete && i.naturalWidth > 0))",
                         timeout=60, what="preview of the figure", shot=shot)
        page.screenshot(shot)
        assert size == [300, 200]
