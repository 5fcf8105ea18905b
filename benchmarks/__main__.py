from __future__ import annotations

import importlib
import json
import os
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
RESULTS = HERE / "results" / "latest.jsonl"


def available() -> list[str]:
    return sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))


def run_one(name: str, seconds: float | None) -> dict:
    module = importlib.import_module(f"benchmarks.bench_{name}")
    started = time.time()
    figures = module.run(seconds)
    result = {"bench": name, **figures}
    line = json.dumps(result, default=float)
    print(line, flush=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    record = {**result, "_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "_wall_s": round(time.time() - started, 2),
              "_host": platform.node(), "_cpus": os.cpu_count()}
    with RESULTS.open("a") as fh:
        fh.write(json.dumps(record, default=float) + "\n")
    return result


def main(argv: list[str]) -> int:
    names = [a for a in argv if a] or available()
    unknown = [n for n in names if n not in available()]
    if unknown:
        print(f"error: unknown benchmark(s) {', '.join(unknown)}; available: {', '.join(available())}",
              file=sys.stderr)
        return 2
    seconds_env = os.environ.get("BENCH_SECONDS")
    seconds = float(seconds_env) if seconds_env else None
    for name in names:
        run_one(name, seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
