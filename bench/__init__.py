"""Benchmarks: scripts that measure and print tables (figures in BENCHMARKS.md).

Run them from the repository root as modules, e.g. ``python -m bench.throughput --small``; the
modules whose names start with ``_`` are their shared helpers.
"""
