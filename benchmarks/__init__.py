"""Timing scripts, run from the repo root as modules: `.venv/bin/python -m benchmarks.bench_engine`."""
