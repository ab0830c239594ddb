"""Stage `generate`: write a synthetic campaign with its ground truth."""

from __future__ import annotations

from pydantic import Field

from pipelines.config import ConfigPath, StageConfig
from pipelines.stages.registry import DemoInputs, StageContext, StageResult, register_stage
from pipelines.synthetic import CampaignConfig, generate_campaign


class GenerateConfig(StageConfig, CampaignConfig):
    """A campaign's parameters plus where to write it."""

    out: ConfigPath = Field(description="output folder (replaced atomically)")


def _demo(inputs: DemoInputs) -> dict:
    return {"out": str(inputs.campaign_dir)}


@register_stage("generate", GenerateConfig, order=0, demo=_demo,
                cli_aliases={"n_users": "users", "n_days": "days"})
def generate(context: StageContext, config: GenerateConfig) -> StageResult:
    """Write a synthetic campaign (users, logs, edges, ground truth) as partitioned parquet."""
    campaign = CampaignConfig(**config.model_dump(exclude={"out"}))
    truth = generate_campaign(campaign, config.out, seed=context.seed)
    best = truth.users["best_arm"].value_counts(normalize=True)
    context.log.metrics({
        "n_users": campaign.n_users,
        "n_log_rows": truth.n_log_rows,
        "n_edges": truth.n_edges,
        "n_hidden_interactions": len(truth.interactions),
        **{f"best_arm_share.{arm}": float(best.get(arm, 0.0)) for arm in campaign.arm_labels},
    })
    context.log.table(truth.features, "feature_roles", index=False)
    context.log.table(truth.arms, "arms", index=False)
    return StageResult(
        summary={"users": campaign.n_users, "log rows": truth.n_log_rows,
                 "hidden interactions": len(truth.interactions)},
        outputs={"campaign": config.out},
        data={"campaign_dir": config.out, "truth": truth},
    )

