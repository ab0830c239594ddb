"""The worked example of docs/your_data.md, run as the docs show it: `campaign import-open-bandit`, then the job it
writes (profile-logs, select-features, fit-bandit, evaluate-policy) on the Open Bandit Dataset sample's uniformly
random logs (10,000 rounds, 80 items, 38 clicks). About 15 s.

Known answers: the importer keeps every round, click and propensity; under a uniform logging policy the IPS values
of "always show item k" sum to (items x click rate); evaluate-policy's logged value, IPS and SNIPS equal the same
sums taken by hand over its holdout rows with the fitted policy's probabilities.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.cli import main
from pipelines.errors import InputError
from pipelines.job import load_job, run_job
from pipelines.open_bandit import JOB_FILE, find_obp_wheel, read_open_bandit

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "open_bandit" / "job.yaml"
FEATURES = ["user_feature_0", "user_feature_1", "user_feature_2", "user_feature_3", "position"]


@pytest.fixture(scope="module")
def wheel() -> Path:
    try:
        return find_obp_wheel()
    except InputError:
        pytest.skip("the obp wheel (it carries the Open Bandit Dataset sample) is not in .cache/wheels; "
                    "`make test` fetches it: pip download obp==0.4.1 --no-deps -d .cache/wheels")


@pytest.fixture(scope="module")
def imported(wheel, tmp_path_factory) -> Path:
    """`campaign import-open-bandit --out DIR` for the random logging policy."""
    out = tmp_path_factory.mktemp("open-bandit") / "obd"
    assert main(["import-open-bandit", "--out", str(out), "--wheel", str(wheel)]) == 0
    return out


@pytest.fixture(scope="module")
def report(imported, _mlflow_template, tmp_path_factory):
    """The job the importer wrote, run on the embedded defaults (its own copy of a migrated MLflow store)."""
    store = tmp_path_factory.mktemp("open-bandit-mlflow") / "mlflow.db"
    store.write_bytes(_mlflow_template.read_bytes())
    return run_job(load_job(imported / "job.yaml"), tracking_uri=f"sqlite:///{store}")


def test_the_shipped_example_is_the_job_the_importer_writes(imported):
    assert (imported / "job.yaml").read_text() == JOB_FILE == EXAMPLE.read_text()


def test_the_import_keeps_every_round_click_and_propensity(imported, wheel):
    raw, items = read_open_bandit("random", "all", wheel=wheel)
    logs = pd.read_parquet(imported / "logs")
    assert len(logs) == len(raw) == 10_000
    assert logs["user_id"].is_unique  # OBD has no user id: each round stands in for one user
    np.testing.assert_array_equal(logs["arm"], raw["item_id"])
    np.testing.assert_array_equal(logs["reward"], raw["click"])
    np.testing.assert_array_equal(logs["propensity"], raw["propensity_score"])
    assert logs["propensity"].eq(1 / len(items)).all()  # the uniform logging policy over 80 items
    assert sorted(logs["day"].unique()) == list(range(7))
    assert {*FEATURES, "timestamp", "affinity_0", "affinity_79"} <= set(logs.columns)
    assert logs["reward"].sum() == 38


def test_profile_ips_values_sum_to_items_times_the_click_rate(report, imported):
    profile = pd.read_csv(imported / "out" / "log_profile.csv")
    assert profile["rows"].sum() == 10_000 and len(profile) == 80
    assert profile["reward_mean"].mul(profile["rows"]).sum() == pytest.approx(38)
    # IPS_k = (1/N) sum 1{a=k} r / (1/80): summed over the items, 80 x the click rate.
    assert profile["ips_value"].sum() == pytest.approx(80 * 38 / 10_000, rel=1e-12)
    assert "spend" not in profile  # the log has no cost column: profile-logs does without it


def test_feature_selection_scores_the_listed_features(report, imported):
    scores = pd.read_csv(imported / "out" / "feature_scores.csv", index_col="feature")
    assert sorted(scores.index) == sorted(FEATURES)
    assert scores[["p_hie", "p_hdd"]].stack().between(0, 1).all()
    # 38 clicks in 10,000 rounds: no user feature changes the best item detectably.
    assert report.results["select-features"].data["selected"] == []


def test_evaluate_policy_equals_the_estimates_by_hand_on_its_holdout(report, imported):
    fitted = report.results["fit-bandit"].data["fitted"]
    evaluation = report.results["evaluate-policy"].data
    logs = pd.read_parquet(imported / "logs")
    holdout = evaluation["split"].rows(logs)
    assert report.results["evaluate-policy"].data["fitted"] is fitted
    assert len(fitted.training_split.rows(logs)) + len(holdout) == len(logs)  # the two sides share no round

    codes = pd.Index(fitted.arms).get_indexer(holdout["arm"])
    assert (codes >= 0).all()
    target = fitted.probabilities(holdout)[np.arange(len(holdout)), codes]
    weights = target / holdout["propensity"].to_numpy()
    reward = holdout["reward"].to_numpy(dtype=float)
    table = evaluation["estimates"].set_index("estimator")
    assert table.loc["ips", "logged_value"] == pytest.approx(reward.mean(), rel=1e-12)
    assert table.loc["ips", "value"] == pytest.approx(np.mean(weights * reward), rel=1e-9)
    assert table.loc["snips", "value"] == pytest.approx(np.sum(weights * reward) / np.sum(weights), rel=1e-9)
    for estimator in ("ips", "snips", "dm", "dr"):
        row = table.loc[estimator]
        assert row["ci_low"] <= row["value"] <= row["ci_high"] and 0 <= row["value"] < 0.05  # a click rate


def test_the_raw_csv_under_its_own_names_profiles_like_the_import(report, imported, wheel, tmp_path, mlflow_uri):
    """docs/your_data.md's other way in: OBD's own CSV, its column names mapped in the job."""
    with zipfile.ZipFile(wheel) as archive:
        (tmp_path / "obd.csv").write_bytes(archive.read("obp/dataset/obd/random/all/all.csv"))
    (tmp_path / "job.yaml").write_text(
        "columns: {arm: item_id, reward: click, propensity: propensity_score}\n"
        "profile-logs: {logs: obd.csv, out: out/profile.csv}\n")
    run_job(load_job(tmp_path / "job.yaml"), tracking_uri=mlflow_uri)
    raw = pd.read_csv(tmp_path / "out" / "profile.csv", index_col="arm")
    ours = pd.read_csv(imported / "out" / "log_profile.csv", index_col="arm")
    pd.testing.assert_frame_equal(raw, ours, rtol=1e-12)


def test_import_errors_are_one_line_exit_2(tmp_path, capsys):
    code = main(["import-open-bandit", "--out", str(tmp_path / "obd"), "--wheel", str(tmp_path / "no.whl")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "obp wheel" in err and "pip download" in err
    assert not (tmp_path / "obd").exists()
