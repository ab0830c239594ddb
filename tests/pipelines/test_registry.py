"""Champion and challenger in the MLflow Model Registry: `promote` registers each fitted policy and moves the
`champion` alias only when the challenger's lower confidence bound beats the champion's estimate on the same
holdout rows; `decide` serves the champion's draws with their propensities; moving the alias back is a rollback;
a champion alias whose version was deleted is refused in one line."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from pipelines.cli import main
from pipelines.models import load_fitted_policy
from pipelines.stages import promote as promote_stage
from pipelines.stages.evaluate_policy import Evaluation


def _job(folder: Path, name: str, policy: str, *, decide: bool = True, incumbent: str = "none") -> Path:
    body = f"""
seed: 3
experiment: registry
fit-bandit:
  logs: ../campaign/logs
  out: ../out/{name}/policy
  policy: {policy}
  split: train
promote:
  logs: ../campaign/logs
  out: ../out/{name}/promotion.csv
  model_name: offers
  estimators: [ips, dr]
  incumbent: {incumbent}
"""
    if decide:
        body += f"""decide:
  users: ../campaign/users.parquet
  out: ../out/{name}/decisions
  model_name: offers
"""
    path = folder / "jobs" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body)
    return path


@pytest.fixture
def campaign(small_campaign, tmp_path) -> Path:
    """The campaign's logs, and today's users with their features as of their last logged decision."""
    target = tmp_path / "campaign"
    target.mkdir()
    (target / "logs").symlink_to(small_campaign.paths.logs)
    logs = pd.read_parquet(small_campaign.paths.logs)
    today = logs.sort_values("day").drop_duplicates("user_id", keep="last")
    today.drop(columns=["arm", "propensity", "reward", "cost", "randomized"]).to_parquet(target / "users.parquet")
    return tmp_path


DECIDE_ONLY = """
experiment: registry
decide: {users: ../campaign/users.parquet, out: ../out/wed/decisions, model_name: offers}
"""


def _alias(uri: str) -> str:
    return str(MlflowClient(uri).get_registered_model("offers").aliases["champion"])


def test_the_first_policy_becomes_champion_and_an_equal_challenger_does_not_replace_it(campaign, mlflow_uri,
                                                                                      small_campaign):
    assert main(["run", str(_job(campaign, "monday", "lin-ts")), "--tracking-uri", mlflow_uri]) == 0
    assert _alias(mlflow_uri) == "1"
    decisions = pd.read_parquet(campaign / "out" / "monday" / "decisions")
    users = pd.read_parquet(campaign / "campaign" / "users.parquet")
    assert sorted(decisions["user_id"]) == sorted(users["user_id"])
    assert set(decisions["model_version"]) == {"1"} and (decisions["propensity"] > 0).all()
    # the served draw is the champion's: its probabilities at each user's features, drawn by the decision key
    mlflow.set_tracking_uri(mlflow_uri)
    champion = load_fitted_policy("models:/offers@champion")
    served = champion.decide(users, decision_key=decisions["decision_key"].iloc[0])
    np.testing.assert_array_equal(decisions.set_index("user_id").loc[users["user_id"], "arm"], served["arm"])
    np.testing.assert_allclose(decisions.set_index("user_id").loc[users["user_id"], "propensity"],
                               served["propensity"])
    # the same policy again: its lower bound is below its own estimate, so the champion stays
    assert main(["run", str(_job(campaign, "tuesday", "lin-ts")), "--tracking-uri", mlflow_uri]) == 0
    table = pd.read_csv(campaign / "out" / "tuesday" / "promotion.csv")
    assert list(table["policy"]) == ["challenger", "champion"] and list(table["version"]) == [2, 1]
    assert table["rows"].nunique() == 1  # both on the same holdout rows
    assert _alias(mlflow_uri) == "1"
    assert set(pd.read_parquet(campaign / "out" / "tuesday" / "decisions")["model_version"]) == {"1"}
    version = MlflowClient(mlflow_uri).get_model_version("offers", "2")
    # the version reports its estimate on the held-back half of the holdout, not on the rows it was chosen on
    assert float(version.tags["ope.dr.value"]) == pytest.approx(table.loc[0, "confirmed_value"], rel=1e-5)
    assert table.loc[0, "confirmed_value"] != table.loc[0, "value"]
    assert 0.4 < table.loc[0, "confirmed_rows"] / (table.loc[0, "rows"] + table.loc[0, "confirmed_rows"]) < 0.6
    runs = mlflow.search_runs(experiment_names=["registry"])
    stage = runs[runs["tags.campaign.stage"] == "promote"].sort_values("start_time").iloc[-1]
    assert stage["metrics.promoted"] == 0.0 and stage["params.champion_version"] == "1"


def test_a_challenger_whose_lower_bound_beats_the_champion_is_promoted_and_the_alias_moves_back(
        campaign, mlflow_uri, monkeypatch):
    assert main(["run", str(_job(campaign, "monday", "lin-ts", decide=False)), "--tracking-uri", mlflow_uri]) == 0
    estimates = {"challenger": (0.40, 0.35, 0.45), "champion": (0.30, 0.25, 0.35)}  # (value, ci_low, ci_high)
    calls = []

    def evaluated(context, config, fitted, *, rows_of=None, stage="evaluate-policy", part=None):
        role = "challenger" if rows_of is None or rows_of is fitted else "champion"
        calls.append(role)
        value, low, high = estimates[role]
        table = pd.DataFrame({"estimator": ["ips", "dr"], "value": value, "se": 0.02, "ci_low": low, "ci_high": high,
                              "n_rounds": 100, "logged_value": 0.25})
        return Evaluation(table, None, False, None, [])

    monkeypatch.setattr(promote_stage, "off_policy_evaluation", evaluated)
    assert main(["run", str(_job(campaign, "tuesday", "lin-ucb")), "--tracking-uri", mlflow_uri]) == 0
    # each on the decision rows, then on the held-back rows its reported estimate comes from
    assert calls == ["challenger", "challenger", "champion", "champion"] and _alias(mlflow_uri) == "2"
    assert set(pd.read_parquet(campaign / "out" / "tuesday" / "decisions")["model_version"]) == {"2"}
    # rollback: the alias moved back by hand, and the next decide serves version 1 again
    MlflowClient(mlflow_uri).set_registered_model_alias("offers", "champion", "1")
    decide_only = campaign / "jobs" / "decide.yaml"
    decide_only.write_text(DECIDE_ONLY)
    assert main(["run", str(decide_only), "--tracking-uri", mlflow_uri]) == 0
    assert set(pd.read_parquet(campaign / "out" / "wed" / "decisions")["model_version"]) == {"1"}


def test_a_champion_alias_whose_version_was_deleted_is_refused(campaign, mlflow_uri, capsys):
    client = MlflowClient(mlflow_uri)
    assert main(["run", str(_job(campaign, "monday", "lin-ts", decide=False)), "--tracking-uri", mlflow_uri]) == 0
    assert main(["run", str(_job(campaign, "tuesday", "lin-ts", decide=False)), "--tracking-uri", mlflow_uri]) == 0
    assert _alias(mlflow_uri) == "1"  # version 2 was kept out
    client.delete_model_version("offers", "1")  # the champion's version is deleted, and its alias with it
    capsys.readouterr()
    message = ("model_name: 'offers' has versions [2] but no version holds the alias 'champion' (its version was "
               "deleted?); set it again (docs/operations.md, 'Rollback')")
    assert main(["run", str(_job(campaign, "wednesday", "lin-ts")), "--tracking-uri", mlflow_uri]) == 2
    assert capsys.readouterr().err.strip() == f"error: promote: {message}"
    assert not (campaign / "out" / "wednesday").exists()
    assert sorted(int(v.version) for v in client.search_model_versions("name = 'offers'")) == [2]  # nothing added
    decide_only = campaign / "jobs" / "decide.yaml"
    decide_only.write_text(DECIDE_ONLY)
    assert main(["run", str(decide_only), "--tracking-uri", mlflow_uri]) == 2
    assert capsys.readouterr().err.strip() == f"error: decide: {message}"


def test_until_a_version_beats_the_logging_policy_the_logs_policy_keeps_deciding(campaign, mlflow_uri, monkeypatch,
                                                                                  capsys):
    # (value, ci_low, ci_high) of each day's challenger, on the decision rows and then on the held-back rows
    values = iter([(0.20, 0.15, 0.25)] * 2 + [(0.40, 0.35, 0.45)] * 2)

    def evaluated(context, config, fitted, *, rows_of=None, stage="evaluate-policy", part=None):
        value, low, high = next(values)
        table = pd.DataFrame({"estimator": ["ips", "dr"], "value": value, "se": 0.02, "ci_low": low,
                              "ci_high": high, "n_rounds": 100, "logged_value": 0.30})
        return Evaluation(table, None, False, None, [])

    monkeypatch.setattr(promote_stage, "off_policy_evaluation", evaluated)
    monday = _job(campaign, "monday", "lin-ts", decide=False, incumbent="logging")
    assert main(["run", str(monday), "--tracking-uri", mlflow_uri]) == 0  # lower bound 0.15 <= logged 0.30
    client = MlflowClient(mlflow_uri)
    assert client.get_registered_model("offers").aliases == {}
    table = pd.read_csv(campaign / "out" / "monday" / "promotion.csv")
    assert list(table["policy"]) == ["challenger"] and table.loc[0, "logged_value"] == 0.30
    capsys.readouterr()
    decide_only = campaign / "jobs" / "decide.yaml"
    decide_only.write_text(DECIDE_ONLY)
    assert main(["run", str(decide_only), "--tracking-uri", mlflow_uri]) == 2
    assert "no version of 'offers' is champion yet" in capsys.readouterr().err
    tuesday = _job(campaign, "tuesday", "lin-ts", decide=False, incumbent="logging")
    assert main(["run", str(tuesday), "--tracking-uri", mlflow_uri]) == 0  # 0.35 > 0.30: deployed
    assert _alias(mlflow_uri) == "2"
    assert client.get_model_version("offers", "2").tags["campaign.was_champion"] == "true"
