# Snakemake rules derived from dvc.yaml, the one description of the stage graph.
# Run: snakemake --cores 2        (a log per rule in logs/<stage>.log)
# Each rule runs the same command DVC runs; a changed param re-runs the rules that
# declare it (Snakemake's params rerun trigger), like `dvc repro`.
# A rule's threads are its command's `--threads` (1 without), so --cores C never runs
# jobs needing more than C threads at once.
from pipeline.dag import load_stages, param_values

STAGES = load_stages("dvc.yaml")
PARAMS_FILE = "params.yaml"  # the stages read it by default, as under DVC


rule all:
    default_target: True
    input:
        [out for stage in STAGES for out in stage.outs],


for stage in STAGES:

    rule:
        name:
            stage.name
        input:
            stage.inputs,  # the deps, with a source folder (kernels/) as its files
        output:
            [directory(o) if stage.is_dir(o) else o for o in stage.outs],
        params:
            values=param_values(PARAMS_FILE, stage.params),
            cmd=stage.cmd,
        log:
            f"logs/{stage.name}.log",
        threads: stage.threads  # the command's --threads (dvc.yaml); Snakemake sets OMP_NUM_THREADS to it
        conda:
            "envs/fca.yaml"  # only used with --sdm conda; `make` installs the same into .venv
        shell:
            "({params.cmd}) 2>&1 | tee {log}"
