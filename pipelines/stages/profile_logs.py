"""Stage `profile-logs`: what the decision log says per arm, computed with the platform's tree reduction."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from pydantic import Field  # noqa: E402

from pipelines.config import ConfigPath  # noqa: E402
from pipelines.execution import run_statistic  # noqa: E402
from pipelines.io import write_csv  # noqa: E402
from pipelines.profile import ArmProfile  # noqa: E402
from pipelines.stages.log_columns import LogSection  # noqa: E402
from pipelines.stages.registry import DemoInputs, StageContext, StageResult, register_stage  # noqa: E402
from pipelines.tables import read_table  # noqa: E402


class ProfileLogsConfig(LogSection):
    out: ConfigPath = Field(description="per-arm profile table (CSV)")
    propensity: str | None = Field("propensity", description="logging propensity column (null: none)")
    cost: str | None = Field("cost", description="cost column (null: none)")
    randomized: str | None = Field(None, description="boolean column marking the uniformly randomized slice")

    def statistic(self, columns: list[str]) -> ArmProfile:
        """The per-arm statistic; `propensity` and `cost` left at their default names are skipped when the log's
        `columns` lack them (a name the section or the job's `columns:` gives must exist)."""
        given = {role: getattr(self, role) if role in self.model_fields_set or getattr(self, role) in columns else None
                 for role in ("propensity", "cost")}
        return ArmProfile(self.arm, self.reward, given["propensity"], given["cost"], self.randomized)


def _demo(inputs: DemoInputs) -> dict:
    return {"logs": str(inputs.campaign_dir / "logs"), "out": str(inputs.out_dir / "log_profile.csv"),
            "randomized": "randomized"}


def profile_figure(profile: pd.DataFrame):
    """Per-arm value of "always play this arm": IPS with 95% intervals next to the logged mean reward."""
    figure, axis = plt.subplots(figsize=(6, 3.5))
    positions = range(len(profile))
    axis.bar([p - 0.2 for p in positions], profile["reward_mean"], width=0.4, label="logged mean reward")
    if "ips_value" in profile:
        errors = [profile["ips_value"] - profile["ips_ci_low"], profile["ips_ci_high"] - profile["ips_value"]]
        axis.bar([p + 0.2 for p in positions], profile["ips_value"], width=0.4, yerr=errors, capsize=3,
                 label="IPS value of always this arm")
    axis.set_xticks(list(positions), profile.index, rotation=20)
    axis.set_ylabel("reward per decision")
    top = max(profile["reward_mean"].max(), profile["ips_ci_high"].max() if "ips_ci_high" in profile else 0.0)
    axis.set_ylim(0, 1.3 * top)  # room for the legend above the bars
    axis.legend(fontsize=8, loc="upper left", ncol=2)
    figure.tight_layout()
    return figure


@register_stage("profile-logs", ProfileLogsConfig, order=10, demo=_demo)
def profile_logs(context: StageContext, config: ProfileLogsConfig) -> StageResult:
    """Per-arm rows, reward, spend and the IPS value of each arm, from a decision log."""
    statistic = config.statistic(list(read_table(config.logs, config.log_schema()).columns))
    logs = read_table(config.logs, config.log_schema(), columns=statistic.columns)
    profile = run_statistic(statistic, logs)
    write_csv(profile, config.out)
    metrics = {"rows": int(profile["rows"].sum()), "arms": len(profile)}
    for arm, row in profile.iterrows():
        metrics[f"reward_mean.{arm}"] = row["reward_mean"]
        if "ips_value" in profile:
            metrics[f"ips_value.{arm}"] = row["ips_value"]
    context.log.metrics(metrics)
    context.log.table(profile, "log_profile")
    context.log.figure(profile_figure(profile), "arm_values")
    best = profile["ips_value" if "ips_value" in profile else "reward_mean"].idxmax()
    return StageResult(summary={"rows": metrics["rows"], "best single arm": best}, outputs={"profile": config.out},
                       data={"profile": profile})
