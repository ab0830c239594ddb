"""Running statistics: same answer as pandas, bit-identical across schedulers, threads and Dask, any partitioning,
any fan-in."""

from __future__ import annotations

from pathlib import Path

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from campaign_core import StatisticOf, compute
from pipelines.errors import InputError
from pipelines.execution import Blocks, Partitions, dask_client, map_tasks, run_statistic
from pipelines.io import atomic_output
from pipelines.profile import ArmProfile


def _logs(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    arm = rng.choice(["a", "b", "c"], size=n)
    return pd.DataFrame({"arm": arm, "reward": rng.normal(size=n), "propensity": rng.uniform(0.1, 1.0, size=n),
                         "cost": rng.exponential(size=n), "randomized": rng.random(n) < 0.2})


def _direct(frame: pd.DataFrame) -> pd.DataFrame:
    """The same per-arm profile computed the obvious way with pandas."""
    n = len(frame)
    grouped = frame.assign(ipw=frame["reward"] / frame["propensity"]).groupby("arm")
    return pd.DataFrame({
        "rows": grouped.size(),
        "reward_mean": grouped["reward"].mean(),
        "reward_se": grouped["reward"].std() / np.sqrt(grouped.size()),
        "spend": grouped["cost"].sum(),
        "ips_value": grouped["ipw"].sum() / n,
        "randomized_reward_mean": frame[frame["randomized"]].groupby("arm")["reward"].mean(),
    })


def test_run_statistic_matches_pandas_on_a_dask_frame():
    frame = _logs(20_000)
    data = dd.from_pandas(frame, npartitions=13)
    with dask.config.set(scheduler="synchronous"):
        profile = run_statistic(ArmProfile(randomized="randomized"), data)
    expected = _direct(frame)
    for column in expected:
        np.testing.assert_allclose(profile[column], expected[column], rtol=1e-10, err_msg=column)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 400), partitions=st.integers(1, 17), split_every=st.integers(2, 9), seed=st.integers(0, 99))
def test_any_partitioning_and_fan_in_give_the_same_statistic(n, partitions, split_every, seed):
    frame = _logs(n, seed)
    statistic = ArmProfile(randomized="randomized")
    reference = statistic.finalize(statistic.partial(frame))
    data = dd.from_pandas(frame, npartitions=min(partitions, n))
    with dask.config.set(scheduler="synchronous"):
        result = run_statistic(statistic, data, split_every=split_every)
    pd.testing.assert_frame_equal(result, reference, rtol=1e-9, check_exact=False)


def test_result_is_bit_identical_on_every_scheduler():
    data = dd.from_pandas(_logs(50_000, seed=4), npartitions=20)
    statistic = ArmProfile(randomized="randomized")
    results = []
    for scheduler in ("synchronous", "threads"):
        with dask.config.set(scheduler=scheduler):
            results.append(run_statistic(statistic, data, split_every=3))
    with dask_client(threads_per_worker=2):
        results.append(run_statistic(statistic, data, split_every=3))
    for other in results[1:]:
        pd.testing.assert_frame_equal(other, results[0], check_exact=True)


def test_columns_are_projected_and_merge_needs_fan_in_of_two():
    frame = _logs(100).assign(unused=np.nan)
    seen: list[list[str]] = []

    def partial(chunk: pd.DataFrame) -> int:
        seen.append(list(chunk.columns))
        return len(chunk)

    with dask.config.set(scheduler="synchronous"):
        total = run_statistic(StatisticOf(partial, lambda a, b: a + b), dd.from_pandas(frame, npartitions=4),
                              columns=["reward"])
    assert total == 100
    assert all(columns == ["reward"] for columns in seen if columns)
    with pytest.raises(InputError, match="split_every"):
        run_statistic(StatisticOf(partial, lambda a, b: a + b), frame, split_every=1)


def test_threaded_blocks_equal_dask_partitions_of_the_same_rows_bit_for_bit():
    """The same chunks give the same bits whether they are threaded blocks of a frame or Dask partitions."""
    frame = _logs(10_000, seed=2)
    statistic = ArmProfile(randomized="randomized")
    blocks = Blocks(frame, block_rows=1_000, split_every=3)
    partitions = Partitions(dd.from_pandas(frame, chunksize=1_000), split_every=3)
    assert blocks.n_chunks == partitions.n_chunks == 10
    with dask.config.set(scheduler="threads"):
        from_partitions = compute(statistic, partitions)
    pd.testing.assert_frame_equal(compute(statistic, blocks), from_partitions, check_exact=True)
    in_memory = compute(statistic, frame)  # one chunk: the same numbers up to rounding
    pd.testing.assert_frame_equal(in_memory, from_partitions, rtol=1e-12, check_exact=False)


def test_map_tasks_keeps_item_order_locally_and_on_a_cluster():
    items = list(range(12))
    assert map_tasks(lambda x: x * x, items, "squares") == [x * x for x in items]
    with dask_client(threads_per_worker=2):
        assert map_tasks(lambda x: x * x, items, "squares") == [x * x for x in items]


def test_atomic_output_leaves_nothing_on_failure_and_replaces_on_success(tmp_path):
    target = tmp_path / "out.csv"
    with pytest.raises(RuntimeError):
        with atomic_output(target) as temporary:
            temporary.write_text("half")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
    target.write_text("old")
    with atomic_output(target) as temporary:
        temporary.write_text("new")
    assert target.read_text() == "new"
    folder = tmp_path / "folder"
    for content in ("first", "second"):
        with atomic_output(folder) as temporary:
            temporary.mkdir()
            (temporary / "data.txt").write_text(content)
    assert (folder / "data.txt").read_text() == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder", "out.csv"]


def test_stale_temporaries_of_a_killed_write_are_swept(tmp_path):
    stale = tmp_path / ".out.csv.tmp-deadbeef"
    stale.write_text("partial")
    with atomic_output(tmp_path / "out.csv") as temporary:
        temporary.write_text("done")
    assert not stale.exists()


def test_a_write_killed_mid_swap_gets_the_old_folder_back(tmp_path):
    """Killed between retiring the old folder and renaming the new one: the next write restores the old one first."""
    retired = tmp_path / ".out.tmp-old-0badf00d"
    retired.mkdir()
    (retired / "data.txt").write_text("complete earlier output")
    (tmp_path / ".out.tmp-12345678").mkdir()  # the new folder, never renamed
    with pytest.raises(RuntimeError):
        with atomic_output(tmp_path / "out"):
            raise RuntimeError("the next job fails too")
    assert (tmp_path / "out" / "data.txt").read_text() == "complete earlier output"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_the_scaling_example_in_the_docs_runs_and_agrees_with_pandas(small_campaign, tmp_path, monkeypatch):
    """docs/pipelines.md, 'Scaling a new statistic': the complete example, run as written on a campaign on disk."""
    docs = (Path(__file__).parents[2] / "docs" / "pipelines.md").read_text()
    code = docs.split("A complete example")[1].split("```python")[1].split("```")[0]
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "campaign").symlink_to(small_campaign.paths.root)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "docs/pipelines.md", "exec"), namespace)
    logs = pd.read_parquet(small_campaign.paths.logs)
    expected = (logs["reward"] > 0).groupby(logs["arm"]).mean()
    pd.testing.assert_series_equal(namespace["rates"], expected, check_names=False, check_index_type=False, rtol=1e-12)
    head = pd.read_parquet(sorted(small_campaign.paths.logs.glob("*.parquet"))[0]).head(10_000)
    pd.testing.assert_series_equal(namespace["in_memory"], (head["reward"] > 0).groupby(head["arm"]).mean(),
                                   check_names=False, check_index_type=False, rtol=1e-12)
