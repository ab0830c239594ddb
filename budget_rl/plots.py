"""Figures of an allocation (matplotlib `Figure`s, no pyplot state)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from budget_rl.allocation import Allocation


def frontier_figure(frontier: pd.DataFrame, allocation: Allocation | None = None, *, value_label: str = "value",
                    spend_label: str = "spend") -> Figure:
    """Value against spend along the frontier (left) and the marginal value of one more currency unit (right);
    the chosen allocation, if given, is marked on both."""
    figure = Figure(figsize=(10, 4))
    left, right = figure.subplots(1, 2)
    left.plot(frontier["spend"], frontier["value"], color="tab:blue")
    finite = np.isfinite(frontier["marginal_value"])
    right.plot(frontier.loc[finite, "spend"], frontier.loc[finite, "marginal_value"], color="tab:green")
    if allocation is not None:
        left.scatter([allocation.spend], [allocation.value], color="tab:red", zorder=3,
                     label=f"budget {allocation.budget:,.0f}")
        right.scatter([allocation.spend], [allocation.budget_multiplier], color="tab:red", zorder=3,
                      label=f"multiplier {allocation.budget_multiplier:.3g}")
        left.legend()
        right.legend()
    left.set(xlabel=spend_label, ylabel=value_label, title="value vs budget")
    right.set(xlabel=spend_label, ylabel=f"{value_label} per extra unit of {spend_label}", title="marginal value",
              yscale="log")
    figure.tight_layout()
    return figure
