"""A real Dask cluster: `dask scheduler` and one `dask worker` started as processes on 127.0.0.1.

The same job run through `--scheduler` (or $DASK_SCHEDULER_ADDRESS) must write exactly the bytes that the
in-process run writes, and its tasks must really run on the external worker.
"""

from __future__ import annotations

import hashlib
import pickle
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import run_campaign
from tests.services import bandit_job_yaml, campaign_job_yaml, free_port, listens, start, stop, tail

pytestmark = [pytest.mark.real_services, pytest.mark.xdist_group("dask")]

DASK = Path(sys.executable).parent / "dask"
START_TIMEOUT = 60.0

JOB_YAML = campaign_job_yaml("real-dask")
OUTPUT_FOLDERS = ("data", "out")


# ---------------------------------------------------------------------------- helpers
def digests(root: Path) -> dict[str, str]:
    """sha256 of every file under the output folders of a job folder, by relative path."""
    found: dict[str, str] = {}
    for folder in OUTPUT_FOLDERS:
        for file in sorted((root / folder).rglob("*")):
            if file.is_file():
                found[str(file.relative_to(root))] = hashlib.sha256(file.read_bytes()).hexdigest()
    return found


def job_folder(base: Path) -> Path:
    base.mkdir(parents=True)
    (base / "job.yaml").write_text(JOB_YAML)
    return base


def expect_ok(done, what: str) -> None:
    assert done.code == 0, f"{what} failed with exit code {done.code}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


# ---------------------------------------------------------------------------- the cluster
@dataclass
class Cluster:
    address: str
    logs: Path

    def executed_tasks(self) -> int:
        """Tasks the worker has run so far (proves that a job really used this cluster)."""
        from distributed import Client

        with Client(self.address, timeout="20s") as client:
            counts = client.run(lambda dask_worker: dask_worker.state.executed_count)
        assert len(counts) == 1, counts
        return next(iter(counts.values()))


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory) -> Iterator[Cluster]:
    """`dask scheduler` + one single-threaded `dask worker`, on a free port (retried on a collision)."""
    from distributed import Client

    home = tmp_path_factory.mktemp("dask-cluster")
    scheduler = worker = None
    try:
        for attempt in range(3):
            port = free_port()
            address = f"tcp://127.0.0.1:{port}"
            scheduler_log = home / f"scheduler-{attempt}.log"
            scheduler = start([str(DASK), "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
                              scheduler_log, home)
            worker = start([str(DASK), "worker", address, "--nthreads", "1", "--nworkers", "1", "--no-dashboard",
                            "--local-directory", str(home / "worker-space"), "--name", "test-worker"],
                           home / f"worker-{attempt}.log", home)
            deadline = time.monotonic() + START_TIMEOUT
            # Connect only once the scheduler we started holds the port: a Client talking to some other listener
            # on a colliding port can wait forever, and another test's scheduler there would answer for ours.
            while time.monotonic() < deadline and scheduler.poll() is None and not listens(scheduler, port):
                time.sleep(0.2)
            if scheduler.poll() is None and listens(scheduler, port):
                try:
                    with Client(address, timeout="20s") as client:
                        client.wait_for_workers(1, timeout=max(1.0, deadline - time.monotonic()))
                    break
                except (OSError, TimeoutError):
                    pass
            stop(worker)
            stop(scheduler)
            scheduler = worker = None
            if attempt == 2:  # a port collision is retried; anything else three times in a row is a failure
                pytest.fail(f"dask cluster did not start at {address}:\n{tail(scheduler_log)}\n"
                            f"{tail(home / f'worker-{attempt}.log')}")
        yield Cluster(address, home)
    finally:
        stop(worker)
        stop(scheduler)


@pytest.fixture(scope="module")
def in_process_run(tmp_path_factory) -> dict[str, str]:
    """The reference: the job run on the default in-process cluster; digests of everything it wrote."""
    folder = job_folder(tmp_path_factory.mktemp("dask-reference") / "job")
    expect_ok(run_campaign("run", "job.yaml", cwd=folder, timeout=180), "in-process run")
    found = digests(folder)
    assert any(name.startswith("out/") for name in found) and sum(n.startswith("data/") for n in found) > 10
    return found


# ---------------------------------------------------------------------------- tests
def test_scheduler_option_gives_byte_identical_outputs(dask_cluster, in_process_run, tmp_path):
    folder = job_folder(tmp_path / "job")
    before = dask_cluster.executed_tasks()
    done = run_campaign("run", "job.yaml", "--scheduler", dask_cluster.address, cwd=folder, timeout=180)
    expect_ok(done, "run --scheduler")
    # generate runs one task per chunk of users (3) on the cluster, profile-logs one per partition plus merges.
    assert dask_cluster.executed_tasks() - before >= 3, "the job did not run its tasks on the external worker"

    on_cluster = digests(folder)
    assert sorted(on_cluster) == sorted(in_process_run)
    assert {"data/campaign/logs/part-00000.parquet", "data/campaign/logs/part-00002.parquet",
            "data/campaign/campaign.json", "out/log_profile.csv"} <= set(on_cluster)
    different = [name for name in on_cluster if on_cluster[name] != in_process_run[name]]
    assert not different, f"files that differ from the in-process run: {different}"
    assert not list(folder.rglob(".*.tmp-*")), "temporary siblings left behind"


def test_scheduler_environment_variable_gives_byte_identical_outputs(dask_cluster, in_process_run, tmp_path):
    folder = job_folder(tmp_path / "job")
    before = dask_cluster.executed_tasks()
    done = run_campaign("run", "job.yaml", cwd=folder, env={"DASK_SCHEDULER_ADDRESS": dask_cluster.address},
                        timeout=180)
    expect_ok(done, "run with DASK_SCHEDULER_ADDRESS")
    assert dask_cluster.executed_tasks() - before >= 3, "DASK_SCHEDULER_ADDRESS was not used"
    assert digests(folder) == in_process_run


def test_bandit_stages_on_the_cluster_match_the_in_process_run(dask_cluster, tmp_path):
    """select-features (the log regrouped by user, user-level permutations), fit-bandit (map-reduce of ridge
    statistics) and evaluate-policy (two OPE passes) give the same scores, policy and estimates table, byte for byte,
    on the external cluster as in process."""
    tables, policies = {}, {}
    for where, extra in (("local", ()), ("cluster", ("--scheduler", dask_cluster.address))):
        folder = tmp_path / where
        folder.mkdir()
        (folder / "job.yaml").write_text(bandit_job_yaml("real-dask-bandit"))
        before = dask_cluster.executed_tasks()
        expect_ok(run_campaign("run", "job.yaml", *extra, cwd=folder, timeout=240), f"bandit job {where}")
        if extra:
            assert dask_cluster.executed_tasks() - before >= 6, "the bandit stages did not run on the worker"
        tables[where] = [(folder / "out" / name).read_bytes() for name in ("value.csv", "scores.csv")]
        with open(folder / "out" / "policy" / "artifacts" / "policy.pkl", "rb") as file:
            policies[where] = pickle.load(file)
    assert tables["local"] == tables["cluster"]
    local, cluster = policies["local"], policies["cluster"]
    assert np.array_equal(local.policy.theta_, cluster.policy.theta_)  # bit for bit, not approximately
    assert np.array_equal(local.policy.stats_.gram, cluster.policy.stats_.gram)
    assert local.encoder.numeric_ == cluster.encoder.numeric_ and local.encoder.levels_ == cluster.encoder.levels_
