"""A job killed with SIGKILL mid-write leaves no partial output, and a rerun succeeds.

Outputs are written to a hidden temporary sibling `.<name>.tmp-<hex>` and renamed when complete
(pipelines/io.py `atomic_output`), so after a SIGKILL the target is either absent or exactly the earlier complete
output, and the next write of the same target sweeps the stale sibling away.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from tests.conftest import run_campaign
from tests.services import service_env

CAMPAIGN = Path(sys.executable).parent / "campaign"
USERS, CHUNK = 60_000, 5_000  # 12 chunks: a few seconds of writing, so the kill lands mid-write
WAIT = 120.0

# Runs the real CLI, but the first CSV written under a temporary name is written half-way, flushed, announced by
# a marker file, and then the process waits to be killed: a SIGKILL in the middle of writing a single file.
STALLED_CSV_DRIVER = """
import os, sys, time
import pandas as pd

original = pd.DataFrame.to_csv

def stalled(self, path_or_buf=None, *args, **kwargs):
    if isinstance(path_or_buf, (str, os.PathLike)) and ".tmp-" in os.fspath(path_or_buf):
        text = original(self, None, *args, **kwargs)
        with open(path_or_buf, "w") as handle:
            handle.write(text[: len(text) // 2])
            handle.flush()
            os.fsync(handle.fileno())
        open(os.environ["KILL_TEST_MARKER"], "w").close()
        time.sleep(600)
    return original(self, path_or_buf, *args, **kwargs)

pd.DataFrame.to_csv = stalled
from pipelines.cli import main
sys.exit(main(sys.argv[1:]))
"""


# ---------------------------------------------------------------------------- helpers
def launch(command: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen:
    log = open(cwd / f"killed-{time.monotonic_ns()}.log", "wb")  # noqa: SIM115 - closed by kill()
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, start_new_session=True)
    process.log = log  # type: ignore[attr-defined]
    return process


def log_of(process: subprocess.Popen) -> str:
    process.log.flush()  # type: ignore[attr-defined]
    return Path(process.log.name).read_text(errors="replace")[-4000:]  # type: ignore[attr-defined]


def wait_for(condition, process: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if process.poll() is not None:
            output = log_of(process)
            process.log.close()  # type: ignore[attr-defined]
            pytest.fail(f"the process ended (exit {process.returncode}) before {what}:\n{output}")
        if time.monotonic() > deadline:
            output = log_of(process)
            kill(process)
            pytest.fail(f"timed out waiting for {what}:\n{output}")
        time.sleep(0.02)


def kill(process: subprocess.Popen) -> None:
    """SIGKILL the process (and its process group); it must have been killed, not have finished by itself."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=30)
    process.log.close()  # type: ignore[attr-defined]


def temporaries(target: Path) -> list[Path]:
    return sorted(target.parent.glob(f".{target.name}.tmp-*"))


def digests(root: Path) -> dict[str, str]:
    files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
    return {str(p.relative_to(root) if root.is_dir() else p.name): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in files}


def parquet_rows(folder: Path) -> int:
    return sum(pq.ParquetFile(part).metadata.num_rows for part in sorted(folder.glob("part-*.parquet")))


def assert_complete_campaign(out: Path, users: int) -> dict:
    manifest = json.loads((out / "campaign.json").read_text())
    assert manifest["n_users"] == users
    assert parquet_rows(out / "users") == users
    assert len(list((out / "logs").glob("part-*.parquet"))) == -(-users // CHUNK)
    assert parquet_rows(out / "logs") == manifest["n_log_rows"] > 0
    assert parquet_rows(out / "truth" / "logs") == manifest["n_log_rows"]
    assert parquet_rows(out / "truth" / "users") == users
    for file in ("interactions.parquet", "features.parquet", "arms.parquet"):
        assert (out / "truth" / file).is_file()
    return manifest


def generate_args(out: Path, seed: int, mlflow_uri: str) -> list[str]:
    return ["generate", "--users", str(USERS), "--days", "3", "--chunk-users", str(CHUNK), "--seed", str(seed),
            "--out", str(out), "--tracking-uri", mlflow_uri]


def kill_generate_mid_write(out: Path, seed: int, mlflow_uri: str, cwd: Path) -> None:
    """Start `campaign generate`, SIGKILL it once some (not all) chunks of users are on disk."""
    watched = [] if out.exists() else [out]  # a non-atomic writer would write straight into a new target
    process = launch([str(CAMPAIGN), *generate_args(out, seed, mlflow_uri)], cwd, service_env())

    def some_chunks_written() -> bool:
        return any(any(folder.glob("logs/part-*.parquet")) for folder in [*temporaries(out), *watched])

    wait_for(some_chunks_written, process, f"the first chunks under {out.name} or .{out.name}.tmp-*")
    kill(process)
    assert process.returncode == -signal.SIGKILL, f"not killed mid-write (exit {process.returncode})"


def assert_stale_partial_write(out: Path) -> Path:
    """The killed write is still there, hidden, under its temporary name only, and it is incomplete."""
    (stale,) = temporaries(out)
    assert stale.name.startswith(f".{out.name}.tmp-")
    assert not (stale / "campaign.json").exists(), "the kill came after the write was complete"
    assert 0 < len(list((stale / "logs").glob("part-*.parquet"))) < -(-USERS // CHUNK)
    return stale


# ---------------------------------------------------------------------------- a folder output (generate)
def test_killed_generate_leaves_no_output_and_rerun_succeeds(tmp_path, mlflow_uri):
    out = tmp_path / "campaign"
    kill_generate_mid_write(out, seed=5, mlflow_uri=mlflow_uri, cwd=tmp_path)
    assert not out.exists(), "a killed write left a (partial) output behind"
    assert_stale_partial_write(out)

    done = run_campaign(*generate_args(out, 5, mlflow_uri), cwd=tmp_path, timeout=240)
    assert done.code == 0, done.stderr[-3000:]
    assert_complete_campaign(out, USERS)
    assert temporaries(out) == [], "the rerun did not sweep the stale temporary folder"


def test_killed_generate_keeps_the_earlier_complete_output(tmp_path, mlflow_uri):
    out = tmp_path / "campaign"
    done = run_campaign(*generate_args(out, 1, mlflow_uri), cwd=tmp_path, timeout=240)
    assert done.code == 0, done.stderr[-3000:]
    earlier = digests(out)
    assert_complete_campaign(out, USERS)

    kill_generate_mid_write(out, seed=2, mlflow_uri=mlflow_uri, cwd=tmp_path)  # another seed: other bytes
    assert digests(out) == earlier, "a killed write changed the earlier complete output"
    assert_stale_partial_write(out)

    done = run_campaign(*generate_args(out, 2, mlflow_uri), cwd=tmp_path, timeout=240)
    assert done.code == 0, done.stderr[-3000:]
    manifest = assert_complete_campaign(out, USERS)
    assert manifest["seed"] == 2 and digests(out) != earlier
    assert temporaries(out) == []


# ---------------------------------------------------------------------------- a single-file output (profile-logs)
def kill_profile_mid_file(args: list[str], out: Path, cwd: Path) -> Path:
    """Run `campaign profile-logs` until its CSV is half-written under the temporary name, then SIGKILL it."""
    marker = cwd / "half-written"
    marker.unlink(missing_ok=True)
    process = launch([sys.executable, "-c", STALLED_CSV_DRIVER, *args], cwd, service_env(KILL_TEST_MARKER=str(marker)))
    wait_for(marker.exists, process, "the profile CSV to be half-written")
    kill(process)
    assert process.returncode == -signal.SIGKILL
    (stale,) = temporaries(out)  # the half-written file exists, under its temporary name only
    assert stale.stat().st_size > 0
    return stale


def test_killed_profile_logs_mid_file_leaves_no_partial_file(small_campaign, tmp_path, mlflow_uri):
    out = tmp_path / "out" / "profile.csv"
    args = ["profile-logs", "--logs", str(small_campaign.paths.logs), "--out", str(out), "--randomized",
            "randomized", "--tracking-uri", mlflow_uri]

    def rerun_succeeds() -> bytes:
        done = run_campaign(*args, cwd=tmp_path, timeout=180)
        assert done.code == 0, done.stderr[-3000:]
        profile = pd.read_csv(out, index_col=0)
        assert profile["rows"].sum() == small_campaign.n_log_rows
        assert sorted(profile.index) == sorted(small_campaign.world.arm_labels)
        assert temporaries(out) == [], "the rerun did not sweep the stale temporary file"
        return out.read_bytes()

    # 1. no earlier output: the killed write leaves nothing under the output's name
    kill_profile_mid_file(args, out, tmp_path)
    assert not out.exists(), "a killed write left a partial output file"
    complete = rerun_succeeds()

    # 2. an earlier complete output: the killed write leaves it exactly as it was
    stale = kill_profile_mid_file(args, out, tmp_path)
    assert out.read_bytes() == complete, "a killed write changed the earlier complete output"
    assert stale.read_bytes() == complete[: len(stale.read_bytes())] != complete  # the half we killed
    assert rerun_succeeds() == complete  # same inputs, same bytes
