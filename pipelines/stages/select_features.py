"""Stage `select-features`: score every candidate feature for heterogeneous arm effects and keep the significant ones.

Reads a decision log (parquet) as a Dask DataFrame and runs `causal_fs.score_features` on its partitions (two
statistics, run by `pipelines.execution`); with a user id column (the default `user_id`), the log is regrouped so
each user's rows share a partition and significance comes from user-level permutations. Writes the score table as
CSV, and logs scores, p-values, the selected list and a bar chart with bootstrap intervals to MLflow. Later stages
take `results["select-features"].data["selected"]`.
"""

from __future__ import annotations

from typing import ClassVar

import dask.dataframe as dd
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from pydantic import Field

from campaign_core import seeded_salt
from causal_fs import primary_method, score_features, select_features
from causal_fs.significance import minimum_permutations
from pipelines.config import ConfigPath
from pipelines.execution import chunked
from pipelines.feature_columns import choose_features
from pipelines.io import write_csv
from pipelines.stages.log_columns import LogSection
from pipelines.stages.registry import DemoInputs, StageContext, StageResult, register_stage
from pipelines.tables import read_table
from pipelines.user_split import UserSplit


class SelectFeaturesConfig(LogSection):
    out: ConfigPath = Field(description="feature score table (CSV)")
    features: list[str] | None = Field(None, description="candidate features (none: every other column)")
    exclude: list[str] = Field(["user_id", "day", "cost", "randomized"],
                               description="columns never used as features when `features` is none")
    propensity: str | None = Field(None, description="logging propensity column, to weight the cell means "
                                                     "(none: arms taken as randomized)")
    user_id: str | None = Field("user_id", description="user id column: permutations, bootstrap replicates and the "
                                                       "row sample move whole users (none: rows are independent)")
    replicate_memory_mb: float = Field(256, gt=0, description="memory cap of the permutation and bootstrap tables "
                                                              "(MB); more replicates cost passes, not memory")
    methods: list[str] = Field(["hie", "hdd"], description="scores: hie, hdd, combined, kl, ed, chi, f, lr, "
                                                           "causal_forest")
    n_bins: int = Field(10, ge=2, description="quantile bins per numeric feature")
    control: str | None = Field(None, description="control arm of the uplift filters (none: 'control' or the first)")
    n_permutations: int = Field(200, ge=0, description="permutations for p-values (and bootstrap replicates); "
                                                       "raised to features/alpha - 1 when below it")
    alpha: float = Field(0.05, gt=0, le=1, description="false discovery rate for selection (Benjamini-Hochberg)")
    k: int | None = Field(None, ge=1, description="keep at most this many features")
    sample_fraction: float | None = Field(None, gt=0, le=1, description="score a seeded sample of the rows (of the "
                                                                        "users, when user_id is set)")

    required_roles: ClassVar[tuple[str, ...]] = ("arm", "reward", "user_id")


def _demo(inputs: DemoInputs) -> dict:
    # The demo's logs come from a targeting policy: weight by its propensities; a 2% sample keeps it quick.
    return {"logs": str(inputs.campaign_dir / "logs"), "out": str(inputs.out_dir / "feature_scores.csv"),
            "propensity": "propensity", "sample_fraction": 0.02}


def score_figure(scores: pd.DataFrame, method: str, selected: list[str]) -> Figure:
    """Bar chart of one score per feature, best first, with bootstrap intervals; selected features highlighted."""
    ranked = scores.sort_values(method, ascending=True)
    figure = Figure(figsize=(6.5, 0.35 * len(ranked) + 1.2))  # no pyplot: no global state in a batch job
    axis = figure.subplots()
    colors = ["tab:orange" if name in selected else "tab:gray" for name in ranked.index]
    errors = None
    if f"{method}_low" in ranked:
        errors = np.vstack([np.maximum(ranked[method] - ranked[f"{method}_low"], 0),
                            np.maximum(ranked[f"{method}_high"] - ranked[method], 0)])
    axis.barh(ranked.index, ranked[method], xerr=errors, color=colors, capsize=3)
    axis.set_xlabel(f"{method} score (orange: selected; bars: 95% bootstrap interval)")
    figure.tight_layout()
    return figure


def _sample(logs: dd.DataFrame, config: SelectFeaturesConfig, seed: int) -> dd.DataFrame:
    """The seeded sample of `sample_fraction`: whole users (a salted hash of the id) when the log names users,
    else rows."""
    if config.sample_fraction is None or config.sample_fraction >= 1:
        return logs
    if config.user_id is None:
        return logs.sample(frac=config.sample_fraction, random_state=seed)
    users = UserSplit("holdout", seeded_salt("select-features-sample", seed), config.sample_fraction, config.user_id)
    return logs.map_partitions(users.rows)  # the users whose salted hash falls below the fraction


@register_stage("select-features", SelectFeaturesConfig, order=20, demo=_demo)
def select_features_stage(context: StageContext, config: SelectFeaturesConfig) -> StageResult:
    """Score features for heterogeneous arm effects (HIE/HDD and filters) and select the significant ones."""
    logs = read_table(config.logs, config.log_schema())
    choice = choose_features(logs, config.features, roles=config.log_roles(), exclude=config.exclude)
    features = list(choice.taken)
    choice.record(context.log)
    logs = _sample(logs, config, context.stage_seed("select-features-sample"))
    if config.user_id is not None and logs.npartitions > 1:
        logs = logs.shuffle(on=config.user_id)  # a user's rows in one partition: user-level replicates see them all
    n_permutations = config.n_permutations
    if n_permutations:  # enough for a lone strong feature to survive Benjamini-Hochberg
        n_permutations = max(n_permutations, minimum_permutations(len(features), config.alpha))
    result = score_features(chunked(logs), features, arm_col=config.arm, reward_col=config.reward,
                            methods=tuple(config.methods), n_bins=config.n_bins, control=config.control,
                            propensity_col=config.propensity, user_col=config.user_id,
                            n_permutations=n_permutations, random_state=context.stage_seed("select-features"),
                            replicate_memory_mb=config.replicate_memory_mb)
    scores = result.to_frame()
    method = primary_method(config.methods)
    significance = config.n_permutations > 0 or method in ("f", "lr")
    selected = select_features(scores, method, config.alpha if significance else 1.0, config.k)
    table = scores.sort_values(method, ascending=False, kind="stable")
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    table.insert(1, "selected", table.index.isin(selected))
    write_csv(table, config.out)

    context.log.params({"scored_features": ",".join(features), "primary_method": method,
                        "permutations_used": n_permutations, "replicate_passes": result.passes,
                        "rows_scored": result.rows})
    metrics = {"features_scored": len(features), "features_selected": len(selected)}
    for name, row in table.iterrows():
        metrics[f"{method}.{name}"] = float(row[method])
        if f"p_{method}" in table:
            metrics[f"p_{method}.{name}"] = float(row[f"p_{method}"])
    context.log.metrics(metrics)
    context.log.table(table, "feature_scores")
    context.log.text("\n".join(selected) + "\n", "selected_features.txt")
    context.log.figure(score_figure(scores, method, selected), "feature_scores")
    return StageResult(summary={"features scored": choice.summary(), "selected": ", ".join(selected) or "(none)"},
                       outputs={"scores": config.out}, data={"scores": table, "selected": selected})
