"""Shared fixtures: a small generated campaign, a pre-migrated MLflow sqlite store, a CLI runner."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import dask
import pytest

from pipelines.synthetic import CampaignConfig, CampaignTruth, generate_campaign

SMALL = CampaignConfig(n_users=3_000, n_days=5, chunk_users=1_000)


@pytest.fixture(autouse=True)
def _quiet_environment(monkeypatch):
    """No test talks to a real cluster or server unless it says so."""
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture(scope="session")
def small_campaign(tmp_path_factory) -> CampaignTruth:
    """A 3,000-user, 5-day campaign on disk (synchronous scheduler), shared read-only by the tests."""
    with dask.config.set(scheduler="synchronous"):
        return generate_campaign(SMALL, tmp_path_factory.mktemp("campaign") / "campaign", random_state=11)


@pytest.fixture(scope="session")
def _mlflow_template(tmp_path_factory) -> Path:
    """A sqlite MLflow store with its migrations already run (they take seconds): copied per test."""
    import mlflow

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    mlflow.set_tracking_uri(f"sqlite:///{path}")
    mlflow.search_experiments()
    return path


@pytest.fixture
def mlflow_uri(_mlflow_template, tmp_path) -> str:
    """A fresh, migrated sqlite tracking store for one test."""
    target = tmp_path / "mlflow.db"
    shutil.copy(_mlflow_template, target)
    return f"sqlite:///{target}"


@pytest.fixture
def in_tmp(tmp_path, monkeypatch) -> Path:
    """Run the test inside its own temporary working directory (where mlflow.db / mlartifacts would go)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@dataclass
class Completed:
    code: int
    stdout: str
    stderr: str


def run_campaign(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300) -> Completed:
    """Run the real `campaign` console script in a subprocess."""
    script = Path(sys.executable).parent / "campaign"
    merged = {k: v for k, v in os.environ.items() if k not in ("DASK_SCHEDULER_ADDRESS", "MLFLOW_TRACKING_URI")}
    merged |= env or {}
    done = subprocess.run([str(script), *args], cwd=cwd, env=merged, capture_output=True, text=True, timeout=timeout)
    return Completed(done.returncode, done.stdout, done.stderr)
