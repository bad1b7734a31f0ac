"""Benchmarks of `sage` against plain SSH on the test rig (see bench/bench.py and bench/README.md)."""
