# Snakemake rules derived from dvc.yaml, the one description of the stage graph.
# Run: snakemake --cores 2        (a log per rule in logs/<stage>.log)
# Each rule runs the same command DVC runs; a changed param re-runs the rules that
# declare it and everything downstream, like `dvc repro`, whichever engine built the
# outputs: each rule has an input .fca/params/<stage>.json (git- and DVC-ignored, not a
# DVC dep), the values of the params the stage declares, rewritten here only when they
# change, so it is newer than the outputs after a change (pipeline.dag.params_stamp;
# created older than the outputs where dvc.lock records these values for outputs DVC
# made). Snakemake's own params trigger (`params: values`) still applies to its own runs.
# A rule's threads are its command's `--threads` (1 without), so --cores C never runs
# jobs needing more than C threads at once.
from pipeline.dag import load_stages, param_values, params_stamp

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
            params_stamp(stage, PARAMS_FILE),  # written now if the declared params changed
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
