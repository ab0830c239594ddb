"""Stage `build-transitions`: the transitions table that `constrained-rl` learns from, built from ordinary decision
logs over several days and the users table (docs/constrained_rl.md, 'Transitions from your logs').

1. Check, in one pass over the logs (`budget_rl.transitions.LogDays`, a mergeable statistic, one bit per user and
   day): every decision's user is in the users table, no user has two decisions on one day, the days are at least two
   and consecutive, every level has a cost (`level_costs`, or the mean cost of its rewarded decisions).
2. Build, one day at a time (a day filter on the Dask frame): `budget_rl.transitions.transition_day` with every
   user's history in arrays indexed by the user's position in the users table. One parquet file per day, the
   folder replaced in one rename.

The state of a row: the user features (`features`; none: those `select-features` chose in this job, else every
usable users-table column) encoded by `bandits.ContextEncoder` (numbers standardized with the users table's mean
and standard deviation plus a `<f>__missing` flag where values are missing, categories one-hot as `<f>=<level>`),
then the history features of `budget_rl.transitions`.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field

from bandits import ContextEncoder
from budget_rl.transitions import (
    HISTORY_DECAYS,
    DayDecisions,
    LogDays,
    UserHistory,
    campaign_days,
    history_feature_names,
    transition_day,
)
from campaign_core import salted_uniform, seeded_salt
from pipelines.config import ConfigPath
from pipelines.errors import InputError
from pipelines.execution import run_statistic
from pipelines.feature_columns import choose_features
from pipelines.io import atomic_output
from pipelines.progress import progress
from pipelines.stages.levels import face_values_of_counts
from pipelines.stages.log_columns import LogSection
from pipelines.stages.registry import DemoInputs, StageContext, StageResult, register_stage
from pipelines.tables import USERS, day_tables, read_table

#: Users-table columns that are never state features when `features` is none and no select-features ran.
NOT_FEATURES = ["user_id", "segment"]


class BuildTransitionsConfig(LogSection):
    users: ConfigPath = Field(description="users table (parquet): user_id and the state's user features; one "
                                          "transition per user and day, users without a decision included")
    out: ConfigPath = Field(description="transitions (parquet folder, files by day, replaced atomically): "
                                        "user_id, day, action, reward, cost, propensity, state_*, next_*")
    user_id: str = Field("user_id", description="user id column of the logs (the users table's is user_id)")
    day: str = Field("day", description="day column (integers; at least two, consecutive)")
    cost: str = Field("cost", description="cost column (money paid out by the decision)")
    propensity: str | None = Field("propensity", description="logged propensity column (used when present)")
    features: list[str] | None = Field(None, description="users-table columns in the state (none: the features "
                                                         "select-features chose in this job, else every usable "
                                                         "column but user_id and segment)")
    level_costs: dict[str, float] | None = Field(None, description="level -> face value paid on a response; every "
                                                                   "logged level must be here (none: the mean cost "
                                                                   "of each level's rewarded decisions)")
    absent: Literal["inactive", "not_contacted"] = Field(
        "inactive", description="a user without a decision on a day: inactive (did not come; no level would have "
                                "changed the day: a level drawn uniformly by a salted hash, propensity 1 / levels) "
                                "or not_contacted (the no_contact level, propensity 1)")
    no_contact: str | None = Field(None, description="level of a user not contacted (absent: not_contacted; none: "
                                                     "the zero-cost level, the first by name if several)")
    decays: list[float] = Field(list(HISTORY_DECAYS), description="daily decays of the purchase-count history "
                                                                  "features, each in [0, 1)")
    sample_fraction: float = Field(1.0, gt=0, le=1, description="transitions of a whole-user sample: the users "
                                                                "kept by a salted hash of user_id (every day the "
                                                                "same users; the encoder still fitted on all)")

    required_roles: ClassVar[tuple[str, ...]] = ("user_id", "day", "arm", "reward", "cost")

    def input_tables(self) -> dict:
        return {self.logs: self.log_schema(), self.users: USERS}


def _features(context: StageContext, config: BuildTransitionsConfig, users) -> list[str]:
    if config.features is not None:
        features, source = list(config.features), "features"
    elif "select-features" in context.results:
        # selected log columns (e.g. recent_purchases) are not user features: the history features stand for them
        selected = list(context.results["select-features"].data["selected"])
        features, source = [name for name in selected if name in users.columns], "select-features"
    else:
        features = list(choose_features(users, None, roles={"user_id": "user_id"}, exclude=NOT_FEATURES).taken)
        source = "features"
    missing = [name for name in features if name not in users.columns]
    if missing:
        raise InputError(f"{source}: not in the users table: {missing}")
    return features


def _no_contact(config: BuildTransitionsConfig, levels: dict[str, float]) -> int:
    names = list(levels)
    if config.no_contact is None:
        return 0  # face_values puts a zero-cost level first
    if config.no_contact not in levels:
        raise InputError(f"no_contact: {config.no_contact!r} is not a known level ({names})")
    return names.index(config.no_contact)


#: Users per output file: a day is written in slices, so a reader holds one slice, not the day's whole table.
SLICE_USERS = 1 << 20
#: Users per parquet row group: Dask reads a file of a slice as partitions of about its 256 MiB blocksize, so a
#: reader holds a quarter slice at a time and a day of 10^6 users spreads over the cores.
ROW_GROUP_USERS = 1 << 18


def _day_table(rows, users: slice, user_ids: np.ndarray, level_names: np.ndarray, static: np.ndarray,
               static_names: list[str], history_names: list[str], has_propensity: bool) -> pa.Table:
    """The rows of users `users` (a slice of the users table) for one day, as a parquet-ready table."""
    ids = user_ids[users]
    columns: dict[str, np.ndarray] = {"user_id": ids, "day": np.full(ids.size, rows.day, dtype=np.int64),
                                      "action": level_names[rows.action[users]], "reward": rows.reward[users],
                                      "cost": rows.cost[users]}
    if has_propensity:
        columns["propensity"] = rows.propensity[users]
    for prefix, history in (("state_", rows.state), ("next_", rows.next_state)):
        columns |= {f"{prefix}{name}": static[users, j] for j, name in enumerate(static_names)}
        columns |= {f"{prefix}{name}": history[users, j] for j, name in enumerate(history_names)}
    return pa.table(columns)


def _demo(inputs: DemoInputs) -> dict:
    return {"logs": str(inputs.campaign_dir / "logs"), "users": str(inputs.campaign_dir / "users"),
            "out": str(inputs.out_dir / "transitions"), "sample_fraction": 0.2}


@register_stage("build-transitions", BuildTransitionsConfig, order=52, demo=_demo)
def build_transitions(context: StageContext, config: BuildTransitionsConfig) -> StageResult:
    """Build the transitions table of a multi-day campaign from its decision logs and users table."""
    users = read_table(config.users, USERS)
    features = _features(context, config, users)
    frame = users[["user_id", *features]].compute()
    ids = frame["user_id"].to_numpy()
    order = np.argsort(ids, kind="stable")
    frame, ids = frame.iloc[order].reset_index(drop=True), ids[order]
    if (ids[1:] == ids[:-1]).any():
        raise InputError(f"user_id: {int((ids[1:] == ids[:-1]).sum())} users appear twice in the users table, e.g. "
                         f"{ids[1:][ids[1:] == ids[:-1]][0]!r}")
    logs = read_table(config.logs, config.log_schema())
    has_propensity = config.propensity is not None and config.propensity in logs.columns
    check = LogDays(ids, user_id=config.user_id, day=config.day, arm=config.arm, reward=config.reward,
                    cost=config.cost)
    summary = run_statistic(check, logs, columns=[config.user_id, config.day, config.arm, config.reward, config.cost])
    first, horizon = campaign_days(summary.days, column=config.day)
    levels = face_values_of_counts(summary.levels, config.level_costs)
    no_contact = _no_contact(config, levels)
    seed = context.stage_seed("build-transitions")
    encoder = ContextEncoder(features).fit(frame) if features else None
    kept = (salted_uniform(ids, seeded_salt("transitions-sample", seed)) < config.sample_fraction
            if config.sample_fraction < 1 else np.ones(ids.size, dtype=bool))
    sampled = np.cumsum(kept) - 1  # position of a kept user among the kept ones
    frame, ids = frame[kept].reset_index(drop=True), ids[kept]
    history = UserHistory.start(ids.size, decays=config.decays)
    static = np.asfortranarray(encoder.transform(frame)) if encoder is not None else np.zeros((ids.size, 0))
    del frame  # the encoded features are all the days need (at 10^7 users its text columns hold about 1 GB)
    static_names = [str(name) for name in encoder.feature_names_out_] if encoder is not None else []
    history_names = history_feature_names(levels, history.decays)
    level_names = np.asarray(list(levels), dtype=object)
    columns = [config.user_id, config.arm, config.reward, config.cost, *([config.propensity] * has_propensity)]
    contacted = 0
    with atomic_output(config.out) as temporary:
        temporary.mkdir(parents=True)
        days = day_tables(config.logs, logs[[config.day, *columns]], config.day, range(first, first + horizon))
        for day, decisions in progress(enumerate(days), "building transitions day by day", total=horizon):
            decisions = decisions[columns].compute()
            index, _ = check.user_index(decisions[config.user_id].to_numpy())
            if config.sample_fraction < 1:
                decisions, index = decisions[kept[index]], sampled[index[kept[index]]]
            codes = pd.Categorical(decisions[config.arm].astype(str), categories=list(levels)).codes
            draw = salted_uniform(ids, seeded_salt(f"absent-day-{day}", seed)) if config.absent == "inactive" else None
            rows, history = transition_day(
                history, DayDecisions(index, codes, decisions[config.reward].to_numpy(dtype=np.float64),
                                      decisions[config.cost].to_numpy(dtype=np.float64),
                                      decisions[config.propensity].to_numpy(dtype=np.float64)
                                      if has_propensity else None),
                n_levels=len(levels), no_contact_level=no_contact, horizon=horizon, absent_draw=draw)
            contacted += len(decisions)
            del decisions
            for part, start in enumerate(range(0, ids.size, SLICE_USERS)):
                users = slice(start, start + SLICE_USERS)
                pq.write_table(_day_table(rows, users, ids, level_names, static, static_names, history_names,
                                          has_propensity),
                               temporary / f"part-{day:05d}-{part:04d}.parquet", compression="zstd",
                               row_group_size=ROW_GROUP_USERS)
            del rows
    state_names = [*static_names, *history_names]
    absent_rule = (f"inactive (a level drawn uniformly, propensity 1/{len(levels)})" if config.absent == "inactive"
                   else f"not contacted ({level_names[no_contact]}, propensity 1)")
    context.log.params({"user_features": ",".join(features), "levels": ",".join(levels),
                        "absent": config.absent, "no_contact_level": str(level_names[no_contact]),
                        "first_day": first, "horizon": horizon,
                        "state_features": ",".join(state_names)})
    context.log.metrics({"users": int(ids.size), "days": horizon, "decisions": contacted,
                         "transitions": int(ids.size) * horizon, "state_features": len(state_names),
                         "contacted_share": contacted / max(ids.size * horizon, 1)})
    sample = f" (a {config.sample_fraction:.0%} sample of the users)" if config.sample_fraction < 1 else ""
    return StageResult(summary={"transitions": f"{ids.size} users x {horizon} days{sample}",
                                "state": f"{len(static_names)} user + {len(history_names)} history features",
                                "days without a decision": absent_rule},
                       outputs={"transitions": config.out},
                       data={"transitions": config.out, "state_features": state_names, "levels": levels,
                             "encoder": encoder})
