"""Stages fit-bandit and evaluate-policy: CLI, YAML job, the pyfunc model in a fresh process, Dask equals memory,
the stage equals `bandits.evaluate` on the same rows, truth coverage on the synthetic campaign, honest defaults (train
then holdout, in-sample only when asked and then flagged), safe default features, no user id, integer arms, bad
input."""

from __future__ import annotations

import json
import subprocess
import sys

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from bandits import ContextEncoder, LinUCB, LoggedFeedback, evaluate
from bandits.feedback import encode_arms
from pipelines.cli import main
from pipelines.job import load_job, run_job
from pipelines.models import load_fitted_policy
from pipelines.stages.registry import StageContext
from pipelines.user_split import in_holdout, split_salt

FEATURES = "price_sensitivity,channel,is_member,basket_value"


def _fit(tmp_path, campaign, mlflow_uri, *extra: str) -> int:
    return main(["fit-bandit", "--logs", str(campaign.paths.logs), "--features", FEATURES, "--out",
                 str(tmp_path / "policy"), "--tracking-uri", mlflow_uri, "--experiment", "bandit", *extra])


def test_cli_fit_then_evaluate_logs_model_metrics_and_table(tmp_path, mlflow_uri, small_campaign, capsys):
    assert _fit(tmp_path, small_campaign, mlflow_uri, "--policy", "lin-ucb", "--params", "{alpha: 0.5}",
                "--split", "train") == 0, capsys.readouterr().err
    out = tmp_path / "value.csv"
    code = main(["evaluate-policy", "--logs", str(small_campaign.paths.logs), "--policy", str(tmp_path / "policy"),
                 "--split", "holdout", "--seed", "9", "--estimators", "ips,snips,dr,replay", "--out", str(out),
                 "--tracking-uri", mlflow_uri, "--experiment", "bandit"])
    assert code == 0, capsys.readouterr().err
    table = pd.read_csv(out)
    assert table["estimator"].tolist() == ["ips", "snips", "dr", "replay"]
    assert {"value", "se", "ci_low", "ci_high", "effective_sample_size", "ess_share", "tiny_target_share"} <= set(
        table.columns)
    assert (table["ci_low"] < table["value"]).all() and (table["value"] < table["ci_high"]).all()
    logs = pd.read_parquet(small_campaign.paths.logs)
    # the holdout is the users the policy never saw: the split recorded with it (seed 0), not this job's (seed 9)
    holdout_rows = int(in_holdout(logs["user_id"].to_numpy(), 0.2, split_salt(0)).sum())
    assert table["n_rounds"].iloc[0] == holdout_rows > 0

    mlflow.set_tracking_uri(mlflow_uri)
    runs = mlflow.search_runs(experiment_names=["bandit"])
    fit_run = runs[runs["tags.campaign.stage"] == "fit-bandit"].iloc[0]
    eval_run = runs[runs["tags.campaign.stage"] == "evaluate-policy"].iloc[0]
    assert fit_run["metrics.training_rows"] == len(logs) - holdout_rows
    assert fit_run["metrics.fit_seconds"] > 0
    assert eval_run["metrics.dr.value"] == pytest.approx(table.set_index("estimator").loc["dr", "value"])
    assert eval_run["metrics.effective_sample_size"] > 0
    client = MlflowClient(mlflow_uri)
    assert "figures/policy_value.png" in {a.path for a in client.list_artifacts(eval_run["run_id"], "figures")}
    logged = mlflow.search_logged_models(experiment_ids=[runs["experiment_id"].iloc[0]], output_format="list")
    assert [model.name for model in logged] == ["policy"]


def test_logged_model_predicts_in_a_fresh_process(tmp_path, mlflow_uri, small_campaign, capsys):
    assert _fit(tmp_path, small_campaign, mlflow_uri, "--policy", "lin-ts") == 0, capsys.readouterr().err
    users = pd.read_parquet(small_campaign.paths.logs).head(50)[FEATURES.split(",")]
    users.loc[users.index[:3], "basket_value"] = np.nan  # missing values at scoring time are encoded, not refused
    users_file = tmp_path / "users.parquet"
    users.to_parquet(users_file)
    mlflow.set_tracking_uri(mlflow_uri)
    run = mlflow.search_runs(experiment_names=["bandit"]).query("`tags.campaign.stage` == 'fit-bandit'").iloc[0]
    script = f"""
import json, mlflow, pandas as pd
mlflow.set_tracking_uri({mlflow_uri!r})
model = mlflow.pyfunc.load_model("runs:/{run['run_id']}/policy")
folder = mlflow.pyfunc.load_model({str(tmp_path / 'policy')!r})
users = pd.read_parquet({str(users_file)!r})
a = model.predict(users, params={{"random_state": 5}})
b = folder.predict(users, params={{"random_state": 5}})
print(json.dumps({{"columns": list(a.columns), "arm": a["arm"].tolist(), "same": a.equals(b),
                  "propensity": a["propensity"].tolist(),
                  "chosen": [float(a.loc[i, "p_" + a.loc[i, "arm"]]) for i in a.index]}}))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    arms = ["cashback_10", "control", "discount_5", "free_shipping"]
    assert result["columns"] == ["arm", "propensity", *(f"p_{arm}" for arm in arms), "decision_key", "draw_seed"]
    assert result["same"] and len(result["arm"]) == 50 and set(result["arm"]) <= set(arms)
    assert result["propensity"] == result["chosen"]
    fitted = load_fitted_policy(tmp_path / "policy")
    expected = fitted.decide(users, random_state=5)
    assert expected["arm"].tolist() == result["arm"]


def test_partitioned_fit_equals_in_memory_fit(tmp_path, mlflow_uri, small_campaign, capsys):
    assert _fit(tmp_path, small_campaign, mlflow_uri, "--policy", "lin-ucb", "--weight-by-propensity",
                "--split", "all") == 0, capsys.readouterr().err
    fitted = load_fitted_policy(tmp_path / "policy")
    logs = pd.read_parquet(small_campaign.paths.logs)
    assert len(list(small_campaign.paths.logs.glob("*.parquet"))) > 1  # the stage really merged partitions
    encoder: ContextEncoder = fitted.encoder
    arms = list(fitted.policy.arms_)
    feedback = LoggedFeedback(encoder.transform(logs), encode_arms(logs["arm"].to_numpy(), arms),
                              logs["reward"].to_numpy(), logs["propensity"].to_numpy(), tuple(arms),
                              tuple(encoder.feature_names_out_))
    in_memory = LinUCB(weight_by_propensity=True).fit(feedback)
    np.testing.assert_allclose(fitted.policy.theta_, in_memory.theta_, rtol=0, atol=1e-10)


@pytest.mark.parametrize("estimators", [["ips", "snips", "dm", "dr", "switch-dr", "dr-shrink", "replay"]])
def test_the_stage_and_bandits_evaluate_give_identical_numbers_on_the_same_rows(tmp_path, mlflow_uri, small_campaign,
                                                                                 capsys, estimators):
    """One file of logs is one partition: the evaluate-policy stage and `bandits.evaluate` on the same rows, with the
    same reward features, folds and seed, run the same two statistics and agree to the last bit."""
    assert _fit(tmp_path, small_campaign, mlflow_uri, "--policy", "lin-ucb") == 0, capsys.readouterr().err
    logs = pd.read_parquet(small_campaign.paths.logs)
    logs.to_parquet(tmp_path / "logs.parquet", index=False)
    reward_features = ["price_sensitivity", "channel", "is_member", "basket_value", "recent_purchases"]
    out = tmp_path / "value.csv"
    code = main(["evaluate-policy", "--logs", str(tmp_path / "logs.parquet"), "--policy", str(tmp_path / "policy"),
                 "--estimators", ",".join(estimators), "--reward-features", ",".join(reward_features),
                 "--split", "all", "--seed", "3", "--out", str(out), "--tracking-uri", mlflow_uri])
    assert code == 0, capsys.readouterr().err
    stage = pd.read_csv(out)

    fitted = load_fitted_policy(tmp_path / "policy")
    feedback = LoggedFeedback.from_frame(logs, fitted.encoder, user_id="user_id", arms=fitted.arms)
    reward_contexts = ContextEncoder(reward_features).fit(logs).transform(logs)
    seed = StageContext(seed=3, log=None).stage_seed("evaluate-policy")  # type: ignore[arg-type]
    library = evaluate(feedback, fitted.policy, estimators=estimators, reward_contexts=reward_contexts,
                       random_state=seed)
    pd.testing.assert_frame_equal(stage, library, check_exact=True, check_dtype=False)


def test_demo_style_job_fits_on_train_users_and_covers_the_truth_on_holdout(tmp_path, mlflow_uri):
    job_file = tmp_path / "job.yaml"
    job_file.write_text("""
seed: 4
experiment: bandit-job
generate: {out: data/campaign, n_users: 20000, n_days: 3, avg_degree: 0}
select-features: {logs: data/campaign/logs, out: out/scores.csv, propensity: propensity, n_permutations: 50}
fit-bandit: {logs: data/campaign/logs, out: out/policy, policy: lin-ts, params: {alpha: 0.3}, split: train}
evaluate-policy: {logs: data/campaign/logs, out: out/value.csv, split: holdout, estimators: [ips, snips, dr]}
""")
    report = run_job(load_job(job_file), tracking_uri=mlflow_uri)
    selected = report.results["select-features"].data["selected"]
    assert selected and report.results["fit-bandit"].data["features"] == selected
    table = report.results["evaluate-policy"].data["estimates"].set_index("estimator")
    score = report.results["evaluate-policy"].data["truth"]  # scored by the synthetic-truth hook, not the stage
    truth = score.metrics["true_value"]
    assert "true_value" not in table.columns  # the production table carries no truth
    assert score.tables["truth_policy_value"]["true_value"].eq(truth).all()
    assert report.results["evaluate-policy"].summary["true value"] == f"{truth:.4f}"
    for name in ("ips", "dr"):
        assert abs(table.loc[name, "value"] - truth) < 3 * table.loc[name, "se"], name
    logs = pd.read_parquet(tmp_path / "data" / "campaign" / "logs")
    assert truth > logs["reward"].mean()  # the learned policy beats the logging policy in truth


@pytest.mark.parametrize(("argv", "message"), [
    (["fit-bandit", "--params", "{gamma: 1}"], "unknown hyperparameters ['gamma'] for lin-ts"),
    (["fit-bandit", "--params", "[1, 2]"], "--params: expected a YAML mapping"),
    (["fit-bandit", "--features", "price_sensitivity,nope"], "features: columns not in"),
    (["evaluate-policy", "--estimators", "ips,magic"], "unknown ['magic']"),
    (["evaluate-policy"], "no policy: set `policy`"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, small_campaign, mlflow_uri, capsys, argv, message):
    code = main([*argv, "--logs", str(small_campaign.paths.logs), "--out", str(tmp_path / "out"),
                 "--tracking-uri", mlflow_uri])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def test_zero_propensity_in_the_logs_is_refused_before_fitting(tmp_path, small_campaign, mlflow_uri, capsys):
    logs = pd.read_parquet(small_campaign.paths.logs)
    logs.loc[logs.index[:7], "propensity"] = 0.0
    logs.to_parquet(tmp_path / "bad.parquet")
    code = main(["fit-bandit", "--logs", str(tmp_path / "bad.parquet"), "--features", FEATURES, "--out",
                 str(tmp_path / "policy"), "--tracking-uri", mlflow_uri])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "propensity" in err and "7" in err, err
    assert not (tmp_path / "policy").exists()


def _logs_copy(small_campaign, tmp_path, name: str = "logs.parquet", **changes) -> tuple[pd.DataFrame, str]:
    """The small campaign's logs with columns changed (`column=values`, or None to drop it), as one parquet file."""
    logs = pd.read_parquet(small_campaign.paths.logs)
    for column, values in changes.items():
        logs = logs.drop(columns=column) if values is None else logs.assign(**{column: values})
    path = tmp_path / name
    logs.to_parquet(path, index=False)
    return logs, str(path)


def _stage_runs(mlflow_uri: str, experiment: str) -> dict[str, pd.Series]:
    mlflow.set_tracking_uri(mlflow_uri)
    runs = mlflow.search_runs(experiment_names=[experiment])
    return {row["tags.campaign.stage"]: row for _, row in runs.iterrows() if row["tags.campaign.stage"]}


def test_default_fit_and_evaluation_use_disjoint_users(tmp_path, mlflow_uri, small_campaign, capsys):
    """No --split anywhere: fit-bandit learns from the train users, evaluate-policy evaluates on the others."""
    assert _fit(tmp_path, small_campaign, mlflow_uri) == 0, capsys.readouterr().err
    out = tmp_path / "value.csv"
    code = main(["evaluate-policy", "--logs", str(small_campaign.paths.logs), "--policy", str(tmp_path / "policy"),
                 "--seed", "9", "--out", str(out), "--tracking-uri", mlflow_uri, "--experiment", "bandit"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "InSampleEvaluationWarning" not in captured.err and "IN-SAMPLE" not in captured.out
    logs = pd.read_parquet(small_campaign.paths.logs)
    held_out = in_holdout(logs["user_id"].to_numpy(), 0.2, split_salt(0))  # the fit job's split (seed 0)
    fitted = load_fitted_policy(tmp_path / "policy")
    assert fitted.training_split.side == "train"
    runs = _stage_runs(mlflow_uri, "bandit")
    assert runs["fit-bandit"]["metrics.training_rows"] == (~held_out).sum()
    assert pd.read_csv(out)["n_rounds"].iloc[0] == held_out.sum() > 0
    trained_users = set(logs.loc[~held_out, "user_id"])
    evaluated_users = set(logs.loc[held_out, "user_id"])
    assert trained_users and evaluated_users and not trained_users & evaluated_users
    assert runs["evaluate-policy"]["tags.campaign.in_sample_evaluation"] == "false"


def test_explicit_in_sample_evaluation_warns_flags_and_tags(tmp_path, mlflow_uri):
    from pipelines.stages.evaluate_policy import InSampleEvaluationWarning

    job_file = tmp_path / "job.yaml"
    job_file.write_text("""
seed: 2
experiment: in-sample
generate: {out: data/campaign, n_users: 2000, n_days: 2, avg_degree: 0}
fit-bandit: {logs: data/campaign/logs, out: out/policy, features: [price_sensitivity, channel]}
evaluate-policy: {logs: data/campaign/logs, out: out/value.csv, split: all, estimators: [ips, dr]}
""")
    with pytest.warns(InSampleEvaluationWarning, match="split: all evaluates the policy on rows of users it learned"):
        report = run_job(load_job(job_file), tracking_uri=mlflow_uri)
    result = report.results["evaluate-policy"]
    assert result.data["in_sample"] and "IN-SAMPLE" in result.summary
    logs = pd.read_parquet(tmp_path / "data" / "campaign" / "logs")
    assert result.data["estimates"]["n_rounds"].iloc[0] == len(logs)  # every row, as asked
    runs = _stage_runs(mlflow_uri, "in-sample")
    assert runs["evaluate-policy"]["tags.campaign.in_sample_evaluation"] == "true"


def test_a_policy_fitted_on_every_user_has_no_holdout(tmp_path, mlflow_uri, small_campaign, capsys):
    assert _fit(tmp_path, small_campaign, mlflow_uri, "--split", "all") == 0, capsys.readouterr().err
    code = main(["evaluate-policy", "--logs", str(small_campaign.paths.logs), "--policy", str(tmp_path / "policy"),
                 "--out", str(tmp_path / "value.csv"), "--tracking-uri", mlflow_uri])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "fitted on every user (split: all), so no user is held out" in err and "`split: all`" in err
    assert not (tmp_path / "value.csv").exists()


def test_default_features_skip_ids_timestamps_and_dates(tmp_path, mlflow_uri, small_campaign, capsys):
    logs = pd.read_parquet(small_campaign.paths.logs)
    stamps = pd.Timestamp("2026-01-05") + pd.to_timedelta(np.arange(len(logs)), unit="s")
    _, path = _logs_copy(small_campaign, tmp_path, timestamp=stamps, session_id=np.arange(len(logs)),
                         date=stamps.strftime("%Y-%m-%d"))
    code = main(["fit-bandit", "--logs", path, "--out", str(tmp_path / "policy"), "--tracking-uri", mlflow_uri,
                 "--experiment", "features"])
    assert code == 0, capsys.readouterr().err
    fitted = load_fitted_policy(tmp_path / "policy")
    expected = ["recent_purchases", "price_sensitivity", "channel", "is_member", "basket_value", "sessions_30d",
                "age_band", "tenure_days", "past_purchases", "device", "signup_month", "noise_0", "noise_1"]
    assert fitted.features == expected
    run = _stage_runs(mlflow_uri, "features")["fit-bandit"]
    report = MlflowClient(mlflow_uri).download_artifacts(run["run_id"], "feature_columns.txt", str(tmp_path))
    text = open(report).read()
    for line in ("skipped  timestamp (timestamp)", "skipped  session_id (id)", "skipped  date (timestamp)",
                 "skipped  user_id (log column)", "skipped  day (log column)", "taken    noise_1"):
        assert line in text, text


def test_without_a_user_id_the_split_is_by_row(tmp_path, mlflow_uri, small_campaign, capsys):
    """--user-id null: fit on the train rows and evaluate on the others, by a salted hash of each row's content."""
    from pipelines.user_split import RowSplitWarning

    logs, path = _logs_copy(small_campaign, tmp_path, user_id=None)
    with pytest.warns(RowSplitWarning, match="one user's rows may land on both sides"):
        assert main(["fit-bandit", "--logs", path, "--user-id", "null", "--features", FEATURES, "--out",
                     str(tmp_path / "policy"), "--tracking-uri", mlflow_uri, "--experiment", "rows"]) == 0, \
            capsys.readouterr().err
        code = main(["evaluate-policy", "--logs", path, "--user-id", "null", "--policy", str(tmp_path / "policy"),
                     "--out", str(tmp_path / "value.csv"), "--tracking-uri", mlflow_uri, "--experiment", "rows"])
    assert code == 0, capsys.readouterr().err
    training_rows = _stage_runs(mlflow_uri, "rows")["fit-bandit"]["metrics.training_rows"]
    evaluated_rows = pd.read_csv(tmp_path / "value.csv")["n_rounds"].iloc[0]
    assert training_rows + evaluated_rows == len(logs)  # every row on exactly one side
    assert 0.15 < evaluated_rows / len(logs) < 0.25


def test_integer_arms_sort_as_numbers_and_print_as_plain_values(tmp_path, mlflow_uri, small_campaign, capsys):
    logs = pd.read_parquet(small_campaign.paths.logs)
    codes = {"cashback_10": 10, "control": 9, "discount_5": 100, "free_shipping": 1000}
    _, path = _logs_copy(small_campaign, tmp_path, arm=logs["arm"].map(codes).astype(np.int64))
    assert main(["fit-bandit", "--logs", path, "--features", FEATURES, "--out", str(tmp_path / "policy"),
                 "--tracking-uri", mlflow_uri, "--experiment", "arms"]) == 0, capsys.readouterr().err
    assert load_fitted_policy(tmp_path / "policy").arms == [9, 10, 100, 1000]  # not 10, 100, 1000, 9 (as text)
    assert _stage_runs(mlflow_uri, "arms")["fit-bandit"]["params.arms"] == "9,10,100,1000"

    arms = logs["arm"].map(codes).astype(np.int64).to_numpy().copy()
    arms[:3] = 5  # an arm the policy does not know
    _, unknown = _logs_copy(small_campaign, tmp_path, "unknown.parquet", arm=arms)
    code = main(["evaluate-policy", "--logs", unknown, "--policy", str(tmp_path / "policy"), "--split", "all",
                 "--out", str(tmp_path / "value.csv"), "--tracking-uri", mlflow_uri])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert "unknown to the policy [5]; known arms: [9, 10, 100, 1000]" in err and "np.int64" not in err, err


def test_the_holdout_is_the_other_side_of_the_training_split():
    from pipelines.user_split import UserSplit

    train = UserSplit("train", split_salt(0), 0.2)
    assert train.other_side() == UserSplit("holdout", split_salt(0), 0.2)
    assert UserSplit("holdout", split_salt(0), 0.2).other_side() == train
    assert UserSplit("all", split_salt(0), 0.2).other_side() is None
    chunk = pd.DataFrame({"user_id": np.arange(1000)})
    assert (train.mask(chunk) ^ train.other_side().mask(chunk)).all()  # every user on exactly one side
    assert train.describe() == "train, 80% of users"


def test_a_held_back_part_and_the_rest_split_a_side_of_the_users_in_two():
    """promote decides on the rest of the holdout and reports on the held-back part: every holdout user is in
    exactly one of them, the part is about its share, and no training user is in either."""
    from pipelines.user_split import UserSplit

    holdout = UserSplit("holdout", split_salt(0), 0.3)
    held, rest = holdout.held_back(0.5, "confirm", True), holdout.held_back(0.5, "confirm", False)
    chunk = pd.DataFrame({"user_id": np.arange(20_000)})
    np.testing.assert_array_equal(held.mask(chunk) | rest.mask(chunk), holdout.mask(chunk))
    assert not (held.mask(chunk) & rest.mask(chunk)).any()
    assert 0.46 < held.mask(chunk).sum() / holdout.mask(chunk).sum() < 0.54
    assert len(held.rows(chunk)) == held.mask(chunk).sum() and held.columns == ["user_id"]
    assert held.describe() == "holdout, 30% of users, held back (50% of them)"
    everyone = UserSplit("all", split_salt(0), 0.3).held_back(0.25, "confirm", False)
    assert everyone.columns == ["user_id"] and 0.72 < everyone.mask(chunk).mean() < 0.78
