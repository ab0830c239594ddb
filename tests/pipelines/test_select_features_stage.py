"""Stage select-features: the CLI command, a YAML job section, MLflow records, the demo's use, bad input."""

from __future__ import annotations

import mlflow
import pandas as pd
from mlflow.tracking import MlflowClient

from pipelines.cli import main
from pipelines.job import load_job, run_job


def test_cli_scores_selects_and_logs_to_mlflow(tmp_path, mlflow_uri, small_campaign, capsys):
    out = tmp_path / "scores.csv"
    code = main(["select-features", "--logs", str(small_campaign.paths.logs), "--arm", "arm", "--reward", "reward",
                 "--features", "price_sensitivity,channel,is_member,sessions_30d,noise_0,noise_1",
                 "--propensity", "propensity", "--n-permutations", "50", "--out", str(out),
                 "--tracking-uri", mlflow_uri, "--experiment", "fs"])
    assert code == 0, capsys.readouterr().err
    table = pd.read_csv(out, index_col="feature")
    assert list(table["rank"]) == [1, 2, 3, 4, 5, 6]
    assert {"hie", "hdd", "combined", "p_combined", "q_combined", "hie_low", "hie_high", "selected"} <= set(table)
    assert table["combined"].is_monotonic_decreasing
    mlflow.set_tracking_uri(mlflow_uri)
    runs = mlflow.search_runs(experiment_names=["fs"])
    stage = runs[runs["tags.campaign.stage"] == "select-features"].iloc[0]
    assert stage["metrics.features_scored"] == 6
    assert stage["metrics.features_selected"] == table["selected"].sum()
    assert stage["metrics.combined.price_sensitivity"] == table.loc["price_sensitivity", "combined"]
    assert stage["params.primary_method"] == "combined"
    client = MlflowClient(mlflow_uri)
    artifacts = {a.path for folder in ("tables", "figures", "text")
                 for a in client.list_artifacts(stage["run_id"], folder)}
    assert {"tables/feature_scores.csv", "figures/feature_scores.png"} <= artifacts


def test_yaml_job_hands_the_selected_list_on_and_compares_with_the_true_roles(tmp_path, mlflow_uri):
    job_file = tmp_path / "job.yaml"
    job_file.write_text("""
seed: 3
experiment: fs-job
generate: {out: data/campaign, n_users: 20000, n_days: 2, avg_degree: 0}
select-features:
  logs: data/campaign/logs
  out: out/scores.csv
  propensity: propensity
  methods: [hie, hdd, kl, f]
  n_permutations: 100
""")
    report = run_job(load_job(job_file), tracking_uri=mlflow_uri)
    result = report.results["select-features"]
    table = result.data["scores"]
    assert result.data["selected"] == list(table.index[table["selected"]])
    assert "true_role" not in pd.read_csv(tmp_path / "out" / "scores.csv").columns  # the output carries no truth
    roles = result.data["truth"].tables["truth_feature_roles"]  # scored by the synthetic-truth hook
    assert set(roles.loc[roles["true_role"] == "noise", "selected"]) == {False}
    modifiers = roles[roles["true_role"] == "modifier"]
    assert modifiers["selected"].sum() >= 3
    assert result.data["truth"].metrics["selected_modifiers"] == modifiers["selected"].sum()
    assert {"kl", "f", "p_f"} <= set(table.columns)
    mlflow.set_tracking_uri(mlflow_uri)
    stage = mlflow.search_runs(experiment_names=["fs-job"]).query("`tags.campaign.stage` == 'select-features'")
    assert stage["metrics.selected_noises"].iloc[0] == 0


def test_bad_input_exits_2_with_one_line(tmp_path, small_campaign, capsys, mlflow_uri):
    common = ["--logs", str(small_campaign.paths.logs), "--out", str(tmp_path / "s.csv"),
              "--tracking-uri", mlflow_uri]
    assert main(["select-features", *common, "--features", "price_sensitivity,not_a_column"]) == 2
    err = capsys.readouterr().err
    assert "not_a_column" in err and "Traceback" not in err
    assert main(["select-features", *common, "--reward", "arm"]) == 2
    assert "column 'arm' has type string, expected numeric" in capsys.readouterr().err
    assert main(["select-features", *common, "--n-bins", "1"]) == 2
    assert not (tmp_path / "s.csv").exists()


def test_the_sample_keeps_whole_users_and_user_level_significance_is_the_default(tmp_path, mlflow_uri, small_campaign):
    import dask.dataframe as dd

    from pipelines.stages.select_features import SelectFeaturesConfig, _sample

    logs = dd.read_parquet(small_campaign.paths.logs)
    config = SelectFeaturesConfig(logs=small_campaign.paths.logs, out=tmp_path / "s.csv", sample_fraction=0.3)
    assert config.user_id == "user_id"
    sample = _sample(logs, config, seed=4).compute()
    everything = logs.compute()
    kept = everything[everything["user_id"].isin(sample["user_id"].unique())]
    assert len(sample) == len(kept)  # every row of a sampled user, nobody else's
    assert 0.2 < sample["user_id"].nunique() / everything["user_id"].nunique() < 0.4
    rows = _sample(logs, config.model_copy(update={"user_id": None}), seed=4).compute()
    assert rows["user_id"].nunique() > sample["user_id"].nunique()  # a row sample touches more users
    for user_id in ("user_id", "null"):
        code = main(["select-features", "--logs", str(small_campaign.paths.logs), "--features", "channel,noise_0",
                     "--user-id", user_id, "--n-permutations", "20", "--out", str(tmp_path / f"{user_id}.csv"),
                     "--tracking-uri", mlflow_uri, "--experiment", "fs-users"])
        assert code == 0
        assert pd.read_csv(tmp_path / f"{user_id}.csv")["p_combined"].between(0, 1).all()
