"""Normal runs print no library warnings or logs a user cannot act on (MLflow schema hints, Dask's large-graph and
shuffle notes, solver banners): the causes are fixed, or the notes are filtered where they arise."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator

import dask.dataframe as dd
import numpy as np
import pandas as pd

from pipelines.cli import main
from pipelines.execution import dask_client, run_statistic

JOB = """
seed: 3
experiment: quiet
generate: {out: campaign, n_users: 600, n_days: 2, transitions_horizon: 2, chunk_users: 200, avg_degree: 4}
profile-logs: {logs: campaign/logs, out: out/profile.csv}
select-features: {logs: campaign/logs, out: out/features.csv, n_permutations: 20}
fit-bandit: {logs: campaign/logs, out: out/policy}
evaluate-policy: {logs: campaign/logs, out: out/value.csv, n_folds: 2}
allocate: {users: campaign/users, logs: campaign/logs, out: out/allocation, max_iter: 5, max_training_rows: 1000,
           min_treated_share: 0.1}
constrained-rl: {transitions: campaign/transitions, out: out/mixed, bootstrap: 2}
"""


@contextlib.contextmanager
def _warnings_as_a_user_sees_them() -> Iterator[list[warnings.WarningMessage]]:
    """Record the warnings Python would print for a console script: its default filters (deprecations hidden outside
    `__main__`), not pytest's."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.resetwarnings()
        warnings.simplefilter("default")
        for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
            warnings.filterwarnings("ignore", category=category)
        yield caught


def _from_libraries(caught: list[warnings.WarningMessage]) -> list[str]:
    return [f"{w.category.__name__} at {w.filename}:{w.lineno}: {w.message}" for w in caught
            if "site-packages" in w.filename]


def test_a_job_through_every_kind_of_stage_prints_nothing_from_the_libraries(in_tmp, mlflow_uri, capfd):
    (in_tmp / "job.yaml").write_text(JOB)
    with _warnings_as_a_user_sees_them() as caught:
        code = main(["run", "job.yaml", "--tracking-uri", mlflow_uri])
    captured = capfd.readouterr()
    assert code == 0, captured.err
    assert _from_libraries(caught) == []
    assert captured.err == ""  # no log line of MLflow or Dask, no solver banner
    assert "Running HiGHS" not in captured.out  # allocate solved the LP (min_treated_share)


class _HoldsMegabytes:
    """Counts rows, holding 16 MB it never uses (as a fitted policy or a reward model does)."""

    def __init__(self):
        self.weights = np.zeros(2_000_000)

    def partial(self, chunk: pd.DataFrame) -> int:
        return len(chunk)

    @staticmethod
    def merge(left: int, right: int) -> int:
        return left + right

    @staticmethod
    def finalize(state: int) -> int:
        return state


def test_a_large_statistic_goes_to_the_workers_once_not_inside_the_graph():
    frame = dd.from_pandas(pd.DataFrame({"x": np.arange(1000.0)}), npartitions=8)
    with _warnings_as_a_user_sees_them() as caught, dask_client():
        assert run_statistic(_HoldsMegabytes(), frame) == 1000
    assert [str(w.message) for w in caught if "large graph" in str(w.message)] == []


def test_dask_shuffle_notes_are_dropped_and_its_other_warnings_kept():
    assert main(["--version"]) == 0  # the command line sets up its filters
    shuffles = logging.getLogger("distributed.shuffle._scheduler_plugin")
    printed = io.StringIO()
    handler = logging.StreamHandler(printed)
    shuffles.addHandler(handler)
    try:
        shuffles.warning("Shuffle %s initialized by task %r executed on worker %s", "ab12", ("transfer", 0), "w")
        shuffles.warning("Shuffle %s deactivated due to stimulus '%s'", "ab12", "task-finished-1")
        shuffles.warning("Shuffle %s failed: %s", "ab12", "worker lost")
    finally:
        shuffles.removeHandler(handler)
    assert printed.getvalue() == "Shuffle ab12 failed: worker lost\n"
