"""Thin glue between the engines (DVC, Snakemake), params.yaml, MLflow and the `fca` library."""
