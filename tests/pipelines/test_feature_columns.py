"""The default feature list: ids, timestamps, dates and the log's own columns are skipped, each with its reason;
an explicit list is used as given; select-features says what it took and skipped."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from mlflow.tracking import MlflowClient

from pipelines.cli import main
from pipelines.feature_columns import choose_features, name_words

LOG_ROLES = {"arm": "arm", "reward": "reward", "propensity": "propensity", "user_id": "user_id"}


def _log_frame() -> pd.DataFrame:
    stamps = pd.Timestamp("2026-03-01") + pd.to_timedelta(np.arange(4), unit="h")
    return pd.DataFrame({
        "user_id": [1, 2, 3, 4], "arm": ["a", "b", "a", "b"], "reward": [1.0, 0.0, 0.0, 1.0],
        "propensity": [0.5] * 4, "day": [0, 0, 1, 1], "timestamp": stamps, "session_id": [11, 12, 13, 14],
        "date": stamps.strftime("%Y-%m-%d"), "price": [1.0, 2.0, 3.0, 4.0], "channel": ["web", "app", "web", "app"],
        "is_member": [True, False, True, False], "paid": [0, 1, 0, 1], "day_of_week": [1, 2, 3, 4]})


def test_the_default_list_skips_timestamp_session_id_and_date_with_reasons():
    choice = choose_features(_log_frame().dtypes, roles=LOG_ROLES, exclude=["day"])
    assert choice.taken == ("price", "channel", "is_member", "paid", "day_of_week")
    kinds = {name: kind for name, kind, _ in choice.skipped}
    assert kinds == {"user_id": "log column", "arm": "log column", "reward": "log column",
                     "propensity": "log column", "day": "log column", "timestamp": "timestamp",
                     "session_id": "id", "date": "timestamp"}
    # the log's standard columns are its own even where the stage does not name them
    assert choose_features(_log_frame()).taken == choice.taken
    reasons = {name: reason for name, _, reason in choice.skipped}
    assert reasons["timestamp"].startswith("a datetime64")  # caught by its type
    assert reasons["date"].startswith("named like a time or date")  # text: caught by its name
    assert reasons["arm"] == "the log's arm column"
    assert choice.summary() == ("5 taken (every usable column); skipped timestamp (timestamp), session_id (id), "
                                "date (timestamp)")
    assert "  skipped  session_id (id): named like an id" in choice.report()


def test_a_pyarrow_schema_gives_the_same_choice():
    frame = _log_frame()
    from_arrow = choose_features(pa.Schema.from_pandas(frame, preserve_index=False), roles=LOG_ROLES,
                                 exclude=["day"])
    from_pandas = choose_features(frame, roles=LOG_ROLES, exclude=["day"])
    assert from_arrow.taken == from_pandas.taken
    assert [kind for _, kind, _ in from_arrow.skipped] == [kind for _, kind, _ in from_pandas.skipped]


@pytest.mark.parametrize(("schema", "kind"), [
    (pa.schema([("signup", pa.date32())]), "timestamp"),
    (pa.schema([("seen", pa.timestamp("ms", tz="UTC"))]), "timestamp"),
    (pa.schema([("wait", pa.duration("s"))]), "type"),
    (pa.schema([("tags", pa.list_(pa.string()))]), "type"),
    ({"created_at": np.dtype("int64")}, "timestamp"),
    ({"lastVisitTime": np.dtype("float64")}, "timestamp"),
    ({"customerId": np.dtype("int64")}, "id"),
    ({"ID": np.dtype("object")}, "id"),
    ({"order-uuid": pd.StringDtype()}, "id"),
])
def test_each_rule(schema, kind):
    choice = choose_features(schema)
    assert choice.taken == () and [k for _, k, _ in choice.skipped] == [kind]


@pytest.mark.parametrize("name", ["paid", "valid", "lifetime", "day_of_week", "dated_offer_count", "video"])
def test_names_that_only_contain_id_or_time_are_features(name):
    assert choose_features({name: np.dtype("float64")}).taken == (name,)


def test_name_words_split_separators_and_camel_case():
    assert name_words("lastVisitTime") == ["last", "visit", "time"]
    assert name_words("HTTPRequestID") == ["http", "request", "id"]
    assert name_words("session-id") == ["session", "id"]


def test_an_explicit_list_is_used_as_given():
    choice = choose_features(_log_frame(), ["session_id", "timestamp", "price"], roles=LOG_ROLES)
    assert choice.taken == ("session_id", "timestamp", "price") and choice.skipped == ()
    assert choice.source == "the `features` list"


def test_select_features_skips_them_and_says_so(tmp_path, mlflow_uri, small_campaign, capsys):
    logs = pd.read_parquet(small_campaign.paths.logs)
    stamps = pd.Timestamp("2026-01-05") + pd.to_timedelta(np.arange(len(logs)), unit="s")
    logs.assign(timestamp=stamps, session_id=np.arange(len(logs)), date=stamps.strftime("%Y-%m-%d")).to_parquet(
        tmp_path / "logs.parquet", index=False)
    out = tmp_path / "scores.csv"
    code = main(["select-features", "--logs", str(tmp_path / "logs.parquet"), "--out", str(out),
                 "--n-permutations", "0", "--tracking-uri", mlflow_uri, "--experiment", "select"])
    assert code == 0, capsys.readouterr().err
    scored = set(pd.read_csv(out, index_col=0).index)
    assert not scored & {"timestamp", "session_id", "date", "user_id", "day", "cost", "randomized", "propensity"}
    assert {"price_sensitivity", "channel", "noise_1"} <= scored
    client = MlflowClient(mlflow_uri)
    experiment = client.get_experiment_by_name("select")
    run = next(r for r in client.search_runs([experiment.experiment_id])
               if r.data.tags.get("campaign.stage") == "select-features")
    text = open(client.download_artifacts(run.info.run_id, "feature_columns.txt", str(tmp_path))).read()
    assert "skipped  timestamp (timestamp)" in text and "skipped  session_id (id)" in text
