"""`dvc repro` and `snakemake --cores 2` side by side, alone and beside a busy torch process.

    python -m benchmarks.engines_contention [--before REF] [--after DIR] [--timeout S] [--fdc-steps N] [--generator-steps N]

Not a test: a measurement, printed as a table. For each code version ("before": a clone of
REF, default HEAD; "after": the git work tree DIR, default this one, uncommitted files
included) it makes one
checkout with tests/params_tiny.yaml (training steps cut further by the options), runs
download and patches once (untimed), then times the torch stages under each engine:

    dvc repro --downstream train_fdc --force --no-run-cache
    snakemake --cores 2 --forcerun train_fdc

(train_fdc, train_generator, degrade, evaluate, report), first alone, then with one
competing CPU-bound torch process (a matmul loop at torch's default thread count and the
default niceness) running beside them. A run over --timeout seconds is stopped and shown as
">S". The stages run with FCA_TRACKING=off, and no thread settings are passed in from the
environment (OMP_NUM_THREADS, FCA_THREADS and friends are removed), as on a user's machine.
Each version runs its own code (PYTHONPATH points at its checkout). The last columns say
whether both engines wrote the same reports/metrics.json.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "FCA_THREADS")
COMPETITOR = "import torch\na = torch.randn(1024, 1024)\nwhile True:\n    a = (a @ a).tanh_()\n"


def env_for(repo: Path, work: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARS}
    env.update(PYTHONPATH=str(repo), PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", FCA_TRACKING="off", FCA_PROGRESS="off",
               DVC_NO_ANALYTICS="1", XDG_CACHE_HOME=str(work / "xdg"),
               GIT_AUTHOR_NAME="b", GIT_AUTHOR_EMAIL="b@b", GIT_COMMITTER_NAME="b", GIT_COMMITTER_EMAIL="b@b")
    return env


def checkout(version: str, ref: str, work: Path, after: Path = ROOT) -> Path:
    """A git repo with the version's files and tiny params."""
    repo = work / version
    if version == "before":
        subprocess.run(["git", "clone", "-q", str(ROOT), str(repo)], check=True)
        subprocess.run(["git", "checkout", "-q", ref], cwd=repo, check=True)
    else:
        files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=after,
                               capture_output=True, text=True, check=True).stdout.split()
        for f in files:
            if (after / f).is_file() and not f.startswith(("reports/", "dvc.lock")):
                (repo / f).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(after / f, repo / f)
        env = env_for(repo, work)
        for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "after"]):
            subprocess.run(cmd, cwd=repo, check=True, env=env, capture_output=True)
    return repo


def set_params(repo: Path, fdc_steps: int, generator_steps: int) -> None:
    params = yaml.safe_load((repo / "tests" / "params_tiny.yaml").read_text())
    params["fdc"]["steps"] = fdc_steps
    params["generator"]["steps"] = generator_steps
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def timed(cmd: list[str], repo: Path, env: dict[str, str], timeout: float) -> tuple[float | None, str]:
    """Wall seconds of cmd (None past the timeout: its whole process group is stopped) and its output tail."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        return None, out[-2000:]
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed in {repo}:\n{out[-3000:]}")
    return time.perf_counter() - t0, out[-2000:]


def digest(repo: Path) -> str:
    p = repo / "reports" / "metrics.json"
    return hashlib.sha256(p.read_bytes()).hexdigest()[:10] if p.is_file() else "-"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--before", default="HEAD", help="git ref of the 'before' code (default HEAD)")
    p.add_argument("--after", type=Path, default=ROOT, help="git work tree of the 'after' code (default: this one)")
    p.add_argument("--versions", default="before,after")
    p.add_argument("--timeout", type=float, default=180.0, help="seconds before a run is stopped")
    p.add_argument("--fdc-steps", type=int, default=40)
    p.add_argument("--generator-steps", type=int, default=20)
    p.add_argument("--keep", action="store_true", help="keep the checkouts (printed)")
    args = p.parse_args()

    engines = {
        "dvc repro": [str(BIN / "dvc"), "repro", "--downstream", "train_fdc", "--force", "--no-run-cache"],
        "snakemake --cores 2": [str(BIN / "snakemake"), "--cores", "2", "--forcerun", "train_fdc"],
    }
    work = Path(tempfile.mkdtemp(prefix="fca-engines-"))
    rows = []
    try:
        for version in args.versions.split(","):
            repo = checkout(version, args.before, work, args.after.resolve())
            set_params(repo, args.fdc_steps, args.generator_steps)
            env = env_for(repo, work)
            prep, _ = timed([str(BIN / "snakemake"), "--cores", "2", "data/patches"], repo, env, 600)
            print(f"[{version}] download + patches in {prep:.0f} s ({repo})", flush=True)
            for condition in ("alone", "+1 busy torch"):
                competitor = None
                if condition != "alone":
                    competitor = subprocess.Popen([sys.executable, "-c", COMPETITOR], env=env_for(repo, work),
                                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    time.sleep(2)
                try:
                    for engine, cmd in engines.items():
                        load = os.getloadavg()[0]
                        seconds, tail = timed(cmd, repo, env, args.timeout)
                        rows.append((version, condition, engine, seconds, load, digest(repo) if seconds else "-"))
                        shown = f"{seconds:6.1f} s" if seconds is not None else f">{args.timeout:.0f} s"
                        print(f"[{version}] {condition:14} {engine:20} {shown}  (load {load:.1f})", flush=True)
                        (repo / "reports" / "metrics.json").unlink(missing_ok=True)
                finally:
                    if competitor is not None:
                        competitor.kill()
                        competitor.wait()
    finally:
        if args.keep:
            print(f"checkouts kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    print(f"\nTorch stages of the tiny pipeline (fdc.steps {args.fdc_steps}, generator.steps {args.generator_steps}), "
          f"wall seconds on {os.cpu_count()} CPUs; load = 1-min load average when the run started")
    print(f"| code | condition | engine | seconds | load | metrics.json sha256 |")
    print("|---|---|---|---|---|---|")
    for version, condition, engine, seconds, load, h in rows:
        shown = f"{seconds:.1f}" if seconds is not None else f"> {args.timeout:.0f} (stopped)"
        print(f"| {version} | {condition} | `{engine}` | {shown} | {load:.1f} | {h} |")


if __name__ == "__main__":
    main()
