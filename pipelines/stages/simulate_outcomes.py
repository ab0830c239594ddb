"""Stage `simulate-outcomes`: draw an experiment's outcomes on a synthetic campaign, from its hidden truth.

Treated users lift the users they actually interact with (`pipelines.synthetic.experiment`), so a user-level readout
misses the spillover and a cluster-randomized one recovers part of it. Writes the outcomes table (user_id, outcome,
pre_outcome) that `readout` reads; the true global and direct effects stay with the job, which scores the readout
against them.
"""

from __future__ import annotations

import pandas as pd
from pydantic import Field

from pipelines.config import ConfigPath, StageConfig
from pipelines.errors import InputError
from pipelines.io import write_parquet
from pipelines.stages.registry import DemoInputs, StageContext, StageResult, register_stage
from pipelines.synthetic.experiment import simulate_outcomes
from pipelines.synthetic.scoring import generated_campaign
from pipelines.tables import ASSIGNMENT, read_table


class SimulateOutcomesConfig(StageConfig):
    assignment: ConfigPath = Field(description="assignment table (parquet) written by `assign` on the campaign's "
                                               "users")
    campaign: ConfigPath = Field(description="the generated campaign folder (written by `generate`)")
    out: ConfigPath = Field(description="outcomes table (parquet file): user_id, outcome, pre_outcome")
    effect: float = Field(0.2, description="direct effect of treatment on the treated user")
    spillover: float = Field(0.3, description="effect of all of a user's interaction partners being treated")
    noise: float = Field(1.0, gt=0, description="outcome noise SD")

    def input_tables(self) -> dict:
        return {self.assignment: ASSIGNMENT}


def _demo(inputs: DemoInputs) -> dict:
    return {"assignment": str(inputs.out_dir / "assignment.parquet"), "campaign": str(inputs.campaign_dir),
            "out": str(inputs.out_dir / "experiment_outcomes.parquet")}


@register_stage("simulate-outcomes", SimulateOutcomesConfig, order=65, demo=_demo)
def simulate_outcomes_stage(context: StageContext, config: SimulateOutcomesConfig) -> StageResult:
    """Draw an experiment's outcomes on a synthetic campaign (treated users lift their interaction partners)."""
    campaign = generated_campaign(config.campaign)
    if campaign is None:
        raise InputError(f"campaign: {config.campaign} is not a campaign written by `campaign generate` "
                         "(no campaign.json and truth/)")
    assignment = read_table(config.assignment, ASSIGNMENT).compute().reset_index(drop=True)
    truth_users = pd.read_parquet(campaign.truth_users, columns=["user_id", "engagement"])
    interactions = pd.read_parquet(campaign.interactions)
    experiment = simulate_outcomes(assignment, truth_users, interactions, effect=config.effect,
                                   spillover=config.spillover, noise=config.noise,
                                   random_state=context.stage_seed("simulate-outcomes"))
    write_parquet(experiment.outcomes, config.out)
    context.log.metrics({"users": len(experiment.outcomes), "true_global_effect": experiment.global_effect,
                         "true_direct_effect": experiment.user_level_effect})
    return StageResult(summary={"users": len(experiment.outcomes),
                                "true global effect": f"{experiment.global_effect:.4g}"},
                       outputs={"outcomes": config.out},
                       data={"global_effect": experiment.global_effect,
                             "direct_effect": experiment.user_level_effect})
