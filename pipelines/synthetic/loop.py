"""The closed loop on the simulator: the daily job fed its own decisions.

Each day the deployed policy (the registry's champion; the world's logging policy until there is one) decides for
that day's active users, the synthetic world answers (`CampaignDays`: the same world, habit and carry-over as
`campaign generate`), and the answers are that date's decision log. The daily job then runs for the date as a team
runs it (`run_job` with the date: fit-bandit warm-started from the previous date, promote against the champion),
and the next day is decided by whatever is champion then.

Each day's figures come from the world's truth: the expected purchases per decision of the served probabilities
(sum_k p_k mu_k over the day's active users), of the logging policy on the same users and states, and of the
full-truth oracle (max_k mu_k); with the day's realised purchases, the champion served and whether it was promoted.
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
from pipelines.synthetic.generate import log_table, user_table
from pipelines.synthetic.world import CampaignDays, CampaignWorld

#: the daily job's mapping for one date: (date, whether an earlier date ran) -> job sections
DailyJob = Callable[[dt.date, bool], dict[str, Any]]


@dataclass(frozen=True)
class LoopDay:
    """One simulated day: expected purchases per decision of the served policy, the logging policy and the oracle
    (from the truth, on the day's active users), the realised purchases per decision, the decisions, the
    champion version that served them (0: the logging policy) and whether the day's job promoted a new one."""

    date: str
    served_value: float
    logging_value: float
    oracle_value: float
    realised: float
    decisions: int
    served_version: int
    promoted: bool
    promoted_estimate: float = float("nan")  # the promoted challenger's OPE value and interval (promote's table)
    promoted_ci_low: float = float("nan")
    promoted_ci_high: float = float("nan")
    promoted_true_value: float = float("nan")  # the promoted policy's expected purchases on this day's users and states


def closed_loop(world: CampaignWorld, n_users: int, days: int, daily_job: DailyJob, folder: Path, *,
                model_name: str, start: dt.date, tracking_uri: str) -> list[LoopDay]:
    """Run `days` days of the loop for the world's first `n_users` users; logs are written under
    `folder/logs/date=<date>`, the daily job's outputs where its mapping says (relative to `folder`)."""
    users = world.draw_users(0, 1, n_users)
    table = user_table(world, users)
    features = table.to_pandas()
    campaign = CampaignDays.start(world, users, 0)
    logging_p = world.logging_probabilities(users)
    champion: tuple[int, FittedPolicy] | None = None
    result = []
    for offset in range(days):
        date = start + dt.timedelta(days=offset)
        active = campaign.active()
        frame = features.iloc[active].assign(recent_purchases=campaign.recent_purchases(active))
        if champion is None:
            probabilities = logging_p[active]
        else:
            probabilities = _in_world_order(champion[1], champion[1].probabilities(frame), world.arm_labels)
        served_version = 0 if champion is None else champion[0]
        row = campaign.respond(active, probabilities)
        folder_of_day = folder / "logs" / f"date={date.isoformat()}"
        folder_of_day.mkdir(parents=True, exist_ok=True)
        pq.write_table(log_table(world, row, table, 1), folder_of_day / "part-0.parquet")
        report = run_job(build_job(daily_job(date, offset > 0), base_dir=folder, source="loop", date=date),
                         tracking_uri=tracking_uri)
        promote = report.results.get("promote")
        mlflow.set_tracking_uri(tracking_uri)
        version = champion_version(mlflow.MlflowClient(), model_name, CHAMPION)
        mu = row["mu"]
        promoted = bool(promote is not None and promote.data["promoted"])
        if version is not None and (champion is None or int(version.version) != champion[0]):
            champion = (int(version.version), load_fitted_policy(f"models:/{model_name}/{version.version}"))
        gate: list[float] = []
        if promoted:  # the estimate, its interval, and the truth on the same day's users and states
            estimate = promote.data["table"].iloc[0]
            chosen = _in_world_order(champion[1], champion[1].probabilities(frame), world.arm_labels)
            gate = [*(float(estimate[key]) for key in ("value", "ci_low", "ci_high")),
                    float((mu * chosen).sum(axis=1).mean())]
        result.append(LoopDay(date.isoformat(), float((mu * probabilities).sum(axis=1).mean()),
                              float((mu * logging_p[active]).sum(axis=1).mean()), float(mu.max(axis=1).mean()),
                              float(row["reward"].mean()), int(active.size),
                              served_version, promoted, *gate))
    return result


def _in_world_order(fitted: FittedPolicy, probabilities: np.ndarray, labels: list[str]) -> np.ndarray:
    """A policy's (n, its arms) probabilities as (n, the world's arms), columns in the world's order (an arm the
    policy does not know: probability 0)."""
    position = {str(arm): k for k, arm in enumerate(fitted.arms)}
    ordered = np.zeros((len(probabilities), len(labels)))
    for k, label in enumerate(labels):
        if label in position:
            ordered[:, k] = probabilities[:, position[label]]
    return ordered


def loop_frame(days: list[LoopDay]) -> pd.DataFrame:
    """The loop's days as a table, with the served policy's share of the oracle's gain over logging."""
    frame = pd.DataFrame([asdict(day) for day in days])
    gain = frame["oracle_value"] - frame["logging_value"]
    frame["share_of_oracle_gain"] = (frame["served_value"] - frame["logging_value"]) / gain.where(gain > 0)
    return frame


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
    """Per day: expected purchases per decision of the loop, the logging policy and the oracle, promotions marked;
    and the loop's cumulative share of the oracle's gain over logging."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 6))
    top, bottom = figure.subplots(2, 1, sharex=True)
    day = range(len(frame))
    for column, label, style in (("oracle_value", "oracle (full truth)", "--"), ("served_value", "the loop", "-"),
                                 ("logging_value", "logging policy", ":")):
        top.plot(day, frame[column], style, label=label)
    for promoted in frame.index[frame["promoted"]]:
        top.axvline(promoted + 1, color="tab:green", alpha=0.3)  # the promoted champion serves the next day
    top.set_ylabel("expected purchases per decision")
    top.legend(fontsize=8)
    gain = (frame["oracle_value"] - frame["logging_value"]) * frame["decisions"]
    share = ((frame["served_value"] - frame["logging_value"]) * frame["decisions"]).cumsum() / gain.cumsum()
    bottom.plot(day, share)
    bottom.set_ylabel("cumulative share of the oracle's gain")
    bottom.set_xlabel("day")
    figure.tight_layout()
    return figure
