"""Shared machinery of the benchmarks: one measurement per fresh subprocess, sizes on disk, result tables.

Peak memory is the peak resident set size (`ru_maxrss`) of a fresh Python process that does exactly one
measurement, so nothing from an earlier measurement (allocator arenas, caches, imported modules) inflates it.
The child runs `python -m benchmarks._harness MODULE:FUNCTION JSON_KWARGS`, calls the function, and prints one
line `@@RESULT@@ {json}` with the function's result plus the process's memory figures.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
DATA_DIR = BENCH_DIR / ".data"  # git-ignored: generated inputs, outputs and the JSON results of the last run
RESULTS_DIR = DATA_DIR / "results"
_MARK = "@@RESULT@@ "
MIB = 1024 * 1024
GIB = 1024 * MIB


def _rss_now() -> int:
    """Current resident set size of this process in bytes (Linux /proc; 0 where unavailable)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def peak_rss() -> int:
    """Peak resident set size of this process so far, in bytes (ru_maxrss is in KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


#: Longest wait for a quiet machine before each measurement (0: start at once); quick runs set 0.
settings = {"max_quiet_wait_s": 180.0}


def wait_for_quiet(max_wait_s: float | None = None, threshold: float = 0.15) -> tuple[float, float]:
    """Wait (up to max_wait_s) until the machine is nearly idle; return (seconds waited, busy share at the start).

    The benchmarks share the machine with whatever else runs on it; starting on a quiet machine and reporting the
    other processes' CPU use during each run (see `measure_in_subprocess`) keeps that visible.
    """
    import psutil

    max_wait_s = settings["max_quiet_wait_s"] if max_wait_s is None else max_wait_s
    if max_wait_s <= 0:
        return 0.0, float("nan")
    started = time.monotonic()
    while True:
        busy = psutil.cpu_percent(interval=2.0) / 100.0
        if busy < threshold or time.monotonic() - started > max_wait_s:
            return time.monotonic() - started, busy


def measure_in_subprocess(target: str, timeout: float | None = None, prepare: Callable[[], None] | None = None,
                          **kwargs) -> dict:
    """Run `target` ("package.module:function") with `kwargs` in a fresh interpreter; return its result dict.

    Added keys: `rss_after_import_bytes` (the process once the benchmark module and its imports are loaded),
    `peak_rss_bytes` (peak RSS of the whole process, imports included), `process_wall_s`, `process_cpu_s` (user +
    system CPU of the subprocess, all threads), and `other_load_cores`: CPU used by *other* processes on the
    machine during the run, in cores (0 on a quiet machine; anything near 1 means the figures are contended).
    `prepare` runs just before the subprocess starts (after waiting for a quiet machine): e.g. warm the page cache.
    """
    import psutil

    waited, busy_before = wait_for_quiet()
    if prepare is not None:
        prepare()
    command = [sys.executable, "-m", "benchmarks._harness", target, json.dumps(kwargs)]
    env = dict(os.environ)
    env.pop("DASK_SCHEDULER_ADDRESS", None)  # always the in-process cluster / local scheduler
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_before = psutil.cpu_times()
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    elapsed = time.perf_counter() - started
    cpu_after = psutil.cpu_times()
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    lines = [line for line in done.stdout.splitlines() if line.startswith(_MARK)]
    if done.returncode != 0 or not lines:
        sys.stderr.write(done.stdout[-5000:] + done.stderr[-5000:])
        raise RuntimeError(f"benchmark subprocess {target} failed with exit code {done.returncode}")
    result = json.loads(lines[-1][len(_MARK):])
    child_cpu = ((children_after.ru_utime - children_before.ru_utime)
                 + (children_after.ru_stime - children_before.ru_stime))
    busy = sum(getattr(cpu_after, f) - getattr(cpu_before, f)
               for f in ("user", "nice", "system", "irq", "softirq") if hasattr(cpu_after, f))
    result |= {"git": git_state(), "process_wall_s": elapsed, "process_cpu_s": child_cpu,
               "other_load_cores": max(busy - child_cpu, 0.0) / elapsed,
               "quiet_wait_s": waited, "busy_before": busy_before}
    return result


def _child(target: str, kwargs_json: str) -> None:
    module_name, function_name = target.split(":")
    module = importlib.import_module(module_name)
    rss_after_import = _rss_now()
    result = getattr(module, function_name)(**json.loads(kwargs_json))
    result["rss_after_import_bytes"] = rss_after_import
    result["peak_rss_bytes"] = peak_rss()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result["minor_page_faults"], result["major_page_faults"] = usage.ru_minflt, usage.ru_majflt
    sys.stdout.write(_MARK + json.dumps(result) + "\n")
    sys.stdout.flush()


def ensure_files(folder: Path, n_rows: int, rows_per_file: int, write: Callable[[int, Path], None],
                 label: str) -> list[Path]:
    """The first n_rows / rows_per_file numbered parquet files of a generated input under `folder`.

    Missing files are written by `write(index, path)` (which must derive its randomness from the index alone, so
    any file can be (re)written by itself) to a temporary name and renamed when complete.
    """
    if n_rows % rows_per_file:
        raise ValueError(f"rows: {n_rows:,} is not a multiple of rows per file {rows_per_file:,}")
    folder.mkdir(parents=True, exist_ok=True)
    files = [folder / f"part-{i:05d}.parquet" for i in range(n_rows // rows_per_file)]
    for index, file in enumerate(files):
        if file.exists():
            continue
        started = time.perf_counter()
        temporary = file.with_name(f".{file.name}.tmp-{os.getpid()}")
        write(index, temporary)
        os.replace(temporary, file)
        print(f"[{label}] wrote {file.relative_to(REPO_ROOT)} ({time.perf_counter() - started:.1f} s)", flush=True)
    return files


def warm_page_cache(files: Sequence[Path]) -> None:
    """Read the files once so the measured run reads them from the page cache."""
    for file in files:
        with open(file, "rb") as handle:
            while handle.read(64 * MIB):
                pass


def tree_size(path: Path) -> int:
    """Bytes on disk of the files under `path` (apparent sizes)."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def tree_digest(path: Path) -> str:
    """SHA-256 over the relative paths and contents of every file under `path`, in sorted order."""
    digest = hashlib.sha256()
    root = Path(path)
    for file in sorted(f for f in root.rglob("*") if f.is_file()):
        digest.update(str(file.relative_to(root)).encode() + b"\0")
        with open(file, "rb") as handle:
            while block := handle.read(8 * MIB):
                digest.update(block)
    return digest.hexdigest()


def machine_info() -> dict:
    """The machine and the library versions the figures were taken with."""
    import dask
    import distributed
    import numpy
    import pandas
    import pyarrow

    try:
        import psutil

        memory = f"{psutil.virtual_memory().total / GIB:.1f} GiB"
    except ImportError:  # pragma: no cover
        memory = f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / GIB:.1f} GiB"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "git": git_state(),
        "cpu": cpu, "cores": os.cpu_count(), "memory": memory, "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
        "versions": {"numpy": numpy.__version__, "pandas": pandas.__version__, "pyarrow": pyarrow.__version__,
                     "dask": dask.__version__, "distributed": distributed.__version__},
    }


def git_state() -> dict:
    """The commit the figures were taken at, and the library files that differed from it (uncommitted edits)."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                                  timeout=30).stdout.rstrip()
        except (OSError, subprocess.SubprocessError):
            return ""

    modified = [line[3:] for line in git("status", "--porcelain", "--untracked-files=no").splitlines()]
    return {"commit": git("rev-parse", "--short", "HEAD"), "modified": modified}


def save_results(name: str, command: str, payload: dict) -> Path:
    """Write the results of one benchmark run as JSON under benchmarks/.data/results/ (git-ignored)."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    target = RESULTS_DIR / f"{name}.json"
    record = {"command": command, "machine": machine_info(), "recorded": time.strftime("%Y-%m-%d %H:%M:%S"),
              **payload}
    target.write_text(json.dumps(record, indent=2))
    return target


def command_line(module: str, argv: Sequence[str] | None) -> str:
    """The command that reproduces a run, as typed from the repository root."""
    args = list(sys.argv[1:] if argv is None else argv)
    return " ".join([".venv/bin/python", "-m", module, *args])


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-flavoured markdown table."""
    cells = [[str(c) for c in row] for row in rows]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines)


def mib(n_bytes: float) -> str:
    return f"{n_bytes / MIB:,.0f} MiB"


def rate(rows: float, seconds: float) -> str:
    return f"{rows / seconds / 1e6:,.2f} M rows/s"


if __name__ == "__main__":
    _child(sys.argv[1], sys.argv[2])


def add_common_arguments(parser: argparse.ArgumentParser, *, repeat: int) -> None:
    """The options every benchmark takes: seed, repeats, warm-up, quiet-machine wait and --quick."""
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=repeat,
                        help=f"runs per measurement, each in a fresh process (default {repeat})")
    parser.add_argument("--warmup", type=int, default=None,
                        help="discarded runs before each series (default 1; 0 with --quick)")
    parser.add_argument("--max-wait", type=float, default=None,
                        help="seconds to wait for a quiet machine before each run (default 180; 0 with --quick)")
    parser.add_argument("--quick", action="store_true", help="small sizes, no warm-up, no waiting")


def apply_common_arguments(args: argparse.Namespace) -> int:
    """Set the quiet-machine wait from the parsed options and return the number of warm-up runs."""
    settings["max_quiet_wait_s"] = args.max_wait if args.max_wait is not None else (0.0 if args.quick else 180.0)
    return args.warmup if args.warmup is not None else (0 if args.quick else 1)
