"""The experiment's readout: every estimator the design supports in one table, the sample-ratio check, and the
network-effect test when the assignment ran one.

Rules for untidy input: outcomes for users who are not in the assignment raise (a join gone wrong), or are dropped
with a warning under `unknown_users="drop"`; assigned users without an outcome are left out of every estimate, and
the sample-ratio check compares that loss across arms.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from abtest.estimate import (
    Effect,
    NetworkEffectTest,
    difference_in_means,
    effects_frame,
    exposure_estimate,
    network_effect_test,
)
from abtest.exposure import exposure_probabilities, exposure_units, realized_exposure
from abtest.graph import InteractionGraph
from abtest.validation import aligned_assignment, checked_assignment, checked_outcomes, infer_design
from campaign_core import InputError, plain

SRM_ALARM = 0.001


class MissingOutcomeWarning(UserWarning):
    """Outcomes name users the assignment does not know; they were dropped."""


@dataclass(frozen=True)
class SampleRatioCheck:
    """Chi-square checks: randomization units per arm against p, and the share of assigned users with an outcome
    in each arm (differential loss). `alarm` when either p-value is below 0.001."""

    units_treatment: int
    units_control: int
    units_p_value: float
    observed_share_treatment: float
    observed_share_control: float
    observed_p_value: float

    @property
    def alarm(self) -> bool:
        return bool(min(self.units_p_value, self.observed_p_value) < SRM_ALARM)

    def to_frame(self) -> pd.DataFrame:
        """One row per arm: `arm` ("treatment", "control"), `units` (randomization units) and `observed_share`
        (share of its assigned users with an outcome)."""
        return pd.DataFrame({"arm": ["treatment", "control"], "units": [self.units_treatment, self.units_control],
                             "observed_share": [self.observed_share_treatment, self.observed_share_control]})

    def summary(self) -> dict[str, float]:
        return {"units_treatment": self.units_treatment, "units_control": self.units_control,
                "units_p_value": self.units_p_value, "observed_share_treatment": self.observed_share_treatment,
                "observed_share_control": self.observed_share_control, "observed_p_value": self.observed_p_value,
                "alarm": self.alarm}


@dataclass(frozen=True, eq=False)
class Readout:
    """Every estimate of one experiment: `to_frame()` one row per estimator (columns of `Effect`), `effects` the
    same as objects, `srm` the sample-ratio check, `network_test` Saveski et al.'s test (network_test design only).
    """

    effects: tuple[Effect, ...]
    srm: SampleRatioCheck
    network_test: NetworkEffectTest | None
    design: str
    n_assigned: int
    n_with_outcome: int

    def to_frame(self) -> pd.DataFrame:
        """One row per estimator, columns of `Effect` (`estimator`, `estimate`, `se`, `ci_low`, ...)."""
        return effects_frame(self.effects)

    @property
    def table(self) -> pd.DataFrame:
        """The same as `to_frame()`."""
        return self.to_frame()

    def summary(self) -> dict[str, float]:
        """Users assigned and with an outcome, the sample-ratio check, and the network-effect test when run."""
        figures = {"n_assigned": self.n_assigned, "n_with_outcome": self.n_with_outcome,
                   "n_estimators": len(self.effects)}
        figures |= {f"srm_{key}": value for key, value in self.srm.summary().items()}
        if self.network_test is not None:
            figures |= {f"network_test_{key}": value for key, value in self.network_test.summary().items()}
        return figures


def readout(outcomes: pd.DataFrame, assignment: pd.DataFrame, *, metric: str = "outcome",
            graph: InteractionGraph | None = None, p: float = 0.5, condition="full", pre_metric: str | None = None,
            design: str | None = None, alpha: float = 0.05, unknown_users: str = "error") -> Readout:
    """Estimate the treatment effect on `metric` (one row per user in `outcomes`).

    graph: the interaction graph; with it, exposure-based Horvitz-Thompson and Hajek rows are added (exposure
        `condition` "full", ("fractional", q) or ("absolute", k)).
    pre_metric: a pre-period column of `outcomes`; adds a CUPED row.
    design: "bernoulli", "paired", "user" or "network_test"; inferred from the table's columns when None.
    """
    if not 0.0 < alpha < 1.0:
        raise InputError(f"alpha: must be in (0, 1), got {alpha}")
    if not isinstance(p, int | float) or not 0.0 < float(p) < 1.0:
        raise InputError(f"p: the treated share must be strictly between 0 and 1, got {p!r}")
    if unknown_users not in ("error", "drop"):
        raise InputError(f"unknown_users: must be 'error' or 'drop', got {unknown_users!r}")
    assignment = checked_assignment(assignment)
    design = infer_design(assignment, design)
    outcomes = checked_outcomes(outcomes, metric, pre_metric)
    outcomes, position = _matched_outcomes(outcomes, assignment, "are not in the assignment", unknown_users)
    if graph is not None:
        assignment = aligned_assignment(graph, assignment)
        outcomes, position = _matched_outcomes(outcomes, assignment, "are not users of the graph", unknown_users,
                                               "assigned ")

    observed = np.zeros(len(assignment), dtype=bool)
    observed[position] = True
    y = np.full(len(assignment), np.nan)
    y[position] = outcomes[metric].to_numpy(dtype=float)
    group = assignment["group"].to_numpy()
    unit = assignment["user_id"].to_numpy() if design == "user" else assignment["cluster"].to_numpy()
    if design == "network_test":
        # Units of the sample-ratio check: users in the user-randomized half, clusters in the other.
        by_user = assignment["design"].to_numpy() == "user"
        srm_unit = np.where(by_user, -1 - np.arange(len(assignment)), assignment["cluster"].to_numpy())
    else:
        srm_unit = unit
    srm = sample_ratio_check(group, srm_unit, observed, p=p)

    rows = observed
    effects: list[Effect] = []
    network = None
    if design == "network_test":
        network = network_effect_test(y[rows], group[rows] == 1, unit[rows], assignment["design"].to_numpy()[rows],
                                      alpha=alpha)
        effects += [network.user_randomized, network.cluster_randomized]
    else:
        effects.append(difference_in_means(y[rows], group[rows] == 1, unit[rows], alpha=alpha))
        if pre_metric is not None:
            x = np.full(len(assignment), np.nan)
            x[position] = outcomes[pre_metric].to_numpy(dtype=float)
            effects.append(difference_in_means(y[rows], group[rows] == 1, unit[rows], covariate=x[rows], alpha=alpha))
        if graph is not None:
            exposure = exposure_probabilities(graph, assignment, p=p, condition=condition, design=design)
            exposed1, exposed0 = realized_exposure(graph, group, condition=condition)
            coins = exposure_units(graph, assignment, design=design)[rows]
            for kind in ("horvitz_thompson", "hajek"):
                effects.append(exposure_estimate(y[rows], exposed1[rows], exposed0[rows],
                                                 exposure["exposure_p1"].to_numpy()[rows],
                                                 exposure["exposure_p0"].to_numpy()[rows], unit[rows], kind=kind,
                                                 alpha=alpha, exposure_units=coins))
    return Readout(tuple(effects), srm, network, design, len(assignment), int(observed.sum()))


def _matched_outcomes(outcomes: pd.DataFrame, assignment: pd.DataFrame, problem: str, unknown_users: str,
                      who: str = "") -> tuple[pd.DataFrame, np.ndarray]:
    """(outcomes, their rows in `assignment`); outcomes of users without a row raise or, with unknown_users="drop",
    are dropped with a `MissingOutcomeWarning`."""
    position = pd.Index(assignment["user_id"]).get_indexer(outcomes["user_id"])
    unknown = position < 0
    if unknown.any():
        message = (f"outcomes.user_id: {int(unknown.sum())} {who}user(s) {problem} "
                   f"(e.g. {plain(outcomes['user_id'].to_numpy()[unknown][0])!r})")
        if unknown_users == "error":
            raise InputError(message)
        warnings.warn(message + "; dropped", MissingOutcomeWarning, stacklevel=3)
        outcomes, position = outcomes[~unknown], position[~unknown]
    return outcomes, position


def sample_ratio_check(group: np.ndarray, unit: np.ndarray, observed: np.ndarray, *, p: float) -> SampleRatioCheck:
    """Units per arm against p (chi-square, 1 df) and outcome coverage per arm (2x2 chi-square)."""
    units, first = np.unique(unit, return_index=True)
    unit_group = group[first]
    n1, n0 = int((unit_group == 1).sum()), int((unit_group == 0).sum())
    expected = np.array([p, 1 - p]) * (n1 + n0)
    units_p = float(stats.chisquare([n1, n0], expected).pvalue) if n1 + n0 > 0 else np.nan
    table = np.array([[np.sum(observed & (group == g)), np.sum(~observed & (group == g))] for g in (1, 0)])
    if (table.sum(axis=1) == 0).any() or (table.sum(axis=0) == 0).any():
        observed_p = 1.0
    else:
        observed_p = float(stats.chi2_contingency(table, correction=False).pvalue)
    share = table[:, 0] / np.maximum(table.sum(axis=1), 1)
    return SampleRatioCheck(n1, n0, units_p, float(share[0]), float(share[1]), observed_p)


def readout_figure(result: Readout, *, relative: bool = False):
    """Estimates with their confidence intervals, one line per estimator (absolute or relative lift)."""
    import matplotlib.pyplot as plt

    table = result.to_frame()
    prefix = "relative_" if relative else ""
    centre = table["relative_lift" if relative else "estimate"].to_numpy()
    low, high = table[f"{prefix}ci_low"].to_numpy(), table[f"{prefix}ci_high"].to_numpy()
    figure, axis = plt.subplots(figsize=(6, 0.6 * len(table) + 1.2))
    ticks = np.arange(len(table))[::-1]
    axis.errorbar(centre, ticks, xerr=[centre - low, high - centre], fmt="o", capsize=4)
    axis.axvline(0.0, color="grey", linewidth=0.8)
    axis.set_yticks(ticks, table["estimator"])
    axis.set_xlabel("relative lift" if relative else "effect (outcome units)")
    title = f"{result.design} design, {result.n_with_outcome} users with outcomes"
    if result.srm.alarm:
        title += "  (SAMPLE RATIO MISMATCH)"
    axis.set_title(title)
    figure.tight_layout()
    return figure
