"""The closed loop on the simulator: the daily job fed its own decisions.

Each day the deployed policy (the registry's champion; the world's logging policy until there is one) decides for
that day's active users, the synthetic world answers (`CampaignDays`: the same world, habit and carry-over as
`campaign generate`), and the answers are that date's decision log. The daily job then runs for the date as a team
runs it (`run_job` with the date: fit-bandit warm-started from the previous date, promote against the champion),
and the next day is decided by whatever is champion then.

Each day's figures come from the world's truth: the expected purchases per decision of the served probabilities
(sum_k p_k mu_k over the day's active users), of the logging policy on the same users and states, of the feature
ceiling (the arm with the highest expected purchases given the logged features, `CampaignWorld.ceiling_arm`) and of
the full-truth oracle (max_k mu_k); with the day's realised purchases, the champion served and whether it was
promoted.

The loop can also run what a team runs to confirm it (`experiment`): a graph-clustered A/B test of the loop against
the static logging policy. The platform's `assign` stage clusters the users' observed graph and randomizes
clusters before the first day; every day the treatment group is served the champion and the control group the
logging policy (both groups' decisions are logged and learned from); after the last day the `readout` stage reads
out the lift in purchases per user. The true lift comes from the world: expected purchases per user over the days
with everyone served the loop's champions, day by day, against everyone served the logging policy (two more runs
of the same days, on the same random draws). With `contagion` the world has interference (`Contagion`): users'
purchases bring their hidden interaction partners back, so the test's groups touch each other.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from pipelines.job import build_job, run_job
from pipelines.models import FittedPolicy, load_fitted_policy
from pipelines.stages.promote import CHAMPION, champion_version
from pipelines.synthetic.generate import edge_frame, log_table, user_table
from pipelines.synthetic.graph import CampaignGraph, build_graph
from pipelines.synthetic.world import CampaignDays, CampaignWorld, Contagion, UserBlock

#: the daily job's mapping for one date: (date, whether an earlier date ran) -> job sections
DailyJob = Callable[[dt.date, bool], dict[str, Any]]


def daily_job(policy: str, seed: int, experiment: str, model_name: str) -> DailyJob:
    """The daily job a team runs in the loop: fit-bandit on the date's logs (warm-started from the previous date
    after the first), then promote against the champion of `model_name`."""

    def sections(date: dt.date, warm: bool) -> dict[str, Any]:
        fit = {"logs": "logs/date={date}", "out": "out/{date}/policy", "policy": policy, "split": "train"}
        return {"seed": seed, "experiment": experiment,
                "fit-bandit": fit | ({"warm_start": "previous"} if warm else {}),
                "promote": {"logs": "logs/date={date}", "out": "out/{date}/promotion.csv", "model_name": model_name}}

    return sections


@dataclass(frozen=True)
class LoopDay:
    """One simulated day: expected purchases per decision of the served policy, the logging policy, the feature
    ceiling and the oracle (from the truth, on the day's active users that the loop serves: the treatment group under
    an experiment), the realised purchases per decision, the decisions, the champion version that served them (0: the
    logging policy) and whether the day's job promoted a new one."""

    date: str
    served_value: float
    logging_value: float
    ceiling_value: float
    oracle_value: float
    realised: float
    decisions: int
    served_version: int
    promoted: bool
    promoted_estimate: float = float("nan")  # the promoted challenger's reported (confirmed) OPE value and interval
    promoted_ci_low: float = float("nan")
    promoted_ci_high: float = float("nan")
    promoted_true_value: float = float("nan")  # the promoted policy's expected purchases on this day's users and states


@dataclass(frozen=True)
class LoopRun:
    """The loop's days and, when it ran one, the A/B test's read-out beside the true lift (`experiment_frame`)."""

    days: list[LoopDay]
    experiment: pd.DataFrame | None = None


def closed_loop(world: CampaignWorld, n_users: int, days: int, daily_job: DailyJob, folder: Path, *,
                model_name: str, start: dt.date, tracking_uri: str, contagion: float = 0.0,
                experiment: dict[str, Any] | None = None) -> LoopRun:
    """Run `days` days of the loop for the world's first `n_users` users; logs are written under
    `folder/logs/date=<date>`, the daily job's outputs where its mapping says (relative to `folder`).

    `contagion`: the strength of interference (`Contagion`; 0: none). `experiment`: settings of the `assign` stage
    (`method`, `max_cluster_size`, `design`, `p`, ...) for an A/B test of the loop against the logging policy; the
    users and edges tables, the assignment, outcomes and read-out are written under `folder/experiment`."""
    users = world.draw_users(0, 1, n_users)
    table = user_table(world, users)
    features = table.to_pandas()
    graph = _graph(world, users) if contagion > 0 or experiment is not None else None
    spread = (Contagion.of_interactions(graph.interaction_src, graph.interaction_dst, graph.interaction_weight,
                                        n_users, contagion) if contagion > 0 else None)
    treated = (np.ones(n_users, dtype=bool) if experiment is None else
               _assign(experiment, table, graph, users, folder, start, tracking_uri))
    campaign = CampaignDays.start(world, users, 0, contagion=spread)
    logging_p = world.logging_probabilities(users)
    champion: tuple[int, FittedPolicy] | None = None
    served_policies: list[FittedPolicy | None] = []
    purchases = np.zeros(n_users)
    result = []
    for offset in range(days):
        date = start + dt.timedelta(days=offset)
        active = campaign.active()
        probabilities = logging_p[active].copy()
        loop = np.flatnonzero(treated[active])  # the active users the loop serves (positions in `active`)
        frame = _day_frame(features, campaign, active[loop])
        if champion is not None:
            probabilities[loop] = _in_world_order(champion[1], frame, world.arm_labels)
        served_policies.append(None if champion is None else champion[1])
        served_version = 0 if champion is None else champion[0]
        ceiling = world.ceiling_arm(users.take(active[loop]), campaign.habit[active[loop]])
        row = campaign.respond(active, probabilities)
        purchases[active] += row["reward"]
        folder_of_day = folder / "logs" / f"date={date.isoformat()}"
        folder_of_day.mkdir(parents=True, exist_ok=True)
        pq.write_table(log_table(world, row, table, 1), folder_of_day / "part-0.parquet")
        report = run_job(build_job(daily_job(date, offset > 0), base_dir=folder, source="loop", date=date),
                         tracking_uri=tracking_uri)
        promote = report.results.get("promote")
        mlflow.set_tracking_uri(tracking_uri)
        version = champion_version(mlflow.MlflowClient(), model_name, CHAMPION)
        mu = row["mu"][loop]
        promoted = bool(promote is not None and promote.data["promoted"])
        if version is not None and (champion is None or int(version.version) != champion[0]):
            champion = (int(version.version), load_fitted_policy(f"models:/{model_name}/{version.version}"))
        gate: list[float] = []
        if promoted:  # the estimate, its interval, and the truth on the same day's users and states
            estimate = promote.data["table"].iloc[0]
            chosen = _in_world_order(champion[1], frame, world.arm_labels)
            gate = [*(float(estimate[f"confirmed_{key}"]) for key in ("value", "ci_low", "ci_high")),
                    float((mu * chosen).sum(axis=1).mean())]
        result.append(LoopDay(date.isoformat(), float((mu * probabilities[loop]).sum(axis=1).mean()),
                              float((mu * logging_p[active[loop]]).sum(axis=1).mean()),
                              float(mu[np.arange(loop.size), ceiling].mean()), float(mu.max(axis=1).mean()),
                              float(row["reward"][loop].mean()), int(loop.size),
                              served_version, promoted, *gate))
    if experiment is None:
        return LoopRun(result)
    readout = _readout(experiment, features, purchases, folder, start + dt.timedelta(days=days - 1), tracking_uri)
    everyone, nobody = (_expected_purchases(world, users, features, spread, policies, logging_p)
                        for policies in (served_policies, [None] * days))
    return LoopRun(result, experiment_frame(readout, float((everyone - nobody).mean())))


def _graph(world: CampaignWorld, users: UserBlock) -> CampaignGraph:
    """The users' social and hidden interaction graphs, drawn as `campaign generate` draws them (block positions)."""
    config = world.config
    similarity = (users.prognostic_signal if config.n_prognostic else users.modifier_signal)[:, 0]
    return build_graph(world.random_state, users.engagement, similarity, avg_degree=config.avg_degree,
                       community_size=config.community_size, mixing=config.mixing, dormant_ties=config.dormant_ties)


def _assign(settings: dict[str, Any], table, graph: CampaignGraph, users: UserBlock, folder: Path, date: dt.date,
            tracking_uri: str) -> np.ndarray:
    """Write the users and the observed edges (friends, past invitations), run the `assign` stage on them, and
    return who is treated (bool, block order)."""
    root = folder / "experiment"
    for name in ("users", "edges"):
        (root / name).mkdir(parents=True, exist_ok=True)
    pq.write_table(table, root / "users" / "part-0.parquet")
    edges = edge_frame(graph)
    edges[["src", "dst"]] += int(users.user_id[0])  # block positions to user ids
    edges.to_parquet(root / "edges" / "part-0.parquet", index=False)
    job = {"experiment": settings.get("experiment", "campaign-loop"), "seed": settings.get("seed", 0),
           "assign": {key: value for key, value in settings.items() if key not in ("experiment", "seed")}
           | {"edges": "experiment/edges", "users": "experiment/users", "out": "experiment/assignment.parquet"}}
    run_job(build_job(job, base_dir=folder, source="loop", date=date), tracking_uri=tracking_uri)
    assignment = pd.read_parquet(root / "assignment.parquet", columns=["user_id", "group"])
    treated = np.zeros(len(users), dtype=bool)
    treated[assignment["user_id"].to_numpy() - users.user_id[0]] = assignment["group"].to_numpy() == 1
    return treated


def _readout(settings: dict[str, Any], features: pd.DataFrame, purchases: np.ndarray, folder: Path, date: dt.date,
             tracking_uri: str) -> pd.DataFrame:
    """Write each user's purchases over the loop (and `past_purchases`, the pre-period metric) and run `readout`."""
    outcomes = pd.DataFrame({"user_id": features["user_id"], "purchases": purchases,
                             "past_purchases": features["past_purchases"].astype(float)})
    outcomes.to_parquet(folder / "experiment" / "outcomes.parquet", index=False)
    section = {"assignment": "experiment/assignment.parquet", "outcomes": "experiment/outcomes.parquet",
               "out": "experiment/readout.csv", "metric": "purchases", "pre_metric": "past_purchases",
               "edges": "experiment/edges", "users": "experiment/users", "p": settings.get("p", 0.5),
               "exposure": settings.get("exposure", "fractional:0.75"), "design": settings.get("design")}
    job = {"experiment": settings.get("experiment", "campaign-loop"), "seed": settings.get("seed", 0),
           "readout": section}
    run_job(build_job(job, base_dir=folder, source="loop", date=date), tracking_uri=tracking_uri)
    return pd.read_csv(folder / "experiment" / "readout.csv")


def _expected_purchases(world: CampaignWorld, users: UserBlock, features: pd.DataFrame, spread: Contagion | None,
                        policies: list[FittedPolicy | None], logging_p: np.ndarray) -> np.ndarray:
    """Each user's expected purchases over the days with everyone served `policies[day]` (None: the logging
    policy), on the loop's own random draws: the sum over active days of sum_k p_k mu_k."""
    campaign = CampaignDays.start(world, users, 0, contagion=spread)
    expected = np.zeros(len(users))
    for policy in policies:
        active = campaign.active()
        probabilities = logging_p[active]
        if policy is not None:
            probabilities = _in_world_order(policy, _day_frame(features, campaign, active), world.arm_labels)
        row = campaign.respond(active, probabilities)
        expected[active] += (row["mu"] * probabilities).sum(axis=1)
    return expected


def experiment_frame(readout: pd.DataFrame, true_lift: float) -> pd.DataFrame:
    """The read-out's estimators (lift in purchases per user over the loop's days) beside the world's true lift of
    serving everyone the loop against serving everyone the logging policy, and whether each interval covers it."""
    frame = readout[["estimator", "estimate", "se", "ci_low", "ci_high", "p_value"]].copy()
    frame["true_lift"] = true_lift
    frame["covered"] = (frame["ci_low"] <= true_lift) & (true_lift <= frame["ci_high"])
    return frame


def _day_frame(features: pd.DataFrame, campaign: CampaignDays, positions: np.ndarray) -> pd.DataFrame:
    """What a policy sees of the users at `positions` today: their features and `recent_purchases`."""
    return features.iloc[positions].assign(recent_purchases=campaign.recent_purchases(positions))


def _in_world_order(fitted: FittedPolicy, frame: pd.DataFrame, labels: list[str]) -> np.ndarray:
    """A policy's probabilities for the rows of `frame`, as (n, the world's arms), columns in the world's order (an
    arm the policy does not know: probability 0)."""
    probabilities = fitted.probabilities(frame)
    position = {str(arm): k for k, arm in enumerate(fitted.arms)}
    ordered = np.zeros((len(probabilities), len(labels)))
    for k, label in enumerate(labels):
        if label in position:
            ordered[:, k] = probabilities[:, position[label]]
    return ordered


def loop_frame(days: list[LoopDay]) -> pd.DataFrame:
    """The loop's days as a table, with the served policy's share of the ceiling's and of the oracle's gain over
    logging."""
    frame = pd.DataFrame([asdict(day) for day in days])
    for reference in ("ceiling", "oracle"):
        gain = frame[f"{reference}_value"] - frame["logging_value"]
        frame[f"share_of_{reference}_gain"] = (frame["served_value"] - frame["logging_value"]) / gain.where(gain > 0)
    return frame


def cumulative_share(frame: pd.DataFrame, reference: str = "ceiling") -> float:
    """The loop's expected purchases over all its days, less logging's, as a share of the reference's (`ceiling` or
    `oracle`) gain over logging: each day weighted by its decisions."""
    gain = ((frame[f"{reference}_value"] - frame["logging_value"]) * frame["decisions"]).sum()
    return float(((frame["served_value"] - frame["logging_value"]) * frame["decisions"]).sum() / gain)


def promotions(frame: pd.DataFrame) -> pd.DataFrame:
    """The gate's calibration: per promotion, the challenger's OPE estimate and interval; its true expected
    purchases per decision on the same day's users and states (`true_value`, what the estimate estimates) and
    whether the interval covers it; and what the world delivered when it served, the next day (on that day's users
    and states: habit has moved on)."""
    rows = []
    for index in frame.index[frame["promoted"]]:
        low, high = frame.loc[index, "promoted_ci_low"], frame.loc[index, "promoted_ci_high"]
        truth = frame.loc[index, "promoted_true_value"]
        rows.append({"date": frame.loc[index, "date"], "estimate": frame.loc[index, "promoted_estimate"],
                     "ci_low": low, "ci_high": high, "true_value": truth, "covered": bool(low <= truth <= high),
                     "delivered_next_day": (float(frame.loc[index + 1, "served_value"]) if index + 1 in frame.index
                                            else float("nan"))})
    return pd.DataFrame(rows, columns=["date", "estimate", "ci_low", "ci_high", "true_value", "covered",
                                       "delivered_next_day"])


def loop_figure(frame: pd.DataFrame):
    """Per day: expected purchases per decision of the loop, the logging policy, the feature ceiling and the oracle,
    each promotion's reported OPE interval beside what its version delivered when it served (the next day); the
    loop's regret per day against the ceiling and the oracle; and its cumulative share of their gain over logging."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 8.5))
    top, middle, bottom = figure.subplots(3, 1, sharex=True, gridspec_kw={"height_ratios": [2, 1, 1]})
    day = np.arange(len(frame))
    for column, label, style in (("oracle_value", "oracle (full truth)", "--"),
                                 ("ceiling_value", "feature ceiling", "-."), ("served_value", "the loop", "-"),
                                 ("logging_value", "logging policy", ":")):
        top.plot(day, frame[column], style, label=label)
    gate = promotions(frame)
    if len(gate):  # the promoted version serves from the next day: its interval is drawn there
        served_from = frame.index[frame["promoted"]].to_numpy() + 1
        top.errorbar(served_from, gate["estimate"], yerr=[gate["estimate"] - gate["ci_low"],
                                                          gate["ci_high"] - gate["estimate"]],
                     fmt="o", color="tab:green", capsize=3, label="promoted: reported OPE interval")
        top.plot(served_from, gate["delivered_next_day"], "x", color="black", label="promoted: delivered")
    top.set_ylabel("expected purchases per decision")
    top.legend(fontsize=7)
    for reference, style in (("ceiling", "-."), ("oracle", "--")):
        middle.plot(day, frame[f"{reference}_value"] - frame["served_value"], style, label=f"against the {reference}")
    middle.set_ylabel("regret per decision")
    middle.legend(fontsize=7)
    for reference in ("ceiling", "oracle"):
        share = [cumulative_share(frame.iloc[:end], reference) for end in range(1, len(frame) + 1)]
        bottom.plot(day, share, label=f"of the {reference}'s gain")
    bottom.set_ylabel("cumulative share")
    bottom.set_xlabel("day")
    bottom.legend(fontsize=7)
    figure.tight_layout()
    return figure
