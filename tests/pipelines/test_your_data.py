"""Bringing your own data (docs/your_data.md): CSV tables under the documented type policy, validated like parquet,
and the job's `columns:` mapping of your column names, used by every stage.

The end-to-end check: a generated campaign's log renamed to a team's own column names and written as CSV, run with a
`columns:` mapping, gives the same numbers as the parquet log under the platform's names.
"""

from __future__ import annotations

from pathlib import Path

import dask
import numpy as np
import pandas as pd
import pytest

from pipelines.errors import InputError
from pipelines.job import build_job, load_job, run_job
from pipelines.tables import DECISION_LOG, USERS, inspect_table, read_table

OWN_NAMES = {"user_id": "customer", "arm": "offer", "reward": "converted", "propensity": "p_offer", "cost": "paid",
             "day": "week_day"}


@pytest.fixture(autouse=True)
def _synchronous():
    with dask.config.set(scheduler="synchronous"):
        yield


# ---------------------------------------------------------------------------- the CSV type policy
def test_csv_columns_are_typed_by_the_documented_policy(tmp_path):
    (tmp_path / "logs.csv").write_text(
        "user_id,arm,reward,propensity,zip,flag,when,score,label,big_id\n"
        "1,a,1,0.5,007,true,2024-01-01,1.5,x,12345678901234567890\n"
        "2,b,0,0.5,012,False,2024-01-02,,NA,12345678901234567891\n"
        "3,a,1,0.25,30,TRUE,2024-01-03,2,,3\n")
    logs = read_table(tmp_path / "logs.csv", DECISION_LOG)
    frame = logs.compute()
    kinds = {name: str(dtype) for name, dtype in frame.dtypes.items()}
    assert kinds["user_id"] == "int64" and kinds["reward"] == "int64" and kinds["propensity"] == "float64"
    assert kinds["score"] == "float64" and np.isnan(frame["score"].iloc[1])   # a number with a missing value
    assert kinds["flag"] == "bool" and frame["flag"].tolist() == [True, False, True]
    for text in ("arm", "zip", "when", "label", "big_id"):                   # labels, codes, dates, long ids
        assert pd.api.types.is_string_dtype(frame[text]), text
    assert frame["zip"].tolist() == ["007", "012", "30"]
    assert frame["label"].isna().tolist() == [False, True, True]             # empty and NA are missing


def test_every_csv_partition_reads_a_column_with_the_type_of_the_whole_table(tmp_path):
    """Types come from all values, not the first block: a column of integers in one file and a decimal in another
    is float64 in every partition, and a label column with a word in the second file is text in both."""
    folder = tmp_path / "logs"
    folder.mkdir()
    pd.DataFrame({"user_id": [1, 2], "arm": [1, 2], "reward": [0, 1]}).to_csv(folder / "a.csv", index=False)
    pd.DataFrame({"user_id": [3, 4], "arm": [2, "other"], "reward": [0.5, 1]}).to_csv(folder / "b.csv", index=False)
    logs = read_table(folder, DECISION_LOG)
    assert logs.npartitions == 2
    for index in range(2):
        part = logs.get_partition(index).compute()
        assert part["reward"].dtype == np.float64 and pd.api.types.is_string_dtype(part["arm"])
    assert logs.compute()["arm"].tolist() == ["1", "2", "2", "other"]


def _bad_logs() -> dict[str, tuple[pd.DataFrame, str]]:
    """Bad decision logs and the one-line error each gives (the same for CSV and parquet)."""
    good = pd.DataFrame({"user_id": [1, 2, 3, 4], "arm": ["a", "b", "a", "b"], "reward": [1.0, 0.0, 1.0, 0.0],
                         "propensity": [0.5, 0.5, 0.5, 0.5]})
    return {
        "missing column": (good.drop(columns="reward"), "logs: missing required column 'reward'"),
        "missing propensity": (good.assign(propensity=[0.5, np.nan, 0.5, 0.5]),
                               "logs: column 'propensity' has 1 NaN, inf or missing values of 4 rows (not allowed)"),
        "propensity above 1": (good.assign(propensity=[0.5, 1.5, 2.0, 0.5]),
                               "logs: column 'propensity' has 2 values of 4 rows outside (0, 1]"),
        "missing arm": (good.assign(arm=["a", None, "a", "b"]),
                        "logs: column 'arm' has 1 missing values of 4 rows (not allowed)"),
        "missing integer user id": (good.assign(user_id=[1.0, np.nan, 3.0, 4.0]),
                                    "logs: column 'user_id' has 1 missing values of 4 rows (not allowed)"),
        "text reward": (good.assign(reward=["yes", "no", "yes", "no"]), "logs: column 'reward' has type"),
        "empty": (good.head(0), "logs: table is empty (0 rows)"),
    }


@pytest.mark.parametrize("case", sorted(_bad_logs()))
def test_csv_is_validated_like_parquet(tmp_path, case):
    frame, expected = _bad_logs()[case]
    messages = {}
    for kind in ("csv", "parquet"):
        path = tmp_path / f"logs.{kind}"
        if kind == "csv":
            frame.to_csv(path, index=False)
        else:
            # parquet keeps a missing integer id as a missing value of an integer column, as CSV reads it
            typed = frame.astype({"user_id": "Int64"}) if case == "missing integer user id" else frame
            typed.to_parquet(path, index=False)
        with pytest.raises(InputError) as error:
            read_table(path, DECISION_LOG)
        messages[kind] = str(error.value).replace(str(path), "PATH")
        assert "\n" not in messages[kind] and messages[kind].startswith(expected), messages[kind]
    if case != "text reward":  # the type's name differs: pandas' text becomes arrow large_string in CSV
        assert messages["csv"] == messages["parquet"]


@pytest.mark.parametrize(("files", "expected"), [
    ({"a.csv": "user_id,x\n1,2\n", "b.csv": "user_id,y\n1,2\n"}, "users: CSV file b.csv has other columns than a.csv"),
    ({"a.csv": "user_id,x\n1,2\n3,4,5\n"}, "users: cannot read CSV"),
    ({"a.csv": ""}, "users: cannot read CSV"),
])
def test_unreadable_csv_is_one_line(tmp_path, files, expected):
    folder = tmp_path / "users"
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_text(text)
    with pytest.raises(InputError, match=f"^{expected}") as error:
        inspect_table(folder, USERS)
    assert "\n" not in str(error.value)


# ---------------------------------------------------------------------------- the columns: mapping
def _sections(job) -> dict:
    return {stage.name: section for stage, section in job.stages}


def test_the_mapping_fills_every_section_that_takes_a_role_unless_it_names_its_own(tmp_path):
    job = build_job({"columns": {"arm": "offer", "reward": "converted", "user_id": "customer", "cost": None},
                     "profile-logs": {"logs": "logs", "out": "p.csv"},
                     "select-features": {"logs": "logs", "out": "s.csv", "reward": "clicked"},
                     "evaluate-policy": {"logs": "logs", "out": "e.csv", "policy": "policy"}}, base_dir=tmp_path)
    sections = _sections(job)
    assert (sections["profile-logs"].arm, sections["profile-logs"].reward) == ("offer", "converted")
    assert sections["profile-logs"].cost is None                     # null: the logs have no cost column
    assert (sections["select-features"].arm, sections["select-features"].reward) == ("offer", "clicked")
    assert sections["evaluate-policy"].user_id == "customer"
    assert "customer" in sections["select-features"].exclude         # never a feature, under its own name
    assert "user_id" not in sections["select-features"].exclude and "cost" not in sections["select-features"].exclude
    assert job.effective_config()["columns"]["arm"] == "offer"


@pytest.mark.parametrize(("columns", "expected"), [
    ({"customer": "user"}, "config: columns: unknown role 'customer' (roles: arm, cost, day, propensity, randomized, "
                           "reward, user_id)"),
    ({"arm": 3}, "config: columns.arm: expected a column name or null, got 3"),
    (["arm"], "config: columns: expected a mapping of role -> column name, got list"),
])
def test_bad_mappings_are_one_line_errors(tmp_path, columns, expected):
    with pytest.raises(InputError) as error:
        build_job({"columns": columns, "profile-logs": {"logs": "logs", "out": "p.csv"}}, base_dir=tmp_path)
    assert str(error.value) == expected


def test_profile_logs_does_without_cost_and_propensity_unless_they_are_named(tmp_path, mlflow_uri):
    pd.DataFrame({"user_id": [1, 2, 3], "arm": ["a", "b", "a"], "reward": [1, 0, 0]}).to_csv(
        tmp_path / "logs.csv", index=False)
    report = run_job(build_job({"profile-logs": {"logs": "logs.csv", "out": "p.csv"}}, base_dir=tmp_path),
                     tracking_uri=mlflow_uri)
    profile = report.results["profile-logs"].data["profile"]
    assert profile["reward_mean"].to_dict() == {"a": 0.5, "b": 0.0}
    assert "spend" not in profile and "ips_value" not in profile
    named = build_job({"columns": {"cost": "paid"}, "profile-logs": {"logs": "logs.csv", "out": "p.csv"}},
                      base_dir=tmp_path)
    with pytest.raises(InputError, match="^profile-logs: logs: missing column 'paid'"):
        run_job(named, tracking_uri=mlflow_uri)


# ---------------------------------------------------------------------------- end to end
JOB = """
seed: 3
experiment: {experiment}
{columns}
profile-logs: {{logs: {logs}, out: out/profile.csv}}
fit-bandit: {{logs: {logs}, out: out/policy, split: train}}
evaluate-policy: {{logs: {logs}, out: out/value.csv, split: holdout}}
"""


def _own_csv_log(small_campaign, folder: Path) -> Path:
    """The campaign's log under a team's own column names, as CSV files, one per parquet part (the same rows in
    the same partitions, so the tree reductions add the same numbers in the same order)."""
    folder.mkdir(parents=True)
    for part in sorted(Path(small_campaign.paths.logs).glob("*.parquet")):
        pd.read_parquet(part).rename(columns=OWN_NAMES).to_csv(folder / f"{part.stem}.csv", index=False)
    return folder


def test_a_csv_log_under_your_own_names_gives_the_numbers_of_the_parquet_log(small_campaign, tmp_path, mlflow_uri):
    own = _own_csv_log(small_campaign, tmp_path / "own" / "logs")
    mapping = "columns: {" + ", ".join(f"{role}: {name}" for role, name in OWN_NAMES.items()) + "}"
    reports = {}
    for name, logs, columns in (("parquet", small_campaign.paths.logs, ""), ("csv", own, mapping)):
        path = tmp_path / name / "job.yaml"
        path.parent.mkdir(exist_ok=True)
        path.write_text(JOB.format(experiment=name, logs=logs, columns=columns))
        reports[name] = run_job(load_job(path), tracking_uri=mlflow_uri)
    profiles = [pd.read_csv(tmp_path / name / "out" / "profile.csv", index_col="arm") for name in ("parquet", "csv")]
    pd.testing.assert_frame_equal(profiles[0], profiles[1], rtol=1e-12)
    features = [reports[name].results["fit-bandit"].data["features"] for name in ("parquet", "csv")]
    assert features[1] == [OWN_NAMES.get(column, column) for column in features[0]]
    assert "customer" not in features[1] and "week_day" not in features[1] and "paid" not in features[1]
    values = [pd.read_csv(tmp_path / name / "out" / "value.csv") for name in ("parquet", "csv")]
    pd.testing.assert_frame_equal(values[0], values[1], rtol=1e-9)
