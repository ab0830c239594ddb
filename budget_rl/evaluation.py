"""How good is a response model for allocation: fit on randomized hold-out rows, and value under the true response.

- `response_metrics`: log-loss, Brier score, expected calibration error (10 equal-width bins) and the calibration
  gap per level (mean predicted minus mean observed), on rows where the level was assigned at random, so that the
  comparison is free of the logging policy's bias.
- `value_at_true_spend`: allocate by a model's predicted (value, cost) and score the allocation under the true
  ones, at the multiplier whose *true* spend meets a target; comparing models at equal true spend is the fair way
  to ask which one puts the money where it works.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

_EPS = 1e-12


def response_metrics(predicted, response, level, n_levels: int) -> dict[str, float]:
    """Fit of predicted probabilities (each row at its own level) to 0/1 responses: log_loss, brier, ece,
    mean_predicted, mean_observed and gap_level_<j> (mean predicted - observed among rows at level j)."""
    p = np.clip(np.asarray(predicted, dtype=float), _EPS, 1 - _EPS)
    y = np.asarray(response, dtype=float)
    level = np.asarray(level)
    bins = np.minimum((p * 10).astype(int), 9)
    ece = sum(abs(p[bins == b].mean() - y[bins == b].mean()) * (bins == b).mean() for b in np.unique(bins))
    metrics = {"log_loss": float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))),
               "brier": float(np.mean((p - y) ** 2)), "ece": float(ece),
               "mean_predicted": float(p.mean()), "mean_observed": float(y.mean())}
    for j in range(n_levels):
        mine = level == j
        metrics[f"gap_level_{j}"] = float(p[mine].mean() - y[mine].mean()) if mine.any() else float("nan")
    return metrics


@dataclass(frozen=True)
class TrueOutcome:
    """An allocation chosen on predictions, scored under the truth."""

    budget_multiplier: float
    true_value: float
    true_spend: float
    predicted_value: float
    predicted_spend: float
    level: np.ndarray

    def to_frame(self) -> pd.DataFrame:
        """One row per user: `user` (the row of the value and cost arrays) and the `level` chosen."""
        return pd.DataFrame({"user": np.arange(len(self.level)), "level": self.level})

    def summary(self) -> dict[str, float]:
        """Headline figures: the multiplier, and the allocation's value and spend under the truth and as
        predicted."""
        return {"budget_multiplier": self.budget_multiplier, "true_value": self.true_value,
                "true_spend": self.true_spend, "predicted_value": self.predicted_value,
                "predicted_spend": self.predicted_spend}


def _choose(value: np.ndarray, cost: np.ndarray, multiplier: float) -> np.ndarray:
    return np.argmax(value - multiplier * cost - 1e-12 * cost, axis=1)


def outcome_at_multiplier(predicted_value, predicted_cost, true_value, true_cost, multiplier: float) -> TrueOutcome:
    """Every user takes argmax_j (predicted v - multiplier predicted c); totals under both predictions and truth."""
    level = _choose(predicted_value, predicted_cost, multiplier)
    rows = np.arange(len(level))
    return TrueOutcome(float(multiplier), float(true_value[rows, level].sum()), float(true_cost[rows, level].sum()),
                       float(predicted_value[rows, level].sum()), float(predicted_cost[rows, level].sum()), level)


def value_at_true_spend(predicted_value, predicted_cost, true_value, true_cost, target_spend: float, *,
                        iterations: int = 60) -> TrueOutcome:
    """The allocation by the predictions whose true spend is the largest not above `target_spend` (bisection on
    the multiplier over [0, max predicted value/cost ratio])."""
    predicted_value, predicted_cost = np.asarray(predicted_value, float), np.asarray(predicted_cost, float)
    true_value, true_cost = np.asarray(true_value, float), np.asarray(true_cost, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.where(predicted_cost > 0, np.abs(predicted_value) / predicted_cost, 0.0)
    low, high = 0.0, float(ratios.max()) * 2 + 1.0
    best = outcome_at_multiplier(predicted_value, predicted_cost, true_value, true_cost, high)
    for _ in range(iterations):
        middle = 0.5 * (low + high)
        outcome = outcome_at_multiplier(predicted_value, predicted_cost, true_value, true_cost, middle)
        if outcome.true_spend > target_spend:
            low = middle
        else:
            high = middle
            best = outcome
    return best


def true_value_curve(models: dict[str, tuple[np.ndarray, np.ndarray]], true_value, true_cost,
                     spend_targets) -> pd.DataFrame:
    """Per model and target true spend: the true value of the model's allocation (columns model, target_spend,
    true_spend, true_value, predicted_spend, predicted_value, budget_multiplier)."""
    rows = []
    for name, (value, cost) in models.items():
        for target in spend_targets:
            outcome = value_at_true_spend(value, cost, true_value, true_cost, float(target))
            rows.append({"model": name, "target_spend": float(target), "true_spend": outcome.true_spend,
                         "true_value": outcome.true_value, "predicted_spend": outcome.predicted_spend,
                         "predicted_value": outcome.predicted_value, "budget_multiplier": outcome.budget_multiplier})
    return pd.DataFrame(rows)
