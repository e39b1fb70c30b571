"""FCA: Frequency Consistent Adaptation for real-world super-resolution.

The library is pure: tensors and arrays in, tensors and arrays out. No argparse,
no YAML, no MLflow and no hard-coded paths live here; `pipeline/` is the glue.
"""

__version__ = "0.1.0"
