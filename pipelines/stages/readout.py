"""Stage `readout`: the experiment's effect table from an assignment and an outcomes table.

Rows: difference in means with cluster-robust SE (at the randomization unit), CUPED when `pre_metric` is given,
exposure-based Horvitz-Thompson and Hajek when `edges` are given, and for a network-test assignment the
user-randomized and cluster-randomized arms with the test for network effects. The sample-ratio check (units per
arm, outcome coverage per arm) is logged with its alarm.

On a synthetic campaign the outcomes come from the `simulate-outcomes` stage, and the job scores each estimator
against the true global effect (`pipelines.synthetic.scoring`): the demo's way to show how much a user-level readout
would miss.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from pydantic import Field

import abtest
from pipelines.config import ConfigPath, StageConfig
from pipelines.io import write_csv
from pipelines.stages.experiment_graph import exposure_condition, load_graph, read_edges, read_user_ids
from pipelines.stages.registry import DemoInputs, StageContext, StageResult, register_stage
from pipelines.tables import ASSIGNMENT, EDGES, LABEL, NUMERIC, USERS, Column, Schema, read_table


class ReadoutConfig(StageConfig):
    assignment: ConfigPath = Field(description="assignment table (parquet) written by `assign`")
    outcomes: ConfigPath = Field(description="outcomes table (parquet): user_id, the metric (and pre_metric)")
    out: ConfigPath = Field(description="effect table (CSV)")
    metric: str = Field("outcome", description="outcome column")
    pre_metric: str | None = Field(None, description="pre-period column for CUPED")
    edges: ConfigPath | None = Field(None, description="edges table: adds exposure-based HT and Hajek estimates")
    users: ConfigPath | None = Field(None, description="users table the assignment's graph was built on")
    kinds: list[str] | None = Field(None, description="edge kinds of the graph (as in `assign`)")
    p: float = Field(0.5, gt=0.0, lt=1.0, description="treated share the assignment used")
    design: str | None = Field(None, description="bernoulli, paired, user or network_test (none: from the table)")
    exposure: str = Field("full", description="exposure condition: full, fractional:<q> or absolute:<k>")
    alpha: float = Field(0.05, gt=0.0, lt=1.0, description="1 - confidence level of the intervals")
    unknown_users: str = Field("error", pattern="^(error|drop)$", description="outcomes for unassigned users: "
                                                                              "error, or drop with a warning")

    retired_keys: ClassVar[dict[str, str]] = {
        "simulate": "synthetic outcomes are drawn by the `simulate-outcomes` stage"}

    def input_tables(self) -> dict:
        tables = {self.assignment: ASSIGNMENT, self.outcomes: _outcome_schema(self)}
        if self.edges is not None:
            tables[self.edges] = EDGES
        if self.users is not None:
            tables[self.users] = USERS
        return tables


def _demo(inputs: DemoInputs) -> dict:
    return {"assignment": str(inputs.out_dir / "assignment.parquet"),
            "outcomes": str(inputs.out_dir / "experiment_outcomes.parquet"),
            "out": str(inputs.out_dir / "readout.csv"), "pre_metric": "pre_outcome",
            "edges": str(inputs.campaign_dir / "edges"), "users": str(inputs.campaign_dir / "users"),
            "exposure": "fractional:0.75"}


@register_stage("readout", ReadoutConfig, order=70, demo=_demo)
def readout_stage(context: StageContext, config: ReadoutConfig) -> StageResult:
    """Read out an experiment: lift with CI and p-value per estimator, SRM check, network-effect test."""
    condition = exposure_condition(config.exposure)
    assignment = read_table(config.assignment, ASSIGNMENT).compute().reset_index(drop=True)
    outcomes = read_table(config.outcomes, _outcome_schema(config)).compute().reset_index(drop=True)
    graph = None
    if config.edges is not None:
        user_ids = assignment["user_id"].to_numpy() if config.users is None else read_user_ids(config.users)
        graph = load_graph(context, read_edges(config.edges), user_ids, config.kinds)
    result = abtest.readout(outcomes, assignment, metric=config.metric, graph=graph, p=config.p, condition=condition,
                            pre_metric=config.pre_metric, design=config.design, alpha=config.alpha,
                            unknown_users=config.unknown_users)
    table = result.to_frame()
    write_csv(table, config.out, index=False)

    metrics: dict[str, float] = {}
    for effect in result.effects:
        for key in ("estimate", "se", "ci_low", "ci_high", "p_value", "relative_lift"):
            metrics[f"{effect.estimator}.{key}"] = getattr(effect, key)
    metrics |= {"srm.units_p_value": result.srm.units_p_value, "srm.observed_p_value": result.srm.observed_p_value,
                "srm.alarm": float(result.srm.alarm), "users_with_outcome": result.n_with_outcome}
    if result.network_test is not None:
        metrics |= {"network_test.difference": result.network_test.difference,
                    "network_test.p_value": result.network_test.p_value}
    context.log.metrics({k: v for k, v in metrics.items() if v is not None and np.isfinite(v)})
    context.log.table(table, "effects", index=False)
    context.log.figure(abtest.readout_figure(result), "effects")
    headline = result.effects[1] if len(result.effects) > 1 and config.pre_metric else result.effects[0]
    summary = {"estimator": headline.estimator, "lift": f"{headline.estimate:.4g}",
               "95% CI": f"[{headline.ci_low:.4g}, {headline.ci_high:.4g}]", "p-value": f"{headline.p_value:.3g}",
               "SRM alarm": "YES" if result.srm.alarm else "no"}
    return StageResult(summary=summary, outputs={"effects": config.out}, data={"readout": result})


def _outcome_schema(config: ReadoutConfig) -> Schema:
    columns = [Column("user_id", LABEL), Column(config.metric, NUMERIC)]
    if config.pre_metric:
        columns.append(Column(config.pre_metric, NUMERIC))
    return Schema("outcomes", required=tuple(columns))
