"""Speed and memory benchmarks and experiment scripts; `make bench` runs `python -m benchmarks.run`. Not part of the tests."""
