"""Incentive levels of a log and their face values: what `allocate` (both methods) orders its levels by."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipelines.errors import InputError


def face_values(frame: pd.DataFrame, level_costs: dict | None, *, column: str) -> dict[str, float]:
    """Level label -> face value (paid on a response), cheapest first, the zero-cost level ("nothing") leading:
    `level_costs` if given (it must cover every level in `column`), else the mean cost of the rewarded rows."""
    if level_costs is not None:
        costs = dict(level_costs)
        unknown = sorted(set(frame[column].astype(str)) - set(costs))
        if unknown:
            raise InputError(f"level_costs: the log has levels {unknown} without a cost")
    else:
        redeemed = frame[frame["reward"] > 0]
        costs = redeemed.groupby(redeemed[column].astype(str))["cost"].mean().to_dict()
        costs |= {level: 0.0 for level in set(frame[column].astype(str)) - set(costs)}
    negative = [level for level, cost in costs.items() if not np.isfinite(cost) or cost < 0]
    if negative:
        raise InputError(f"level_costs: levels {negative} have a negative or missing cost")
    if min(costs.values()) > 0:
        raise InputError(f"level_costs: no zero-cost level among {sorted(costs)}; allocation needs a 'nothing' "
                         "option")
    return dict(sorted(costs.items(), key=lambda item: (item[1], item[0])))


def face_values_of_counts(redeemed: dict[str, tuple[int, float]], level_costs: dict | None) -> dict[str, float]:
    """`face_values` from a per-level summary (level -> (rewarded decisions, their summed cost)) computed over a
    table's partitions: one row per level standing for its mean redeemed cost (levels never redeemed: cost 0)."""
    means = {level: total / count for level, (count, total) in redeemed.items() if count}
    frame = pd.DataFrame({"level": list(redeemed), "reward": [1.0 if level in means else 0.0 for level in redeemed],
                          "cost": [means.get(level, 0.0) for level in redeemed]})
    return face_values(frame, level_costs, column="level")
