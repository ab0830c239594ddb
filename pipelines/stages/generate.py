"""Stage `generate`: write a synthetic campaign with its ground truth."""

from __future__ import annotations

from pydantic import Field

from pipelines.config import ConfigPath, StageConfig
from pipelines.stages.registry import DemoInputs, StageContext, StageResult, register_stage
from pipelines.synthetic import CampaignConfig, generate_campaign
from pipelines.synthetic.episodes import write_transitions


class GenerateConfig(StageConfig, CampaignConfig):
    """A campaign's parameters plus where to write it."""

    out: ConfigPath = Field(description="output folder (replaced atomically)")
    transitions_horizon: int | None = Field(None, ge=1, le=365, description="also write transitions/: every user "
                                            "decided every day for this many days under the logging policy "
                                            "(offline constrained-RL data; none: not written)")


def _demo(inputs: DemoInputs) -> dict:
    return {"out": str(inputs.campaign_dir)}


@register_stage("generate", GenerateConfig, order=0, demo=_demo,
                cli_aliases={"n_users": "users", "n_days": "days"})
def generate(context: StageContext, config: GenerateConfig) -> StageResult:
    """Write a synthetic campaign (users, logs, edges, ground truth) as partitioned parquet."""
    campaign = CampaignConfig(**config.model_dump(exclude={"out", "transitions_horizon"}))
    truth = generate_campaign(campaign, config.out, random_state=context.seed)
    outputs = {"campaign": config.out}
    if config.transitions_horizon is not None:
        outputs["transitions"] = write_transitions(truth.world, campaign.n_users, config.transitions_horizon,
                                                   config.out / "transitions", random_state=context.seed)
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
        outputs=outputs,
        data={"campaign_dir": config.out, "truth": truth},
    )

