"""Run every benchmark module in this folder (`bench_*.py`) with its default sizes and print the results.

    python -m benchmarks.run_all            # full sizes (several minutes each); `make bench` runs this
    python -m benchmarks.run_all --quick    # small sizes: a smoke test of every benchmark
    python -m benchmarks.run_all --only generator

Each module's `main(argv)` prints its own tables and saves its figures as JSON under benchmarks/.data/results/.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent


def benchmark_modules() -> list[str]:
    """Names of the benchmark modules, in file-name order: benchmarks.bench_<name>."""
    return [f"benchmarks.{path.stem}" for path in sorted(BENCH_DIR.glob("bench_*.py"))]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run_all", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes for every benchmark")
    parser.add_argument("--only", action="append", metavar="NAME",
                        help="run only benchmarks whose module name contains NAME (repeatable)")
    args = parser.parse_args(argv)
    modules = [m for m in benchmark_modules() if not args.only or any(name in m for name in args.only)]
    failed = []
    for name in modules:
        print(f"\n=== {name}{' (quick)' if args.quick else ''} ===", flush=True)
        started = time.perf_counter()
        try:
            module = importlib.import_module(name)
            module.main(["--quick"] if args.quick else [])
        except Exception:  # one broken benchmark must not hide the others' figures
            traceback.print_exc()
            failed.append(name)
        print(f"=== {name}: {time.perf_counter() - started:.0f} s ===", flush=True)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
