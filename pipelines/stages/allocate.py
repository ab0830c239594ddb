"""Stage `allocate`: the two-stage budget allocator. Response model on the logs, then the dual LP over all users.

1. Response model (unless `scores` gives value_<level>/cost_<level> per user already): on a seeded sample of the
   decision log, P(purchase | features, level) by gradient boosting, plain or debiased with the randomized slice
   (`budget_rl.response`). Half of the randomized users (by a hash of user_id) are held out of both fits; on their
   rows both models are scored (log-loss, calibration), so the choice is visible in every run. The plain model
   allocates by default: in RESULTS.md section 5c the debiased one was better calibrated but its allocations were
   worth 0.987-1.011 of the plain model's (median 0.998).
2. Scores: for every user in `users`, value_ij = value_per_response * p_ij and cost_ij = face value_j * p_ij (a
   coupon is paid only when redeemed). Face values are read off the log (cost of redeemed rows per arm) unless
   `level_costs` gives them; history features (`recent_purchases`) are set to 0: a fresh campaign.
3. Allocation: `pipelines.allocation.allocate_frame` (dual map-reduce; the LP for the constraints only it handles)
   writes the per-user allocation; the frontier, its plot, the multiplier and the spend go to MLflow.

Multi-day campaigns with long-term effects have their own stage, `constrained-rl`.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import dask.dataframe as dd
import numpy as np
import pandas as pd
from pydantic import Field

from budget_rl import AllocationConstraints, frontier_figure
from budget_rl.evaluation import response_metrics
from budget_rl.pacing import daily_budget, spend_calibration
from budget_rl.response import DebiasedResponseModel, ResponseModel
from campaign_core import seeded_salt
from campaign_core.parallel import single_thread_pools
from pipelines.allocation import allocate_frame
from pipelines.config import ConfigPath, StageConfig
from pipelines.errors import InputError
from pipelines.stages.levels import face_values
from pipelines.stages.registry import DemoInputs, StageContext, StageResult, register_stage
from pipelines.tables import INTEGER, Column, Schema, log_schema, read_table
from pipelines.user_split import in_holdout

#: Columns of the users table that are never response-model features.
NOT_FEATURES = ["user_id", "segment"]
#: The users table as the allocator needs it: integer ids (they break ties between users by a salted hash).
USERS = Schema("users", required=(Column("user_id", INTEGER),))


class AllocateConfig(StageConfig):
    users: ConfigPath = Field(description="users table (parquet): user_id, features, segment; or, with `scores`, "
                                          "value_<level> and cost_<level> columns")
    out: ConfigPath = Field(description="per-user allocation (parquet folder): user_id, segment, level, "
                                        "upper_level, upper_share, value, cost")
    logs: ConfigPath | None = Field(None, description="decision log to fit the response model on (parquet)")
    scores: bool = Field(False, description="`users` already holds value_<level> and cost_<level> (no model)")
    response_model: Literal["plain", "debiased"] = Field("plain", description="which model allocates (both are "
                                                                              "fitted and scored on the hold-out)")
    features: list[str] | None = Field(None, description="model features (none: every users-table column that "
                                                         "the log also has)")
    history_features: list[str] = Field(["recent_purchases"], description="log columns of recent history: used "
                                                                          "in training, 0 when scoring users")
    level_costs: dict[str, float] | None = Field(None, description="level -> face value paid on a response "
                                                                   "(none: read off the log's cost column)")
    value_per_response: float = Field(1.0, gt=0, description="value of one response (e.g. margin)")
    budget: float | None = Field(None, ge=0, description="total budget in cost units (none: budget_per_user x "
                                                         "users)")
    budget_per_user: float = Field(1.0, ge=0, description="budget per user when `budget` is none")
    campaign_budget: float | None = Field(None, ge=0, description="a daily job's budget for the whole campaign in "
                                                                  "cost units: today's budget is re-solved from it "
                                                                  "(budget_rl.pacing.daily_budget; none: `budget`)")
    days: int | None = Field(None, ge=1, description="campaign days, with campaign_budget")
    day: int = Field(0, ge=0, description="today's campaign day (0: the first), with campaign_budget")
    spent_so_far: float = Field(0.0, ge=0, description="realised spend of the days run, cost units")
    planned_so_far: float | None = Field(None, ge=0, description="summed planned spend of the days run (the "
                                                                  "earlier allocations' spend; none: no calibration)")
    spent_by_day: list[float] | None = Field(None, description="realised spend of each day run (instead of "
                                                               "spent_so_far and planned_so_far), cost units")
    planned_by_day: list[float] | None = Field(None, description="planned spend of each day run, beside "
                                                                 "spent_by_day")
    calibration: Literal["total", "trend"] = Field(
        "total", description="realised over planned spend expected today: of the totals so far, or the trend of "
                             "the daily ratios (spend_calibration; needs spent_by_day and planned_by_day)")
    safety: float = Field(0.005, ge=0, lt=1, description="share of the campaign budget held back, with "
                                                        "campaign_budget")
    method: Literal["dual", "lp"] = Field("dual", description="dual (any size) or the cvxpy LP (in memory)")
    segment: str | None = Field("segment", description="segment column (none: no segments)")
    segment_caps: dict[str, float] = Field({}, description="segment -> spend cap")
    min_treated_share: float = Field(0.0, ge=0, le=1, description="least share of users given a level (LP)")
    level_inventory: dict[str, float] = Field({}, description="level -> most users given it (LP)")
    max_training_rows: int = Field(200_000, ge=1000, description="log rows sampled to fit the response model")
    max_iter: int = Field(100, ge=1, description="boosting iterations of the response model")

    retired_keys: ClassVar[dict[str, str]] = {
        "data": "the decision log is `logs`",
        "transitions": "multi-day allocation is its own stage, `constrained-rl`",
        "q_model": "multi-day allocation is its own stage, `constrained-rl`",
        "bootstrap": "multi-day allocation is its own stage, `constrained-rl`",
        "importance_weighting": "multi-day allocation is its own stage, `constrained-rl`",
        "truth": "synthetic campaigns are scored against their truth automatically"}

    def log_schema(self) -> Schema:
        return log_schema({"user_id": "user_id", "arm": "arm", "reward": "reward", "cost": "cost"},
                          {"randomized": "randomized"})

    def check_ready(self) -> None:
        """A campaign budget comes with its days, today within them, and no `budget` beside it."""
        if self.campaign_budget is None:
            return
        if self.budget is not None:
            raise InputError("budget: set budget (today's) or campaign_budget (the campaign's), not both")
        if self.days is None:
            raise InputError("days: campaign_budget needs the campaign's days")
        if self.day >= self.days:
            raise InputError(f"day: {self.day} is past the campaign's last day ({self.days - 1})")
        by_day = (self.spent_by_day, self.planned_by_day)
        if (by_day[0] is None) != (by_day[1] is None):
            raise InputError("spent_by_day, planned_by_day: give both, one figure per day run")
        if by_day[0] is not None:
            if self.spent_so_far or self.planned_so_far is not None:
                raise InputError("spent_by_day: give the days' figures or the totals (spent_so_far, "
                                 "planned_so_far), not both")
            if not len(by_day[0]) == len(by_day[1]) == self.day:
                raise InputError(f"spent_by_day, planned_by_day: need one figure per day run ({self.day} before day "
                                 f"{self.day}), got {len(by_day[0])} and {len(by_day[1])}")
            spend_calibration(*by_day)  # refuses negative or missing figures before any work
        elif self.calibration == "trend":
            raise InputError("calibration: 'trend' needs spent_by_day and planned_by_day")

    def input_tables(self) -> dict:
        tables = {self.users: USERS}
        if self.logs is not None and not self.scores:
            tables[self.logs] = self.log_schema()
        return tables


def _demo(inputs: DemoInputs) -> dict:
    return {"users": str(inputs.campaign_dir / "users"), "logs": str(inputs.campaign_dir / "logs"),
            "out": str(inputs.out_dir / "allocation")}


def _features(config: AllocateConfig, users: dd.DataFrame, logs: dd.DataFrame) -> list[str]:
    if config.features:
        missing = [f for f in config.features if f not in users.columns or f not in logs.columns]
        if missing:
            raise InputError(f"features: not in both the users table and the log: {missing}")
        return list(config.features)
    return [c for c in users.columns if c not in NOT_FEATURES and c != config.segment and c in logs.columns]


class _Scorer:
    """Turns a users partition into user_id, segment, value_<level>, cost_<level> (picklable for the workers)."""

    def __init__(self, model, features: list[str], history: list[str], levels: dict[str, float],
                 config: AllocateConfig):
        self.model, self.features, self.history, self.levels, self.config = model, features, history, levels, config

    def __call__(self, partition: pd.DataFrame) -> pd.DataFrame:
        frame = partition[self.features].reset_index(drop=True).assign(**{name: 0 for name in self.history})
        # One OpenMP thread per task: the Dask workers are the parallelism (nested threads thrash on few cores).
        with single_thread_pools():
            response = self.model.predict_proba(frame) if len(frame) else np.zeros((0, len(self.levels)))
        scores = pd.DataFrame({"user_id": partition["user_id"].to_numpy()})
        if self.config.segment:
            scores["segment"] = partition[self.config.segment].astype(str).to_numpy()
        for j, (level, face) in enumerate(self.levels.items()):
            scores[f"value_{level}"] = self.config.value_per_response * response[:, j]
            scores[f"cost_{level}"] = face * response[:, j]
        return scores


def _fit_models(config: AllocateConfig, sample: pd.DataFrame, features: list[str], levels: dict[str, float],
                seed: int) -> tuple[dict, pd.DataFrame]:
    """Fit the plain and (with a randomized slice) the debiased model; metrics on the randomized hold-out."""
    codes = pd.Categorical(sample["arm"].astype(str), categories=list(levels)).codes.astype(np.int64)
    reward = (sample["reward"].to_numpy() > 0).astype(float)
    X = sample[features].reset_index(drop=True)
    randomized = sample["randomized"].to_numpy(dtype=bool) if "randomized" in sample else np.zeros(len(X), bool)
    evaluation = randomized & in_holdout(sample["user_id"].to_numpy(), 0.5, seeded_salt("response-holdout", seed))
    train = ~evaluation
    models = {"plain": ResponseModel(max_iter=config.max_iter, random_state=seed).fit(
        X[train], codes[train], reward[train], n_levels=len(levels))}
    if (randomized & train).sum() >= 20 * len(levels):
        models["debiased"] = DebiasedResponseModel(max_iter=config.max_iter, random_state=seed).fit(
            X[train], codes[train], reward[train], randomized[train], n_levels=len(levels))
    elif config.response_model == "debiased":
        raise InputError(f"response_model: debiased needs a randomized slice (column `randomized`) with at least "
                         f"{20 * len(levels)} rows in the sample; got {int((randomized & train).sum())}")
    rows = [{"model": name, "rows": int(evaluation.sum()),
             **response_metrics(model.predict_at(X[evaluation], codes[evaluation]), reward[evaluation],
                                codes[evaluation], len(levels))}
            for name, model in models.items()] if evaluation.sum() >= 50 else []
    return models, pd.DataFrame(rows)


def _spent_so_far(config: AllocateConfig) -> float:
    return config.spent_so_far if config.spent_by_day is None else float(sum(config.spent_by_day))


def _todays_budget(config: AllocateConfig, n_users: int) -> float:
    """`budget`, else `budget_per_user` x users, else (with `campaign_budget`) today's share re-solved from the
    campaign's realised spend so far and the days left."""
    if config.campaign_budget is None:
        return config.budget if config.budget is not None else config.budget_per_user * n_users
    if config.spent_by_day is None:
        return daily_budget(config.campaign_budget, config.spent_so_far, config.day, config.days,
                            planned_so_far=config.planned_so_far, safety=config.safety)
    spent, planned = config.spent_by_day, config.planned_by_day
    trend = spend_calibration(spent, planned) if config.calibration == "trend" else None
    return daily_budget(config.campaign_budget, sum(spent), config.day, config.days, planned_so_far=sum(planned),
                        safety=config.safety, calibration=trend)


@register_stage("allocate", AllocateConfig, order=50, demo=_demo)
def allocate_stage(context: StageContext, config: AllocateConfig) -> StageResult:
    """Allocate incentive levels to users under a budget: response model, then the dual LP (frontier to MLflow)."""
    seed = context.stage_seed("allocate")
    users = read_table(config.users, USERS)
    if config.segment and config.segment not in users.columns:
        if config.segment_caps:
            raise InputError(f"segment: column {config.segment!r} is not in {config.users}")
        config = config.model_copy(update={"segment": None})
    metrics_table = pd.DataFrame()
    if config.scores:
        levels = {column.removeprefix("value_"): np.nan for column in users.columns if column.startswith("value_")}
        missing = [f"cost_{level}" for level in levels if f"cost_{level}" not in users.columns]
        if not levels or missing:
            raise InputError(f"users: scores need value_<level> and cost_<level> columns; missing "
                             f"{missing or ['value_*']}")
        scores = users
    else:
        if config.logs is None:
            raise InputError("logs: the decision log is needed to fit the response model (or set scores: true)")
        logs = read_table(config.logs, config.log_schema())
        features = _features(config, users, logs)
        history = [name for name in config.history_features if name in logs.columns]
        if not features:
            raise InputError(f"features: no column is in both {config.users} and {config.logs}")
        extra = ["randomized"] if "randomized" in logs.columns else []
        n_rows = int(logs.shape[0].compute())
        sample = logs[list(dict.fromkeys(["user_id", "arm", "reward", "cost", *extra, *features, *history]))]
        sample = sample.sample(frac=min(1.0, config.max_training_rows / n_rows), random_state=seed).compute()
        levels = face_values(sample, config.level_costs, column="arm")
        models, metrics_table = _fit_models(config, sample, [*features, *history], levels, seed)
        model = models[config.response_model]
        scorer = _Scorer(model, features, history, levels, config)
        scores = users.map_partitions(scorer, meta=scorer(users._meta)).persist()
        context.log.params({"levels": ",".join(levels), "level_face_values": ",".join(f"{v:g}" for v in
                                                                                         levels.values()),
                            "model_features": ",".join([*features, *history]), "training_rows": len(sample)})
    level_names = list(levels)
    n_users = int(scores.shape[0].compute())
    budget = _todays_budget(config, n_users)
    unknown_inventory = [level for level in config.level_inventory if level not in level_names]
    if unknown_inventory:
        raise InputError(f"level_inventory: unknown level(s) {unknown_inventory} (levels are {level_names})")
    constraints = AllocationConstraints(
        segment_caps=config.segment_caps, min_treated_share=config.min_treated_share,
        level_inventory={level_names.index(level): count for level, count in config.level_inventory.items()})
    allocation = allocate_frame(scores, [f"value_{level}" for level in level_names],
                                [f"cost_{level}" for level in level_names], budget, level_labels=level_names,
                                segment=config.segment, constraints=constraints, method=config.method, out=config.out)

    metrics = {"users": n_users, "budget": budget, "value": allocation.value, "spend": allocation.spend,
               "integral_value": allocation.integral_value, "integral_spend": allocation.integral_spend,
               "budget_multiplier": allocation.budget_multiplier, "fractional_users": len(allocation.fractional)}
    metrics |= {f"segment_multiplier.{label}": price for label, price in allocation.segment_multipliers.items()}
    metrics |= {f"{key}": value for key, value in allocation.diagnostics.items() if isinstance(value, int | float)}
    for _, row in metrics_table.iterrows():
        metrics |= {f"{row['model']}.{key}": float(row[key]) for key in ("log_loss", "brier", "ece")}
    context.log.metrics(metrics)
    if allocation.frontier is not None:
        context.log.table(allocation.frontier, "frontier", index=False)
        context.log.figure(frontier_figure(allocation.frontier, allocation, value_label="expected responses",
                                           spend_label="expected spend"), "frontier")
    if not metrics_table.empty:
        context.log.table(metrics_table, "response_models", index=False)
    if config.campaign_budget is not None:
        context.log.metrics({"campaign_budget": config.campaign_budget, "spent_so_far": _spent_so_far(config),
                             "days_left": config.days - config.day})
    paced = ""
    if config.campaign_budget is not None:
        spent = "; the campaign budget is spent, nobody is paid" if budget == 0 else ""
        paced = (f" (day {config.day} of {config.days}: re-solved from {_spent_so_far(config):,.0f} spent of "
                 f"{config.campaign_budget:,.0f}{spent})")
    summary = {"budget": f"{budget:,.0f}{paced}", "spend": f"{allocation.spend:,.0f}",
               "value": f"{allocation.value:,.1f}", "multiplier": f"{allocation.budget_multiplier:.4g}"}
    return StageResult(summary=summary, outputs={"allocation": config.out},
                       data={"allocation": allocation, "levels": levels, "response_models": metrics_table})
