"""Starting and stopping real services (Dask scheduler and worker, MLflow server) for the tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path


def campaign_job_yaml(experiment: str, run_name: str | None = None) -> str:
    """A small generate + profile-logs job (3,000 users in 3 chunks) writing under data/ and out/."""
    name = f"run_name: {run_name}\n" if run_name else ""
    return f"""\
seed: 7
experiment: {experiment}
{name}generate:
  out: data/campaign
  n_users: 3000
  n_days: 5
  chunk_users: 1000
profile-logs:
  logs: data/campaign/logs
  out: out/log_profile.csv
  randomized: randomized
"""


def bandit_job_yaml(experiment: str) -> str:
    """generate (3,000 users in 3 chunks) + select-features (user-level permutations over the 3 partitions) +
    fit-bandit on the train users + evaluate-policy on the holdout."""
    return f"""\
seed: 5
experiment: {experiment}
generate: {{out: data/campaign, n_users: 3000, n_days: 3, chunk_users: 1000, avg_degree: 0}}
select-features: {{logs: data/campaign/logs, out: out/scores.csv, propensity: propensity, n_permutations: 30,
                  features: [price_sensitivity, channel, device, noise_0]}}
fit-bandit:
  logs: data/campaign/logs
  out: out/policy
  features: [price_sensitivity, channel, is_member, basket_value]
  policy: lin-ts
  split: train
evaluate-policy: {{logs: data/campaign/logs, out: out/value.csv, split: holdout, estimators: [ips, snips, dr, replay]}}
"""


def service_env(**extra: str) -> dict[str, str]:
    """The test process's environment without the variables that would point a service elsewhere."""
    env = {k: v for k, v in os.environ.items() if k not in ("DASK_SCHEDULER_ADDRESS", "MLFLOW_TRACKING_URI")}
    return env | extra


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start(command: list[str], log: Path, cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start a service in its own process group (so that it and its children can be stopped together)."""
    env = env or service_env()
    with open(log, "ab") as sink:
        return subprocess.Popen(command, cwd=cwd, env=env, stdout=sink, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)


def stop(process: subprocess.Popen | None, grace: float = 10.0) -> None:
    """SIGTERM the process group, then SIGKILL it if it is still there after `grace` seconds."""
    if process is None:
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        if process.poll() is not None:
            break
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
    # The worker's nanny may leave its child behind briefly: make sure the whole group is gone.
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if process.poll() is None:
        process.wait(timeout=5)


def listens(process: subprocess.Popen, port: int) -> bool:
    """Whether `process` or one of its children holds the listening socket on `port` (and not someone else)."""
    import psutil

    try:
        parent = psutil.Process(process.pid)
        family = [parent, *parent.children(recursive=True)]
    except psutil.NoSuchProcess:
        return False
    for member in family:
        try:
            sockets = member.net_connections(kind="tcp")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if any(s.status == psutil.CONN_LISTEN and s.laddr and s.laddr.port == port for s in sockets):
            return True
    return False


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
