"""Stage `constrained-rl`: a mixed policy of at most d + 1 offline-learned policies that maximizes long-term value
with the expected spend per user within the budget (docs/constrained_rl.md, 'The mixed policy').

Reads logged transitions (what `campaign generate --transitions-horizon D` writes: user_id, day, action, reward,
cost, propensity, state_*/next_*), learns by column generation over the FQI/FQE oracle (rows weighted by 1 / logged
propensity when the logs have it): ridge Q-functions from sufficient statistics over the table's Dask partitions, one
day at a time (`budget_rl.ridge_statistics`, nothing gathered in memory), or a torch MLP on the table read into memory
(`budget_rl.offline`; on a GPU when one is present). It records in MLflow the
stored-policy count, the mixture's value and spend with bootstrap intervals, the fixed-multiplier policy for
comparison, the component policies as artifacts and the mixed policy as a pyfunc model: `predict(frame with user_id,
day, state_*)` returns each user's component (drawn once per user by a salted hash) and its action label.
"""

from __future__ import annotations

import pickle
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import mlflow
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import torch
from pydantic import Field

from budget_rl.baselines import fixed_multiplier_policy
from budget_rl.mixed import MixedPolicy, Oracle, maximize_under_budget
from budget_rl.offline import MLPQ, Transitions, fqe_oracle, fqe_with_intervals
from budget_rl.ridge_statistics import ridge_sweeps
from campaign_core import StatisticOf
from pipelines.config import ConfigPath, StageConfig
from pipelines.errors import InputError
from pipelines.execution import Partitions, run_statistic
from pipelines.io import atomic_output
from pipelines.models import FittedMixedPolicy, mixed_policy_arguments, quiet_pyfunc
from pipelines.stages.levels import face_values
from pipelines.stages.registry import StageContext, StageResult, register_stage
from pipelines.tables import INTEGER, LABEL, NUMERIC, Column, Schema, csv_files, day_tables, read_table

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

    def input_tables(self) -> dict:
        return {self.transitions: transitions_schema(self.transitions)}


def _mlp(seed: int):
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return lambda: MLPQ(random_state=seed, device=device)


@dataclass(frozen=True)
class _Learned:
    """What either Q-model path hands to the logging: the mixture, its components' bootstrap (value, cost)
    replicates (components, bootstrap, 2), the oracle (for the fixed-multiplier baseline) and the table's shape."""

    mixed: MixedPolicy
    replicates: np.ndarray
    oracle: Oracle
    actions: list
    horizon: int
    budget: float


def _level_summary(chunk: pd.DataFrame) -> tuple[pd.DataFrame, frozenset]:
    """Per action label: rows with a response and their summed cost; and the days in the chunk."""
    rewarded = chunk["reward"].to_numpy(dtype=float) > 0
    summary = pd.DataFrame({"action": chunk["action"].astype(str).to_numpy(), "responses": rewarded.astype(np.int64),
                            "cost": np.where(rewarded, chunk["cost"].to_numpy(dtype=float), 0.0)})
    return summary.groupby("action").sum(), frozenset(chunk["day"].astype(np.int64).unique().tolist())


def _merge_levels(left: tuple, right: tuple) -> tuple[pd.DataFrame, frozenset]:
    return left[0].add(right[0], fill_value=0), left[1] | right[1]


def _face_values(levels: pd.DataFrame, level_costs: dict | None) -> dict[str, float]:
    """`face_values` of the table from its per-level summary: one row per level standing for its mean responded
    cost (levels without a response: cost 0, as `face_values` gives them)."""
    responded = levels["responses"] > 0
    frame = pd.DataFrame({"action": levels.index, "reward": responded.astype(float).to_numpy(),
                          "cost": np.where(responded, levels["cost"] / levels["responses"].clip(lower=1), 0.0)})
    return face_values(frame, level_costs, column="action")


def _weighted(config: ConstrainedRLConfig, has_propensity: bool) -> bool:
    weighted = config.importance_weighting == "on" or (config.importance_weighting == "auto" and has_propensity)
    if weighted and not has_propensity:
        raise InputError("propensity: importance_weighting on needs a propensity column in the transitions")
    return weighted


def _ridge_on_partitions(table, config: ConstrainedRLConfig, weighted: bool, seed: int) -> _Learned:
    """Ridge FQI/FQE from sufficient statistics: one pass for the levels, one for the Gram matrices, then each oracle
    call reads the table one day at a time (`day_tables`: a parquet table written one day per file is read once per
    sweep); bootstrap replicates weight whole episodes."""
    levels, days = run_statistic(StatisticOf(_level_summary, _merge_levels), table,
                                 columns=["day", "action", "reward", "cost"])
    actions = list(_face_values(levels, config.level_costs))
    horizon = max(days) + 1
    sweeps = ridge_sweeps([Partitions(day) for day in day_tables(config.transitions, table, "day", range(horizon))],
                          actions=actions, importance_weighted=weighted)
    budget = config.budget / sweeps.episodes if config.budget is not None else config.budget_per_user
    mixed = maximize_under_budget(sweeps, [budget])
    replicates = sweeps.replicates(mixed.components, n_bootstrap=config.bootstrap, random_state=seed)
    return _Learned(mixed, replicates, sweeps, actions, horizon, budget)


def _mlp_in_memory(frame: pd.DataFrame, config: ConstrainedRLConfig, weighted: bool, seed: int) -> _Learned:
    """Torch MLP Q-functions on the table read into memory; bootstrap over users by resampling whole episodes."""
    horizon = int(frame["day"].max()) + 1
    actions = list(face_values(frame, config.level_costs, column="action"))
    data = Transitions.from_frame(frame, actions, horizon)
    budget = config.budget / frame["user_id"].nunique() if config.budget is not None else config.budget_per_user
    regressor = _mlp(seed)
    oracle = fqe_oracle(data, regressor=regressor, importance_weighted=weighted)
    mixed = maximize_under_budget(oracle, [budget])
    replicates = [fqe_with_intervals(data, policy, regressor=regressor, importance_weighted=weighted,
                                     n_bootstrap=config.bootstrap, random_state=seed + i).replicates
                  for i, policy in enumerate(mixed.components)]
    return _Learned(mixed, np.asarray(replicates), oracle, actions, horizon, budget)


@register_stage("constrained-rl", ConstrainedRLConfig, order=55)
def constrained_rl(context: StageContext, config: ConstrainedRLConfig) -> StageResult:
    """Learn a mixed incentive policy for a multi-day campaign from logged transitions, within a budget per user."""
    table = read_table(config.transitions, transitions_schema(config.transitions))
    seed = context.stage_seed("constrained-rl")
    weighted = _weighted(config, "propensity" in table.columns)
    if config.q_model == "ridge":
        learned = _ridge_on_partitions(table, config, weighted, seed)
    else:
        learned = _mlp_in_memory(table.compute().reset_index(drop=True), config, weighted, seed)
    mixed, oracle, actions, horizon, budget = (learned.mixed, learned.oracle, learned.actions, learned.horizon,
                                               learned.budget)
    mixture = np.tensordot(mixed.weights, learned.replicates, axes=1)  # (bootstrap, 2)
    low, high = np.percentile(mixture, [2.5, 97.5], axis=0)
    fixed = fixed_multiplier_policy(oracle, budget, steps=20)
    state_columns = [c for c in table.columns if c.startswith("state_")]
    fitted = FittedMixedPolicy(mixed, actions, state_columns, salt=f"campaign-{context.seed}")
    example = table[["user_id", "day", *state_columns]].head(5).reset_index(drop=True)
    with atomic_output(config.out) as temporary, tempfile.TemporaryDirectory() as folder, quiet_pyfunc():
        mlflow.pyfunc.save_model(path=str(temporary), **mixed_policy_arguments(fitted, example, Path(folder)))
    with tempfile.TemporaryDirectory() as folder, quiet_pyfunc():
        info = mlflow.pyfunc.log_model(name="mixed_policy", **mixed_policy_arguments(fitted, example, Path(folder)))
        for index, policy in enumerate(mixed.components):
            path = Path(folder) / f"component_{index}.pkl"
            path.write_bytes(pickle.dumps(policy))
            mlflow.log_artifact(str(path), artifact_path="components")
    value, spend = mixed.expected
    context.log.params({"actions": ",".join(map(str, actions)), "horizon": horizon, "q_model": config.q_model,
                        "importance_weighted": weighted})
    context.log.metrics({
        "stored_policies": len(mixed.components), "oracle_calls": mixed.oracle_calls, "budget_per_user": budget,
        "value": float(value), "spend": float(spend), "value_ci_low": float(low[0]), "value_ci_high": float(high[0]),
        "spend_ci_low": float(low[1]), "spend_ci_high": float(high[1]),
        "fixed_multiplier.value": float(fixed.measurement[0]), "fixed_multiplier.spend": float(fixed.measurement[1]),
        "fixed_multiplier.multiplier": fixed.multiplier})
    components = pd.DataFrame({"weight": mixed.weights, "value": mixed.measurements[:, 0],
                               "spend": mixed.measurements[:, 1]})
    context.log.table(components, "components", index=False)
    return StageResult(summary={"stored policies": len(mixed.components), "value": f"{value:.3f}",
                                "spend": f"{spend:.3f} (budget {budget:.3f})"},
                       outputs={"mixed_policy": config.out},
                       data={"mixed": mixed, "fitted": fitted, "model_uri": info.model_uri})
