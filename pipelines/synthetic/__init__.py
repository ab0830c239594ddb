"""Synthetic campaigns with known answers: feature roles, per-user arm effects, carry-over, graphs, biased logs."""

from pipelines.synthetic.config import DEFAULT_ARMS, CampaignConfig
from pipelines.synthetic.generate import (
    Campaign,
    CampaignPaths,
    CampaignTruth,
    generate_campaign,
    load_truth,
    simulate_campaign,
)
from pipelines.synthetic.world import MODIFIER, NOISE, PROGNOSTIC, CampaignWorld, FeatureSpec

__all__ = [
    "DEFAULT_ARMS", "MODIFIER", "NOISE", "PROGNOSTIC", "Campaign", "CampaignConfig", "CampaignPaths",
    "CampaignTruth", "CampaignWorld", "FeatureSpec", "generate_campaign", "load_truth", "simulate_campaign",
]
