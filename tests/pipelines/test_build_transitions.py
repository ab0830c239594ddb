"""Stage `build-transitions`: transitions from the generator's multi-day logs, checked against the simulator, run
through `constrained-rl`, and its bad inputs refused in one line with nothing written."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.cli import main
from pipelines.synthetic.episodes import write_transitions


@pytest.fixture
def built(small_campaign, tmp_path, mlflow_uri, capsys):
    """Transitions of the shared small campaign (3,000 users x 5 days), with the world's habit decay (0.7) as a third
    history decay so the latent habit of the simulator is one of the state columns."""
    out = tmp_path / "transitions"
    decay = small_campaign.world.config.habit_decay
    code = main(["build-transitions", "--logs", str(small_campaign.paths.logs), "--users",
                 str(small_campaign.paths.users), "--out", str(out), "--tracking-uri", mlflow_uri,
                 "--decays", f"0.5,0.9,{decay}"])  # a comma-separated list of numbers
    assert code == 0, capsys.readouterr().err
    return out


def test_transitions_agree_with_the_logged_decisions_and_the_simulator(small_campaign, built, tmp_path):
    transitions = pd.read_parquet(built)
    logs = pd.read_parquet(small_campaign.paths.logs)
    truth = pd.read_parquet(small_campaign.paths.truth_logs)
    n_users, n_days = small_campaign.world.config.n_users, small_campaign.world.config.n_days
    assert len(transitions) == n_users * n_days
    assert transitions.groupby("user_id")["day"].apply(sorted).map(list).eq([list(range(n_days))] * n_users).all()
    merged = transitions.merge(logs.assign(logged=True), on=["user_id", "day"], how="left", suffixes=("", "_log"))
    logged = merged["logged"].eq(True).to_numpy()
    assert logged.sum() == len(logs)
    # a logged decision: exactly what the generator logged
    rows = merged[logged]
    assert (rows["action"] == rows["arm"]).all()
    for column in ("reward", "cost", "propensity"):
        np.testing.assert_array_equal(rows[column], rows[f"{column}_log"])
    # no decision (the simulator's inactive users): a level drawn uniformly with propensity 1/4, nothing bought or
    # paid (the default rule, `absent: inactive`)
    quiet = merged[~logged]
    assert (quiet["propensity"] == 0.25).all()
    shares = quiet["action"].value_counts(normalize=True)
    assert set(shares.index) == {"control", "free_shipping", "discount_5", "cashback_10"}
    assert (shares - 0.25).abs().max() < 4 * np.sqrt(0.25 * 0.75 / len(quiet))
    assert not quiet["reward"].any() and not quiet["cost"].any()
    # the history: the log's own recent-purchase count, and the simulator's latent habit h(t + 1) = d h(t) + purchase
    np.testing.assert_allclose(rows["state_recent_purchases"] * 7, rows["recent_purchases"])
    habit = rows[["user_id", "day", f"state_purchases_decay_{small_campaign.world.config.habit_decay}"]].merge(
        truth[["user_id", "day", "habit"]], on=["user_id", "day"])
    np.testing.assert_allclose(habit.iloc[:, 2], habit["habit"], atol=1e-12)
    # the simulator's own transitions (`write_transitions`) are another draw of the same world, where every user
    # gets a decision every day: same columns (but the extra decay), same (user, day) rows, same levels
    simulated = pd.read_parquet(write_transitions(small_campaign.world, n_users, n_days, tmp_path / "simulated"))
    assert set(transitions.columns) - set(simulated.columns) == {"state_purchases_decay_0.7",
                                                                 "next_purchases_decay_0.7"}
    assert set(simulated.columns) <= set(transitions.columns)
    assert set(simulated["action"]) == set(transitions["action"])
    keys = ["user_id", "day"]
    pd.testing.assert_frame_equal(simulated[keys].sort_values(keys, ignore_index=True),
                                  transitions[keys].sort_values(keys, ignore_index=True), check_dtype=False)


def test_constrained_rl_writes_the_paced_decision_table_of_a_day(built, tmp_path, mlflow_uri, capsys):
    code = main(["constrained-rl", "--transitions", str(built), "--out", str(tmp_path / "mixed"),
                 "--decisions", str(tmp_path / "decisions"), "--decision-day", "2", "--spent-so-far", "1500",
                 "--budget-per-user", "1.0", "--bootstrap", "3", "--pacing-multipliers", "5",
                 "--tracking-uri", mlflow_uri])
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "mixed" / "MLmodel").exists()
    transitions = pd.read_parquet(built)
    day = transitions[transitions["day"] == 2]
    decisions = pd.read_parquet(tmp_path / "decisions")
    assert list(decisions.columns) == ["user_id", "component", "multiplier", "action", "expected_cost"]
    assert sorted(decisions["user_id"]) == sorted(day["user_id"])
    assert set(decisions["action"]) <= set(transitions["action"]) and (decisions["expected_cost"] >= 0).all()
    # the table is the paced policy's decision from the day's states, with the spend so far taken off the budget
    import mlflow

    run = mlflow.search_runs(experiment_names=["campaign"], order_by=["start_time DESC"]).iloc[0]
    assert run["metrics.decision.remaining_budget"] == pytest.approx(0.98 * 1.0 * len(day) - 1500)
    assert run["metrics.decision.planned_remaining"] <= run["metrics.decision.target"] + 1e-6
    # written block by block, it is the logged paced policy's decision for all the day's users at once
    paced = pickle.loads(Path(mlflow.artifacts.download_artifacts(run_id=run["run_id"],
                                                                  artifact_path="paced_policy.pkl")).read_bytes())
    states = day[[c for c in day.columns if c.startswith("state_")]].to_numpy(dtype=float)
    reference = paced.decide(day["user_id"].to_numpy(), states, 2, 1500 / len(day), 1.0, salt=run["params.salt"])
    ours = decisions.set_index("user_id").loc[day["user_id"]]
    np.testing.assert_array_equal(ours["component"], reference.component)
    np.testing.assert_array_equal(ours["expected_cost"], reference.expected_cost)
    assert run["metrics.decision.high_share"] == pytest.approx(reference.high_share)


@pytest.mark.parametrize("edit, extra, message", [
    (lambda states: states.drop(columns=["state_day_share"]), [],
     "states: the columns differ from the model's state: missing ['state_day_share'], not in the model []"),
    (lambda states: states.assign(state_extra=1.0), [],
     "states: the columns differ from the model's state: missing [], not in the model ['state_extra']"),
    (lambda states: states, ["--decision-day", "9"], "decision_day: 9 is past the campaign's last day (4)"),
])
def test_decision_states_that_differ_from_the_model_are_refused(built, tmp_path, mlflow_uri, capsys, edit, extra,
                                                                message):
    transitions = pd.read_parquet(built)
    states = edit(transitions.loc[transitions["day"] == 0, ["user_id", *[c for c in transitions.columns
                                                                         if c.startswith("state_")]]])
    path = _write(states, tmp_path / "states")
    code = main(["constrained-rl", "--transitions", str(built), "--out", str(tmp_path / "mixed"),
                 "--decisions", str(tmp_path / "decisions"), "--states", str(path), *extra,
                 "--tracking-uri", mlflow_uri])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "mixed").exists() and not (tmp_path / "decisions").exists()


def test_a_budget_below_the_cheapest_policy_is_refused(built, tmp_path, mlflow_uri, capsys):
    # a fee of 0.5 per user and day whatever the level: no policy spends less than 5 days x 0.5 = 2.5 per user
    transitions = pd.read_parquet(built)
    path = _write(transitions.assign(cost=transitions["cost"] + 0.5), tmp_path / "fees")
    code = main(["constrained-rl", "--transitions", str(path), "--out", str(tmp_path / "mixed"),
                 "--budget-per-user", "1.0", "--tracking-uri", mlflow_uri, "--level-costs",
                 '{"control": 0, "free_shipping": 3, "discount_5": 5, "cashback_10": 10}'])
    err = capsys.readouterr().err
    assert code == 2 and "budget_per_user: infeasible: 1 per user over the campaign is below what the cheapest " \
        "policy spends (the cheapest policy found needs [" in err
    assert not (tmp_path / "mixed").exists()


def _write(frame: pd.DataFrame, path):
    path.mkdir()
    frame.to_parquet(path / "part-00000.parquet", index=False)
    return path


def _single_day(logs):
    return logs[logs["day"] == 0]


def _gap(logs):
    return logs[logs["day"] != 2]


def _repeated(logs):
    return pd.concat([logs, logs[logs["day"] == 3].head(1)])


@pytest.mark.parametrize("edit, extra, message", [
    (_single_day, [], "day: the logs cover a single day (0); transitions need at least two consecutive days"),
    (_gap, [], "day: days are not consecutive: 1 days between 0 and 4 have no decision ([2])"),
    (_repeated, [], "user_id: 1 users have two or more decisions on one day, e.g. user"),
    (lambda logs: logs, ["--level-costs", '{"control": 0, "discount_5": 5, "free_shipping": 4}'],
     "level_costs: the log has levels ['cashback_10'] without a cost"),
])
def test_bad_logs_are_refused_in_one_line_and_nothing_is_written(small_campaign, tmp_path, mlflow_uri, capsys,
                                                                 edit, extra, message):
    logs = _write(edit(pd.read_parquet(small_campaign.paths.logs)), tmp_path / "logs")
    out = tmp_path / "transitions"
    code = main(["build-transitions", "--logs", str(logs), "--users", str(small_campaign.paths.users),
                 "--out", str(out), *extra, "--tracking-uri", mlflow_uri])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and "Traceback" not in err
    assert not out.exists() and not list(tmp_path.glob(".transitions*"))


def test_on_a_generated_campaign_the_job_reports_the_truth_of_each_allocator(tmp_path, mlflow_uri):
    from pipelines.job import build_job, run_job

    sections = {"seed": 3, "experiment": "truth",
                "generate": {"out": "campaign", "n_users": 4000, "n_days": 5, "chunk_users": 2000},
                "build-transitions": {"logs": "campaign/logs", "users": "campaign/users", "out": "transitions"},
                "constrained-rl": {"transitions": "transitions", "out": "mixed", "budget_per_user": 1.5,
                                   "bootstrap": 2, "pacing_multipliers": 7, "truth_users": 4000}}
    report = run_job(build_job(sections, base_dir=tmp_path, source="test"), tracking_uri=mlflow_uri)
    result = report.results["constrained-rl"]
    truth = result.data["truth"].set_index("policy")
    assert list(truth.index) == ["paced mixed policy", "mixed policy as planned", "two-stage allocator, day by day"]
    # every allocator spends within the budget; pacing spends most of it (the plan alone under-spends)
    assert (truth["spend"] <= 1.5).all()
    assert truth.loc["paced mixed policy", "spend_share"] > truth.loc["mixed policy as planned", "spend_share"]
    assert truth.loc["paced mixed policy", "spend_share"] > 0.9
    assert (truth["value"] > 0).all()


def test_a_user_sample_keeps_whole_users_and_their_rows_unchanged(small_campaign, built, tmp_path, mlflow_uri,
                                                                    capsys):
    decay = small_campaign.world.config.habit_decay
    out = tmp_path / "sampled"
    code = main(["build-transitions", "--logs", str(small_campaign.paths.logs), "--users",
                 str(small_campaign.paths.users), "--out", str(out), "--tracking-uri", mlflow_uri,
                 "--decays", f"0.5,0.9,{decay}", "--sample-fraction", "0.3"])
    assert code == 0, capsys.readouterr().err
    full, sampled = pd.read_parquet(built), pd.read_parquet(out)
    users = sampled["user_id"].unique()
    assert 0.25 < len(users) / full["user_id"].nunique() < 0.35
    assert (sampled.groupby("user_id").size() == full["day"].nunique()).all()  # every day of a kept user
    keys = ["user_id", "day"]
    mine = sampled.sort_values(keys, ignore_index=True)
    theirs = full[full["user_id"].isin(users)].sort_values(keys, ignore_index=True)
    pd.testing.assert_frame_equal(mine, theirs, check_dtype=False)  # absent users' levels too: hashed by user


def test_a_day_written_in_slices_of_users_is_the_same_table(small_campaign, built, tmp_path, mlflow_uri, capsys,
                                                            monkeypatch):
    from pipelines.stages import build_transitions

    monkeypatch.setattr(build_transitions, "SLICE_USERS", 1000)
    out = tmp_path / "sliced"
    code = main(["build-transitions", "--logs", str(small_campaign.paths.logs), "--users",
                 str(small_campaign.paths.users), "--out", str(out), "--tracking-uri", mlflow_uri,
                 "--decays", f"0.5,0.9,{small_campaign.world.config.habit_decay}"])
    assert code == 0, capsys.readouterr().err
    assert len(list(out.glob("part-00002-*.parquet"))) == 3
    pd.testing.assert_frame_equal(pd.read_parquet(out), pd.read_parquet(built))


def test_the_mixed_policy_is_registered_and_becomes_champion_only_when_it_beats_the_champion_on_held_out_users(
        built, tmp_path, mlflow_uri, capsys):
    """With model_name, constrained-rl learns on the training users and evaluates the challenger and the champion on
    the held-out ones (FQE with the same bootstrap replicates): the first version becomes champion, the same policy
    again is kept (its lower bound is below its own value), and both runs read the same held-out value of that
    policy."""
    import mlflow
    from mlflow.tracking import MlflowClient

    def run(out: str, *extra: str) -> int:
        return main(["constrained-rl", "--transitions", str(built), "--out", str(tmp_path / out),
                     "--budget-per-user", "1.0", "--bootstrap", "4", "--pacing-multipliers", "5",
                     "--model-name", "allocation", "--tracking-uri", mlflow_uri, *extra])

    assert run("first", "--decisions", str(tmp_path / "day1"), "--decision-day", "1") == 0, capsys.readouterr().err
    assert run("second") == 0, capsys.readouterr().err
    # learned on the training users, it still decides for every user of the day
    transitions = pd.read_parquet(built)
    assert sorted(pd.read_parquet(tmp_path / "day1")["user_id"]) == sorted(
        transitions.loc[transitions["day"] == 1, "user_id"])
    mlflow.set_tracking_uri(mlflow_uri)
    runs = mlflow.search_runs(experiment_names=["campaign"], order_by=["start_time ASC"])
    stages = runs[runs["tags.campaign.stage"] == "constrained-rl"]
    first, second = stages.iloc[0], stages.iloc[1]
    client = MlflowClient(mlflow_uri)
    assert first["metrics.promoted"] == 1.0 and "the first version" in first["params.rule"]
    # planned within 1.0 per user on the training users; on the held-out ones about that, where the logs spent 4
    assert abs(first["metrics.holdout.challenger.spend"] - 1.0) < 0.05 < 3 < first["metrics.holdout.logging.spend"]
    assert second["metrics.promoted"] == 0.0 and second["params.champion_version"] == "1"
    assert second["metrics.holdout.champion.value"] == pytest.approx(first["metrics.holdout.challenger.value"],
                                                                     rel=1e-9)
    assert {k: str(v) for k, v in client.get_registered_model("allocation").aliases.items()} == {"champion": "1"}
    version = client.get_model_version("allocation", "2")
    assert float(version.tags["fqe.value"]) == pytest.approx(second["metrics.holdout.challenger.value"], rel=1e-5)
    held = 0.2 * pd.read_parquet(built, columns=["user_id"])["user_id"].nunique()
    assert "held-out users" in second["params.rule"] and abs(int(second["params.rule"].split(" on ")[1].split()[0]
                                                                 .replace(",", "")) - held) < 0.25 * held
    # `decide` serves the champion: each user's component for the campaign, and its incentive level today
    today = transitions[transitions["day"] == 1][["user_id", "day",
                                                   *[c for c in transitions.columns if c.startswith("state_")]]]
    today.to_parquet(tmp_path / "today.parquet", index=False)
    assert main(["decide", "--users", str(tmp_path / "today.parquet"), "--model-name", "allocation",
                 "--out", str(tmp_path / "decisions"), "--tracking-uri", mlflow_uri]) == 0
    decisions = pd.read_parquet(tmp_path / "decisions").set_index("user_id").loc[today["user_id"]]
    from pipelines.models import load_fitted

    champion = load_fitted(tmp_path / "first")
    expected = champion.decide(today.reset_index(drop=True))
    np.testing.assert_array_equal(decisions["arm"].to_numpy(), expected["action"].astype(str).to_numpy())
    np.testing.assert_allclose(decisions["propensity"].to_numpy(), expected["propensity"].to_numpy())
    assert set(decisions["decision_key"]) == {""} and set(decisions["model_version"]) == {"1"}
    assert main(["constrained-rl", "--transitions", str(built), "--out", str(tmp_path / "mlp"), "--q-model", "mlp",
                 "--model-name", "allocation", "--tracking-uri", mlflow_uri]) == 2
    assert capsys.readouterr().err.strip() == ("error: constrained-rl: model_name: the registry's comparison on "
                                               "held-out users needs q_model: ridge")
