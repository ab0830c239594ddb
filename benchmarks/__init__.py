"""Benchmarks: each `bench_*.py` module measures one thing; `python -m benchmarks.run_all` runs them all."""
