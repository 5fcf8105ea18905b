"""Benchmarks: ``python -m benchmarks [name]`` (``make bench BENCH=name``).

Each ``benchmarks/bench_<name>.py`` defines ``run(seconds: float | None) -> dict``. The runner prints the
result as one JSON line starting with ``{"bench": "<name>", ...}`` and appends it to
``benchmarks/results/latest.jsonl``. ``BENCH_SECONDS`` shortens the long-running benchmarks.
"""
