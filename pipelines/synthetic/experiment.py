"""Outcomes of a simulated experiment on a synthetic campaign, where treated users influence the users they
actually interact with (the hidden interaction graph), so the readout can be scored against the true global effect.

    pre_outcome = 1 + engagement + N(0, 0.5^2)                       (the pre-period metric, for CUPED)
    outcome     = 1 + engagement + effect z + spillover s + N(0, noise^2)

with z the user's group and s the interaction-weighted share of their hidden interaction partners who are treated.
The global effect (everyone treated vs nobody) is effect + spillover x (share of users with a partner).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from abtest import build_graph
from abtest.simulate import treated_neighbour_share
from pipelines.synthetic.world import stream

EXPERIMENT_STREAM = 9  # random stream of the experiment's noise, apart from every stream of the campaign itself


@dataclass(frozen=True)
class SimulatedExperiment:
    outcomes: pd.DataFrame  # user_id, outcome, pre_outcome (assigned users only)
    global_effect: float
    user_level_effect: float  # effect: what a user-level test without interference would measure


def simulate_outcomes(assignment: pd.DataFrame, truth_users: pd.DataFrame, interactions: pd.DataFrame, *,
                      effect: float, spillover: float, noise: float, random_state: int) -> SimulatedExperiment:
    """Outcomes for every assigned user (see the module docstring)."""
    graph = build_graph(interactions, truth_users["user_id"])
    position = graph.positions(assignment["user_id"], what="assignment.user_id")
    treated = np.zeros(graph.n_users, dtype=np.int64)
    treated[position] = assignment["group"].to_numpy()
    share = treated_neighbour_share(graph, treated, weighted=True)[position]
    engagement = truth_users["engagement"].to_numpy()[position]
    rng = stream(random_state, EXPERIMENT_STREAM)
    pre = 1.0 + engagement + 0.5 * rng.standard_normal(len(position))
    outcome = (1.0 + engagement + effect * treated[position] + spillover * share
               + noise * rng.standard_normal(len(position)))
    has_partner = (graph.degree > 0)[position]
    return SimulatedExperiment(pd.DataFrame({"user_id": assignment["user_id"].to_numpy(), "outcome": outcome,
                                             "pre_outcome": pre}),
                               float(effect + spillover * has_partner.mean()), float(effect))
