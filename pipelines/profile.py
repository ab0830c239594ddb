"""Per-arm profile of a decision log, as a mergeable statistic (partial / merge / finalize).

For each arm: logged rows and share, mean reward with its standard error, spend, and (with propensities) the
inverse-propensity estimate of the value of the policy "always play this arm",

    IPS_k = (1/N) sum_i 1{a_i = k} r_i / p_i,   SE = sqrt((mean of (1{a_i=k} r_i/p_i)^2 - IPS_k^2) / N),

with its self-normalized variant; and, when a `randomized` column marks the uniformly randomized slice, the plain
mean reward of each arm on that slice. Units: reward units per decision; spend in cost units.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

Z_95 = 1.959963984540054


@dataclass(frozen=True)
class ArmProfile:
    """The statistic, configured with the log's column names (None: that column is not used)."""

    arm: str = "arm"
    reward: str = "reward"
    propensity: str | None = "propensity"
    cost: str | None = "cost"
    randomized: str | None = "randomized"

    @property
    def columns(self) -> list[str]:
        return [c for c in (self.arm, self.reward, self.propensity, self.cost, self.randomized) if c is not None]

    def partial(self, chunk: pd.DataFrame) -> pd.DataFrame:
        reward = chunk[self.reward].to_numpy(dtype=float)
        sums = {"rows": np.ones_like(reward), "reward_sum": reward, "reward_sq_sum": reward * reward}
        if self.cost is not None:
            sums["cost_sum"] = chunk[self.cost].to_numpy(dtype=float)
        if self.propensity is not None:
            weighted = reward / chunk[self.propensity].to_numpy(dtype=float)
            sums |= {"ipw_sum": weighted, "ipw_sq_sum": weighted * weighted,
                     "inverse_propensity_sum": 1.0 / chunk[self.propensity].to_numpy(dtype=float)}
        if self.randomized is not None:
            flag = chunk[self.randomized].to_numpy(dtype=bool).astype(float)
            sums |= {"randomized_rows": flag, "randomized_reward_sum": flag * reward,
                     "randomized_reward_sq_sum": flag * reward * reward}
        frame = pd.DataFrame(sums)
        frame[self.arm] = chunk[self.arm].astype(str).to_numpy()
        return frame.groupby(self.arm, sort=True).sum()

    @staticmethod
    def merge(left: pd.DataFrame, right: pd.DataFrame) -> pd.DataFrame:
        return left.add(right, fill_value=0.0).sort_index()

    def finalize(self, sums: pd.DataFrame) -> pd.DataFrame:
        total = sums["rows"].sum()
        out = pd.DataFrame(index=sums.index)
        out["rows"] = sums["rows"].astype(np.int64)
        out["share"] = sums["rows"] / total
        out["reward_mean"], out["reward_se"] = _mean_and_se(sums["reward_sum"], sums["reward_sq_sum"], sums["rows"])
        if "cost_sum" in sums:
            out["spend"] = sums["cost_sum"]
        if "ipw_sum" in sums:
            ips = sums["ipw_sum"] / total
            out["ips_value"] = ips
            out["ips_se"] = np.sqrt(np.maximum(sums["ipw_sq_sum"] / total - ips * ips, 0.0) / total)
            out["ips_ci_low"] = ips - Z_95 * out["ips_se"]
            out["ips_ci_high"] = ips + Z_95 * out["ips_se"]
            out["snips_value"] = sums["ipw_sum"] / sums["inverse_propensity_sum"]
        if "randomized_rows" in sums:
            out["randomized_rows"] = sums["randomized_rows"].astype(np.int64)
            out["randomized_reward_mean"], out["randomized_reward_se"] = _mean_and_se(
                sums["randomized_reward_sum"], sums["randomized_reward_sq_sum"], sums["randomized_rows"])
        out.index.name = "arm"
        return out


def _mean_and_se(total: pd.Series, squares: pd.Series, count: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Sample mean and its standard error (NaN where fewer than two rows)."""
    safe = count.where(count > 0)
    mean = total / safe
    variance = (squares - safe * mean * mean) / (safe - 1).where(safe > 1)
    return mean, np.sqrt(np.maximum(variance, 0.0) / safe)
