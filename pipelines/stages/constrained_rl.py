"""Stage `constrained-rl`: a mixed policy of at most d + 1 offline-learned policies that maximizes long-term value
with the expected spend per user within the budget (docs/constrained_rl.md, 'The mixed policy'), the daily pacing
that spends that budget ('Spending the budget'), and the decision table of one day.

Reads logged transitions (what `campaign build-transitions` or `campaign generate --transitions-horizon D` writes:
user_id, day, action, reward, cost, propensity, state_*/next_*) and learns, with rows weighted by 1 / logged
propensity when the logs have it, either ridge Q-functions from sufficient statistics over the table's Dask
partitions, one day at a time (`budget_rl.ridge_statistics`, nothing gathered in memory), or a torch MLP on the table
read into memory (`budget_rl.offline`; on a GPU when one is present):

1. the column-generation mixture over the FQI/FQE oracle: the campaign's plan, with bootstrap intervals, saved and
   logged as a pyfunc model (`predict(frame with user_id, day, state_*)`: each user's component, drawn once per user
   by a salted hash, and its action label);
2. the pacing grid (`budget_rl.pacing`): best responses for a grid of budget multipliers with their per-day FQE
   Q-functions and the one-step cost models, from which each day's decision is re-planned against the spend so far;
3. with `decisions`: the decision table of `decision_day` (user_id, component, multiplier, action, expected_cost)
   from that day's states, what a daily job hands to the campaign system;
4. when the job generated the campaign and built these transitions from its logs: the true value and spend of the
   paced policy, the planned mixture and the two-stage allocator applied day by day, from the simulator.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import dask
import dask.dataframe as dd
import mlflow
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import torch
from pydantic import Field

from budget_rl.baselines import MyopicAllocator
from budget_rl.mixed import MixedPolicy, maximize_under_budget, maximize_under_budget_batched
from budget_rl.offline import (
    MLPQ,
    Transitions,
    evaluated_policy,
    fqe_oracle,
    fqe_with_intervals,
    one_step_models,
)
from budget_rl.pacing import (
    DEFAULT_MULTIPLIERS,
    STOP_MULTIPLIER,
    DayPlan,
    PacedPolicy,
    decide_in_blocks,
    paced_policy,
)
from budget_rl.ridge_statistics import ridge_sweeps
from campaign_core import StatisticOf
from campaign_core.parallel import single_thread_pools
from pipelines.config import ConfigPath, StageConfig
from pipelines.errors import InputError
from pipelines.execution import Partitions, run_statistic
from pipelines.io import atomic_output
from pipelines.models import FittedMixedPolicy, mixed_policy_arguments, quiet_pyfunc
from pipelines.stages.levels import face_values, face_values_of_counts
from pipelines.stages.mixed_registry import DeployedMixed, HoldoutComparison, deployed_mixed, register_mixed
from pipelines.stages.promote import CHAMPION, champion_version
from pipelines.stages.registry import DemoInputs, StageContext, StageResult, register_stage
from pipelines.synthetic.episodes import rollout
from pipelines.tables import INTEGER, LABEL, NUMERIC, Column, Schema, csv_files, day_tables, read_table
from pipelines.user_split import in_holdout, split_salt

TRANSITIONS = Schema(
    "transitions",
    required=(Column("user_id", LABEL), Column("day", INTEGER, low=0.0), Column("action", LABEL),
              Column("reward", NUMERIC), Column("cost", NUMERIC, low=0.0)),
    optional=(Column("propensity", NUMERIC, low=0.0, low_inclusive=False, high=1.0),))
STATE_PREFIX, NEXT_PREFIX = "state_", "next_"


def _column_names(path: Path) -> list[str]:
    """A table's column names from its parquet footers or CSV header; none while it cannot be read (missing,
    written by an earlier stage of the job, corrupt: the table checks say which)."""
    try:
        files = csv_files(path)
        if files is not None:
            return list(pd.read_csv(files[0], nrows=0).columns)
        return list(pads.dataset(path, format="parquet").schema.names)
    except (OSError, ValueError, pa.ArrowException):
        return []


def transitions_schema(path: Path) -> Schema:
    """The transitions contract for the table at `path`: the fixed columns, plus each `state_<f>` column and its
    `next_<f>` twin as required finite numbers (so a text or NaN state column is refused by name before any work)."""
    states = [name for name in _column_names(path) if name.startswith(STATE_PREFIX)]
    features = [Column(name, NUMERIC) for state in states
                for name in (state, NEXT_PREFIX + state.removeprefix(STATE_PREFIX))]
    return Schema(TRANSITIONS.name, required=(*TRANSITIONS.required, *features), optional=TRANSITIONS.optional)


class ConstrainedRLConfig(StageConfig):
    transitions: ConfigPath = Field(description="logged transitions (parquet): user_id, day, action, reward, cost, "
                                                "propensity, state_*, next_* (campaign generate "
                                                "--transitions-horizon D writes them)")
    out: ConfigPath = Field(description="the mixed policy's MLflow model folder (replaced atomically)")
    budget: float | None = Field(None, ge=0, description="total budget over the campaign in cost units (none: "
                                                         "budget_per_user x users)")
    budget_per_user: float = Field(1.0, ge=0, description="budget per user over the campaign when `budget` is none")
    level_costs: dict[str, float] | None = Field(None, description="action -> face value paid on a response "
                                                                   "(none: read off the transitions' cost column)")
    bootstrap: int = Field(20, ge=2, description="bootstrap resamples of the value and spend intervals")
    q_model: Literal["ridge", "mlp"] = Field("ridge", description="Q-functions: per-action ridge from sufficient "
                                                                  "statistics over partitions (any size) or a torch "
                                                                  "MLP (data that fits in memory; GPU if any)")
    importance_weighting: Literal["auto", "on", "off"] = Field(
        "auto", description="weight FQI/FQE rows by 1 / logged propensity (auto: when the transitions have a "
                            "propensity column)")
    pacing_multipliers: int = Field(len(DEFAULT_MULTIPLIERS), ge=2, le=64,
                                    description="budget multipliers of the pacing grid (0, then geometric from 0.004 "
                                                "to 1 purchases per currency unit, as budget_rl.pacing's default), "
                                                "plus the stop component: one evaluated best response each")
    safety: float = Field(0.02, ge=0, lt=1, description="share of the budget the daily pacing holds back")
    decisions: ConfigPath | None = Field(None, description="the decision table of `decision_day` (parquet folder, "
                                                           "replaced atomically): user_id, component, multiplier, "
                                                           "action, expected_cost (none: not written)")
    decision_day: int = Field(0, ge=0, description="campaign day of the decision table (0: the first)")
    states: ConfigPath | None = Field(None, description="decision-time states (parquet or CSV): user_id and the "
                                                        "model's state_* columns, exactly (none: the transitions' "
                                                        "rows of decision_day)")
    spent_so_far: float = Field(0.0, ge=0, description="campaign spend before decision_day, currency units")
    planned_so_far: float | None = Field(None, ge=0, description="summed expected_cost of the decision tables "
                                                                  "before decision_day (none: no calibration)")
    truth_users: int = Field(200_000, ge=1, description="on a campaign generated in the same job: how many of its "
                                                        "users the simulator runs under the learned policies")
    model_name: str | None = Field(None, min_length=1, description="register the mixed policy in the MLflow Model "
                                                                   "Registry under this name; it is learned on the "
                                                                   "training users and compared with the champion on "
                                                                   "the held-out ones (none: not registered)")
    alias: str = Field(CHAMPION, min_length=1, description="with model_name: the alias of the deployed version")
    holdout_share: float = Field(0.2, gt=0, lt=1, description="with model_name: share of users held out for the "
                                                              "comparison (a salted hash of the user id)")

    def check_ready(self) -> None:
        """With `model_name`: the ridge Q-model, and a registered model whose champion alias is in place."""
        if self.model_name is None:
            return
        if self.q_model != "ridge":
            raise InputError("model_name: the registry's comparison on held-out users needs q_model: ridge")
        champion_version(mlflow.MlflowClient(), self.model_name, self.alias)

    def input_tables(self) -> dict:
        tables = {self.transitions: transitions_schema(self.transitions)}
        if self.states is not None:
            states = [name for name in _column_names(self.states) if name.startswith(STATE_PREFIX)]
            tables[self.states] = Schema("states", required=(Column("user_id", LABEL),
                                                             *(Column(name, NUMERIC) for name in states)))
        return tables


def _mlp(seed: int):
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return lambda: MLPQ(random_state=seed, device=device)


@dataclass(frozen=True)
class _Learned:
    """What either Q-model path hands on: the mixture, its components' bootstrap (value, cost) replicates
    (components, bootstrap, 2), the pacing grid, the one-step reward models (for the two-stage allocator), the
    table's shape and where its days are."""

    mixed: MixedPolicy
    replicates: np.ndarray
    paced: PacedPolicy
    one_step_reward: tuple
    actions: list
    horizon: int
    budget: float
    day_tables: list | None  # per day, the transitions as Dask frames (None: in memory)
    frame: pd.DataFrame | None  # the transitions in memory (MLP path)
    comparison: HoldoutComparison | None = None  # with model_name: challenger and champion on held-out users
    champion: DeployedMixed | None = None


def _level_summary(chunk: pd.DataFrame) -> tuple[pd.DataFrame, frozenset]:
    """Per action label: rows with a response and their summed cost; and the days in the chunk."""
    rewarded = chunk["reward"].to_numpy(dtype=float) > 0
    summary = pd.DataFrame({"action": chunk["action"].astype(str).to_numpy(), "responses": rewarded.astype(np.int64),
                            "cost": np.where(rewarded, chunk["cost"].to_numpy(dtype=float), 0.0)})
    return summary.groupby("action").sum(), frozenset(chunk["day"].astype(np.int64).unique().tolist())


def _merge_levels(left: tuple, right: tuple) -> tuple[pd.DataFrame, frozenset]:
    return left[0].add(right[0], fill_value=0), left[1] | right[1]


def _weighted(config: ConstrainedRLConfig, has_propensity: bool) -> bool:
    weighted = config.importance_weighting == "on" or (config.importance_weighting == "auto" and has_propensity)
    if weighted and not has_propensity:
        raise InputError("propensity: importance_weighting on needs a propensity column in the transitions")
    return weighted


def _users_side(frame: pd.DataFrame, share: float, salt: str, held: bool) -> pd.DataFrame:
    """The rows of the held-out users (`held`) or of the others."""
    return frame[in_holdout(frame["user_id"].to_numpy(), share, salt) == held]


def _ridge_on_partitions(table, config: ConstrainedRLConfig, weighted: bool, seed: int, state_columns: list[str],
                         holdout_salt: str) -> _Learned:
    """Ridge FQI/FQE from sufficient statistics: one pass for the levels, one for the Gram matrices, then each oracle
    call reads the table one day at a time (`day_tables`: a parquet table written one day per file is read once per
    sweep); bootstrap replicates weight whole episodes. With `model_name`, learned on the training users and
    compared with the champion on the held-out ones."""
    levels, days = run_statistic(StatisticOf(_level_summary, _merge_levels), table,
                                 columns=["day", "action", "reward", "cost"])
    redeemed = {str(level): (int(row.responses), float(row.cost)) for level, row in levels.iterrows()}
    actions = list(face_values_of_counts(redeemed, config.level_costs))
    horizon = _checked_horizon(config, max(days) + 1)
    # a partition per row group (build-transitions writes 2^18 users per group); a day held in one row group is
    # split so that each pass keeps every core busy
    days = [day.repartition(npartitions=max(day.npartitions, os.cpu_count() or 1))
            for day in day_tables(config.transitions, table, "day", range(horizon), by_row_group=True)]
    champion, held, learn_on = None, None, days
    if config.model_name is not None:  # learn on the training users, compare on the held-out ones
        champion = deployed_mixed(config.model_name, config.alias, actions, state_columns)
        learn_on, held_out = ([day.map_partitions(_users_side, config.holdout_share, holdout_salt, side,
                                                  meta=day._meta) for day in days] for side in (False, True))
        held = ridge_sweeps([Partitions(day) for day in held_out], actions=actions, importance_weighted=weighted)
    sweeps = ridge_sweeps([Partitions(day) for day in learn_on], actions=actions, importance_weighted=weighted)
    users = sweeps.episodes + (held.episodes if held is not None else 0)
    budget = config.budget / users if config.budget is not None else config.budget_per_user
    mixed = _mixture(sweeps, budget, config, oracle_many=sweeps.best_responses,
                     first=[(-1.0, m) for m in (*_grid(config), STOP_MULTIPLIER)])
    replicates = sweeps.replicates(mixed.components, n_bootstrap=config.bootstrap, random_state=seed)
    reward_models, cost_models = sweeps.one_step()
    paced = paced_policy(lambda ms: sweeps.evaluated_many([(1.0, -m) for m in ms]), cost_models,
                         multipliers=_grid(config), safety=config.safety)
    comparison = None
    if held is not None:
        policies = [*mixed.components, *(champion.fitted.mixed.components if champion else ())]
        logged = dask.compute(*[day[["reward", "cost"]].sum() for day in held_out])
        comparison = HoldoutComparison.of(
            mixed.weights, held.evaluate_many(policies),
            held.replicates(policies, n_bootstrap=config.bootstrap, random_state=seed),
            champion.fitted.mixed.weights if champion else np.zeros(0), held.episodes,
            tuple(float(sum(day[key] for day in logged)) / held.episodes for key in ("reward", "cost")))
    return _Learned(mixed, replicates, paced, reward_models, actions, horizon, budget, days, None, comparison,
                    champion)


def _mlp_in_memory(frame: pd.DataFrame, config: ConstrainedRLConfig, weighted: bool, seed: int) -> _Learned:
    """Torch MLP Q-functions on the table read into memory; bootstrap over users by resampling whole episodes."""
    horizon = _checked_horizon(config, int(frame["day"].max()) + 1)
    actions = list(face_values(frame, config.level_costs, column="action"))
    data = Transitions.from_frame(frame, actions, horizon)
    budget = config.budget / frame["user_id"].nunique() if config.budget is not None else config.budget_per_user
    regressor = _mlp(seed)
    oracle = fqe_oracle(data, regressor=regressor, importance_weighted=weighted)
    mixed = _mixture(oracle, budget, config)
    replicates = [fqe_with_intervals(data, policy, regressor=regressor, importance_weighted=weighted,
                                     n_bootstrap=config.bootstrap, random_state=seed + i).replicates
                  for i, policy in enumerate(mixed.components)]
    reward_models, cost_models = one_step_models(data, regressor=regressor, importance_weighted=weighted)
    paced = paced_policy(lambda ms: [evaluated_policy(data, 1.0, -m, regressor=regressor,
                                                      importance_weighted=weighted) for m in ms],
                         cost_models, multipliers=_grid(config), safety=config.safety)
    return _Learned(mixed, np.asarray(replicates), paced, reward_models, actions, horizon, budget, None,
                    frame)


def _checked_horizon(config: ConstrainedRLConfig, horizon: int) -> int:
    if config.decisions is not None and config.decision_day >= horizon:
        raise InputError(f"decision_day: {config.decision_day} is past the campaign's last day ({horizon - 1}); the "
                         f"policy has Q-functions for days 0..{horizon - 1}")
    return horizon


def _check_states(config: ConstrainedRLConfig, state_columns: list[str]) -> None:
    """Decision-time states must have exactly the model's state columns (before any work)."""
    if config.states is None:
        return
    given = [name for name in _column_names(config.states) if name.startswith(STATE_PREFIX)]
    missing = [name for name in state_columns if name not in given]
    extra = [name for name in given if name not in state_columns]
    if missing or extra:
        raise InputError(f"states: the columns differ from the model's state: missing {missing[:5]}"
                         f"{' ...' if len(missing) > 5 else ''}, not in the model {extra[:5]}"
                         f"{' ...' if len(extra) > 5 else ''}")


def _decision_states(config: ConstrainedRLConfig, learned: _Learned, state_columns: list[str]) -> dd.DataFrame:
    """user_id and the model's state columns of every user on `decision_day`, as a Dask frame (read block by
    block, never gathered)."""
    columns = ["user_id", *state_columns]
    if config.states is not None:
        return read_table(config.states, config.input_tables()[config.states])[columns]
    if learned.frame is not None:
        return dd.from_pandas(learned.frame.loc[learned.frame["day"] == config.decision_day, columns],
                              chunksize=1 << 18)
    return learned.day_tables[config.decision_day][columns]


@dataclass(frozen=True)
class _BlockDecisions:
    """The decision table of a block of the day's users under the day's plan and cut: user_id, component,
    multiplier, action (the level's label, text), expected_cost."""

    paced: PacedPolicy
    plan: DayPlan
    cut: float
    state_columns: tuple[str, ...]
    actions: tuple
    salt: str

    def __call__(self, block: pd.DataFrame) -> pd.DataFrame:
        users = block["user_id"].to_numpy()
        decision = self.plan.decide(self.paced, users, block[list(self.state_columns)].to_numpy(dtype=float),
                                    self.salt, self.cut)
        table = decision.to_frame(users)
        table["action"] = pd.array(np.asarray(self.actions, dtype=object)[decision.action].astype(str),
                                   dtype="string")
        return table


def _decision_table(config: ConstrainedRLConfig, learned: _Learned, state_columns: list[str], salt: str
                    ) -> tuple[dd.DataFrame, dict]:
    """The paced decision of `decision_day` for every user, block by block (`budget_rl.pacing.decide_in_blocks`:
    the same decisions as for all users at once, at any number of users): the table (user_id, component,
    multiplier, action label, expected_cost; computed when written) and the day's figures."""
    states = _decision_states(config, learned, state_columns)
    plan, cut, figures = decide_in_blocks(learned.paced, Partitions(states), state_columns, config.decision_day,
                                          spent_so_far=config.spent_so_far, budget_per_user=learned.budget,
                                          salt=salt, planned_so_far=config.planned_so_far)
    blocks = _BlockDecisions(learned.paced, plan, cut, tuple(state_columns), tuple(learned.actions), salt)
    meta = blocks(states._meta)
    return states.map_partitions(blocks, meta=meta), figures


def _synthetic_world(context: StageContext, config: ConstrainedRLConfig):
    """(world, users, build-transitions' data) when this job generated a campaign and built these transitions
    from its logs; else None (real data: no truth)."""
    generate, built = context.results.get("generate"), context.results.get("build-transitions")
    if generate is None or built is None or Path(built.data["transitions"]) != Path(config.transitions):
        return None
    truth = generate.data["truth"]
    return truth.world, len(truth.users), built.data


def _truth(world_data, config: ConstrainedRLConfig, learned: _Learned, fitted: FittedMixedPolicy,
           state_columns: list[str], salt: str, seed: int) -> pd.DataFrame:
    """Purchases and spend per user over the campaign when the world runs each policy on its first `truth_users`
    users from a fresh start (`pipelines.synthetic.episodes.rollout`): the paced policy (what the decision tables
    serve), the column-generation mixture as planned, and the two-stage allocator applied day by day with the
    day's share of the budget. One row per policy: value, spend, spend / budget."""
    world, n_campaign, built = world_data
    budget = learned.budget
    myopic = MyopicAllocator(learned.one_step_reward, learned.paced.one_step_cost, budget / learned.horizon)
    planned = [0.0]  # the chunk's summed expected_cost so far (rollout runs a chunk's days in order)

    def paced(ids, states, day, spent):
        planned[0] = 0.0 if day == 0 else planned[0]
        decision = learned.paced.decide(ids, states, day, spent, budget, salt=salt,
                                        planned_so_far=None if day == 0 else planned[0] / len(ids))
        planned[0] += float(decision.expected_cost.sum())
        return decision.action

    policies = {"paced mixed policy": paced,
                "mixed policy as planned": lambda ids, states, day, spent: fitted.mixed.act(ids, states, day,
                                                                                           salt=fitted.salt),
                "two-stage allocator, day by day": lambda ids, states, day, spent: myopic.act(states, day)}
    names = [name.removeprefix(STATE_PREFIX) for name in state_columns]
    rows = []
    for name, decide in policies.items():
        reward, cost = rollout(world, min(config.truth_users, n_campaign), learned.horizon, decide,
                               encoder=built["encoder"], state_names=names, levels=learned.actions,
                               random_state=seed)
        rows.append({"policy": name, "value": float(reward.mean()), "spend": float(cost.mean()),
                     "spend_share": float(cost.mean() / budget) if budget > 0 else float("nan")})
    return pd.DataFrame(rows)


def _mixture(oracle, budget: float, config: ConstrainedRLConfig, *, oracle_many=None, first=()) -> MixedPolicy:
    """Column generation at the budget (batched when the oracle answers many directions in one sweep, starting
    from `first`); a budget below the cheapest policy's spend is refused naming the key."""
    try:
        if oracle_many is not None:
            return maximize_under_budget_batched(oracle_many, [budget], first=first)
        return maximize_under_budget(oracle, [budget])
    except InputError as error:
        if not str(error).startswith("limits: infeasible"):
            raise
        key = "budget" if config.budget is not None else "budget_per_user"
        raise InputError(f"{key}: infeasible: {budget:.6g} per user over the campaign is below what the cheapest "
                         f"policy spends ({str(error).removeprefix('limits: infeasible; ')})") from None


def _fixed_multiplier(paced: PacedPolicy, budget: float) -> dict[str, float]:
    """The single greedy policy of the pacing grid with the highest planned value within the budget (the
    fixed-multiplier baseline, read off the grid): multiplier, planned value and cost per user."""
    grid = paced.to_frame()
    within = grid[grid["cost"] <= budget]
    best = (within.loc[within["value"].idxmax()] if len(within) else grid.loc[grid["cost"].idxmin()])
    return {key: float(best[key]) for key in ("multiplier", "value", "cost")}


def _grid(config: ConstrainedRLConfig) -> tuple[float, ...]:
    """The pacing grid: multiplier 0 (value only), then geometric from 0.004 to 1 (purchases per currency unit);
    the default size is `budget_rl.pacing.DEFAULT_MULTIPLIERS`."""
    return (0.0, *np.geomspace(DEFAULT_MULTIPLIERS[1], DEFAULT_MULTIPLIERS[-1],
                               config.pacing_multipliers - 1).tolist())


def _demo(inputs: DemoInputs) -> dict:
    return {"transitions": str(inputs.out_dir / "transitions"), "out": str(inputs.out_dir / "mixed_policy"),
            "decisions": str(inputs.out_dir / "decisions"), "budget_per_user": 2.0, "bootstrap": 5,
            "truth_users": 100_000}


@register_stage("constrained-rl", ConstrainedRLConfig, order=55, demo=_demo)
def constrained_rl(context: StageContext, config: ConstrainedRLConfig) -> StageResult:
    """Learn a mixed incentive policy for a multi-day campaign from logged transitions, within a budget per user,
    and write the paced decision table of one day."""
    table = read_table(config.transitions, transitions_schema(config.transitions))
    state_columns = [c for c in table.columns if c.startswith(STATE_PREFIX)]
    _check_states(config, state_columns)
    seed = context.stage_seed("constrained-rl")
    weighted = _weighted(config, "propensity" in table.columns)
    if config.q_model == "ridge":
        # the ridge kernels multiply tall, thin matrices inside Dask's threads: BLAS threads on top of those only
        # contend (a sweep at 10^6 users x 14 days: 47.8 s with two, 30.6 s with one; RESULTS.md 6c)
        with single_thread_pools():
            learned = _ridge_on_partitions(table, config, weighted, seed, state_columns, split_salt(context.seed))
    else:
        learned = _mlp_in_memory(table.compute().reset_index(drop=True), config, weighted, seed)
    mixed, actions, horizon, budget = learned.mixed, learned.actions, learned.horizon, learned.budget
    mixture = np.tensordot(mixed.weights, learned.replicates, axes=1)  # (bootstrap, 2)
    low, high = np.percentile(mixture, [2.5, 97.5], axis=0)
    fixed = _fixed_multiplier(learned.paced, budget)
    salt = f"campaign-{context.seed}"
    fitted = FittedMixedPolicy(mixed, actions, state_columns, salt=salt)
    decisions, day_figures = (_decision_table(config, learned, state_columns, salt) if config.decisions is not None
                              else (None, {}))
    world = _synthetic_world(context, config)
    truth = (_truth(world, config, learned, fitted, state_columns, salt, seed) if world is not None
             else pd.DataFrame())
    example = (table[["user_id", "day", *state_columns]].head(5) if learned.frame is None
               else learned.frame[["user_id", "day", *state_columns]].head(5)).reset_index(drop=True)
    with atomic_output(config.out) as temporary, tempfile.TemporaryDirectory() as folder, quiet_pyfunc():
        mlflow.pyfunc.save_model(path=str(temporary), **mixed_policy_arguments(fitted, example, Path(folder)))
    if decisions is not None:
        with atomic_output(config.decisions) as temporary:
            decisions.to_parquet(temporary, write_index=False)
    with tempfile.TemporaryDirectory() as folder, quiet_pyfunc():
        info = mlflow.pyfunc.log_model(name="mixed_policy", **mixed_policy_arguments(fitted, example, Path(folder)))
        for index, policy in enumerate(mixed.components):
            path = Path(folder) / f"component_{index}.pkl"
            path.write_bytes(pickle.dumps(policy))
            mlflow.log_artifact(str(path), artifact_path="components")
        path = Path(folder) / "paced_policy.pkl"
        path.write_bytes(pickle.dumps(learned.paced))
        mlflow.log_artifact(str(path))
    registry = {}
    if learned.comparison is not None:
        registry = register_mixed(info.model_uri, config.model_name, config.alias, learned.comparison,
                                  learned.champion, budget)
        context.log.params({"model_name": config.model_name, "challenger_version": registry["version"],
                            "champion_version": None if learned.champion is None else learned.champion.version,
                            "rule": registry["rule"], "holdout_share": config.holdout_share})
        context.log.metrics({"promoted": float(registry["promoted"]),
                             **{f"holdout.{row.policy}.{key}": float(getattr(row, key))
                                for row in learned.comparison.to_frame().itertuples()
                                for key in ("value", "spend", "ci_low", "ci_high")
                                if np.isfinite(getattr(row, key))}})
        context.log.table(learned.comparison.to_frame(), "promotion", index=False)
    value, spend = mixed.expected
    context.log.params({"actions": ",".join(map(str, actions)), "horizon": horizon, "q_model": config.q_model,
                        "salt": salt,
                        "importance_weighted": weighted, "pacing_multipliers": config.pacing_multipliers,
                        "safety": config.safety})
    context.log.metrics({
        "stored_policies": len(mixed.components), "oracle_calls": mixed.oracle_calls,
        "oracle_rounds": mixed.rounds, "budget_per_user": budget,
        "value": float(value), "spend": float(spend), "value_ci_low": float(low[0]), "value_ci_high": float(high[0]),
        "spend_ci_low": float(low[1]), "spend_ci_high": float(high[1]),
        "fixed_multiplier.value": fixed["value"], "fixed_multiplier.spend": fixed["cost"],
        "fixed_multiplier.multiplier": fixed["multiplier"],
        **{f"decision.{key}": float(figure) for key, figure in day_figures.items()}})
    components = pd.DataFrame({"weight": mixed.weights, "value": mixed.measurements[:, 0],
                               "spend": mixed.measurements[:, 1]})
    context.log.table(components, "components", index=False)
    context.log.table(learned.paced.to_frame(), "pacing_grid", index=False)
    summary = {"stored policies": len(mixed.components), "value": f"{value:.3f}",
               "spend": f"{spend:.3f} (budget {budget:.3f})"}
    outputs = {"mixed_policy": config.out}
    if decisions is not None:
        outputs["decisions"] = config.decisions
        summary["decisions"] = (f"day {config.decision_day}: {day_figures['users']:.0f} users, expected cost "
                                f"{day_figures['expected_cost']:.4g}")
    if registry:
        summary["registry"] = (f"{'promoted' if registry['promoted'] else 'kept'}: {registry['rule']}; "
                               f"{config.alias}: " + (f"{config.model_name} version {registry['champion']}"
                                                      if registry["champion"] else "none yet"))
    if not truth.empty:
        served = truth.iloc[0]
        context.log.metrics({"true_value": float(served["value"]), "true_spend": float(served["spend"]),
                             **{f"truth.{row.policy}.{key}": float(getattr(row, key)) for row in truth.itertuples()
                                for key in ("value", "spend")}})
        context.log.table(truth, "truth", index=False)
        summary["truth"] = "; ".join(f"{row.policy} {row.value:.3f} at {row.spend:.2f} ({row.spend_share:.0%})"
                                     for row in truth.itertuples())
    return StageResult(summary=summary, outputs=outputs,
                       data={"mixed": mixed, "fitted": fitted, "model_uri": info.model_uri, "paced": learned.paced,
                             "registry": registry, "comparison": learned.comparison,
                             "decisions": config.decisions if decisions is not None else None, "truth": truth})
