"""Scoring a stage's results against the ground truth of a synthetic campaign: the one place where the truth meets
the production stages.

The job runner calls `score_against_truth` after every stage. A stage's hook runs only when the stage's inputs came
from `campaign generate` (they lie in a folder with `campaign.json` and `truth/`, in this job or an earlier one) or,
for the readout, from `simulate-outcomes` in the same job; the stages themselves never read the truth. What a hook
measures goes to the stage's MLflow run (metrics, a `truth_*` table) and its summary line:

| stage | measured against the truth |
|---|---|
| select-features | how many selected features are true modifiers, prognostic features or noise |
| evaluate-policy | the policy's true value on the evaluated rows, each estimator's error and interval coverage |
| allocate | the allocation's true value and spend under the true response |
| assign | the share of the hidden interaction weight the clusters cut |
| readout | the true global and direct effects and each estimator's error |
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import abtest
from pipelines.execution import OnRows, run_statistic
from pipelines.synthetic.generate import CampaignPaths
from pipelines.tables import read_row_aligned


@dataclass(frozen=True)
class TruthScore:
    """What a stage's results are worth under the truth: metrics, summary entries and tables."""

    metrics: dict[str, float]
    summary: dict[str, str] = field(default_factory=dict)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)


Hook = Callable[[Any, Any, dict], TruthScore | None]
_HOOKS: dict[str, Hook] = {}


def truth_hook(stage: str) -> Callable[[Hook], Hook]:
    """Register the function that scores `stage`'s results: (config, result, earlier results) -> TruthScore."""
    def decorator(function: Hook) -> Hook:
        _HOOKS[stage] = function
        return function

    return decorator


def score_against_truth(stage: str, config: Any, result: Any, results: dict) -> TruthScore | None:
    """The stage's score against the truth, or None when it has no hook or its inputs are not synthetic."""
    hook = _HOOKS.get(stage)
    return None if hook is None else hook(config, result, results)


def generated_campaign(table: Path | str | None) -> CampaignPaths | None:
    """The generated campaign a table (or the campaign folder itself) belongs to: the nearest folder with
    campaign.json and truth/, or None."""
    if table is None:
        return None
    path = Path(table).resolve()
    for folder in (path, *path.parents):
        if (folder / "campaign.json").is_file() and (folder / "truth").is_dir():
            return CampaignPaths(folder)
    return None


# ---------------------------------------------------------------------------- select-features
@truth_hook("select-features")
def _feature_roles(config: Any, result: Any, results: dict) -> TruthScore | None:
    campaign = generated_campaign(config.logs)
    if campaign is None:
        return None
    roles = pd.read_parquet(campaign.features).set_index("feature")["role"]
    scores = result.data["scores"]
    table = pd.DataFrame({"rank": scores["rank"], "selected": scores["selected"],
                          "true_role": roles.reindex(scores.index).fillna("unknown")})
    metrics = {f"selected_{role}s": int((table["selected"] & (table["true_role"] == role)).sum())
               for role in ("modifier", "prognostic", "noise")}
    summary = {"selected modifiers": f"{metrics['selected_modifiers']} of {int((roles == 'modifier').sum())}"}
    return TruthScore(metrics, summary, {"truth_feature_roles": table})


# ---------------------------------------------------------------------------- evaluate-policy
@dataclass(frozen=True)
class _TrueValue:
    """Sum over logged rows of the target's expected reward under the truth, sum_a pi(a|x) mu(x, a), and the rows."""

    fitted: Any
    truth_columns: tuple[str, ...]

    def partial(self, chunks: tuple[pd.DataFrame, pd.DataFrame]) -> np.ndarray:
        logs, truth = chunks
        if len(logs) == 0:
            return np.zeros(2)
        target = self.fitted.probabilities(logs)
        mu = truth[list(self.truth_columns)].to_numpy(dtype=np.float64)
        return np.array([(target * mu).sum(), len(logs)])

    @staticmethod
    def merge(left: np.ndarray, right: np.ndarray) -> np.ndarray:
        return left + right

    @staticmethod
    def finalize(state: np.ndarray) -> float:
        return float(state[0] / state[1]) if state[1] else float("nan")


@dataclass(frozen=True)
class _AlignedRows:
    """The rows of a user split in both of two row-aligned chunks."""

    split: Any

    def __call__(self, chunks: tuple[pd.DataFrame, pd.DataFrame]) -> tuple[pd.DataFrame, pd.DataFrame]:
        logs, truth = chunks
        keep = self.split.mask(logs)
        return logs[keep], truth[keep]


@truth_hook("evaluate-policy")
def _policy_value(config: Any, result: Any, results: dict) -> TruthScore | None:
    campaign = generated_campaign(result.data["logs"])
    if campaign is None:
        return None
    fitted, split = result.data["fitted"], result.data["split"]
    truth_columns = tuple(f"mu_{arm}" for arm in fitted.arms)
    columns = list(dict.fromkeys([*split.columns, *fitted.features]))
    aligned = read_row_aligned([result.data["logs"], campaign.truth_logs], [columns, list(truth_columns)])
    true_value = run_statistic(OnRows(_TrueValue(fitted, truth_columns), _AlignedRows(split)), aligned)
    estimates = result.data["estimates"]
    table = estimates[["estimator", "value", "se", "ci_low", "ci_high"]].assign(true_value=true_value)
    table["error"] = table["value"] - true_value
    table["covers_truth"] = (table["ci_low"] <= true_value) & (true_value <= table["ci_high"])
    metrics = {"true_value": true_value, "intervals_covering_truth": int(table["covers_truth"].sum())}
    metrics |= {f"{row.estimator}.error": float(row.error) for row in table.itertuples()}
    return TruthScore(metrics, {"true value": f"{true_value:.4f}"}, {"truth_policy_value": table})


# ---------------------------------------------------------------------------- allocate
@truth_hook("allocate")
def _allocation_outcome(config: Any, result: Any, results: dict) -> TruthScore | None:
    campaign = generated_campaign(config.users)
    if campaign is None or config.scores:
        return None
    levels: dict[str, float] = result.data["levels"]
    allocation = pd.read_parquet(config.out, columns=["user_id", "level"])
    truth = pd.read_parquet(campaign.truth_users, columns=["user_id", *[f"p0_{level}" for level in levels]])
    merged = allocation.merge(truth, on="user_id", how="left")
    codes = pd.Categorical(merged["level"], categories=list(levels)).codes
    p0 = merged[[f"p0_{level}" for level in levels]].to_numpy()[np.arange(len(merged)), codes]
    faces = np.asarray(list(levels.values()))[codes]
    metrics = {"true_value": float(config.value_per_response * p0.sum()), "true_spend": float((faces * p0).sum())}
    return TruthScore(metrics, {"true value": f"{metrics['true_value']:,.1f}"})


# ---------------------------------------------------------------------------- assign
@truth_hook("assign")
def _hidden_cut(config: Any, result: Any, results: dict) -> TruthScore | None:
    campaign = generated_campaign(config.edges)
    if campaign is None or not campaign.interactions.exists():
        return None
    user_ids = result.data["graph_user_ids"]
    hidden = abtest.build_graph(pd.read_parquet(campaign.interactions), user_ids, unknown_users="drop")
    cluster = result.data["assignment"].set_index("user_id")["cluster"].reindex(user_ids).to_numpy()
    cut = cluster[hidden.src] != cluster[hidden.dst]
    share = float(hidden.weight[cut].sum() / max(hidden.weight.sum(), 1e-300))
    return TruthScore({"true_interaction_cut_share": share}, {"hidden cut share": f"{share:.1%}"})


# ---------------------------------------------------------------------------- readout
@truth_hook("readout")
def _experiment_effects(config: Any, result: Any, results: dict) -> TruthScore | None:
    simulated = results.get("simulate-outcomes")
    if simulated is None or Path(simulated.outputs["outcomes"]).resolve() != Path(config.outcomes).resolve():
        return None
    truth = {"true_global_effect": simulated.data["global_effect"],
             "true_direct_effect": simulated.data["direct_effect"]}
    metrics = dict(truth)
    for effect in result.data["readout"].effects:
        if np.isfinite(effect.estimate):
            metrics[f"{effect.estimator}.error"] = effect.estimate - truth["true_global_effect"]
    return TruthScore(metrics, {"true global effect": f"{truth['true_global_effect']:.4g}"})
