"""The Open Bandit Dataset small sample, read straight out of the obp wheel (Saito et al. 2021; ZOZO, CC BY 4.0).

`make test` fetches the wheel into .cache/wheels first; without it these tests fail (they do not skip), so a CI
that lost the wheel is noticed.
"""

from __future__ import annotations

import numpy as np
import pytest

from bandits import evaluate, on_policy_value
from bandits.datasets import bts_position_probabilities, open_bandit_feedback, position_target_probabilities
from pipelines.errors import InputError
from pipelines.open_bandit import find_obp_wheel, read_bts_prior, read_open_bandit

ITEMS = {"all": 80, "men": 34, "women": 46}


@pytest.fixture(scope="module")
def campaigns() -> dict:
    """(logs, item_context) of both logging policies and all three campaigns, read once."""
    wheel = find_obp_wheel()
    return {(policy, campaign): read_open_bandit(policy, campaign, wheel=wheel)
            for policy in ("random", "bts") for campaign in ITEMS}


@pytest.mark.parametrize("campaign", sorted(ITEMS))
@pytest.mark.parametrize("policy", ["random", "bts"])
def test_every_campaign_loads_as_logged_feedback(campaigns, policy, campaign):
    logs, items = campaigns[policy, campaign]
    assert len(logs) == 10_000
    assert len(items) == ITEMS[campaign]
    assert {"item_id", "position", "click", "propensity_score"} <= set(logs.columns)
    feedback, positions = open_bandit_feedback(logs, n_items=len(items))
    assert feedback.n_rounds == 10_000 and feedback.n_arms == ITEMS[campaign]
    assert set(np.unique(positions)) == {0, 1, 2}
    assert set(np.unique(feedback.rewards)) == {0.0, 1.0}
    assert 0 < feedback.rewards.mean() < 0.02  # a click-through rate
    if policy == "random":  # uniform over the campaign's items at each position
        np.testing.assert_allclose(feedback.propensities, 1 / ITEMS[campaign], rtol=1e-6)


@pytest.mark.parametrize("campaign", sorted(ITEMS))
def test_bts_prior_has_one_beta_per_item(campaign):
    alpha, beta = read_bts_prior(campaign)
    assert alpha.shape == beta.shape == (ITEMS[campaign],)
    assert (alpha > 0).all() and (beta > 0).all()
    probabilities = bts_position_probabilities(alpha, beta, n_draws=20_000)
    assert probabilities.shape == (ITEMS[campaign], 3)
    np.testing.assert_allclose(probabilities.sum(axis=0), 1.0, atol=1e-12)


@pytest.mark.parametrize("campaign", sorted(ITEMS))
def test_bts_click_rate_estimated_from_random_logs_matches_its_own_logs(campaigns, campaign):
    """The classic real-data check: OPE of BTS (production prior) on the random logs vs BTS's on-policy rate."""
    logs, items = campaigns["random", campaign]
    feedback, positions = open_bandit_feedback(logs, n_items=len(items))
    alpha, beta = read_bts_prior(campaign)
    target = position_target_probabilities(bts_position_probabilities(alpha, beta), positions)
    table = evaluate(feedback, target, estimators=("ips", "snips", "dr")).set_index("estimator")
    bts_logs, _ = campaigns["bts", campaign]
    on_policy = on_policy_value(bts_logs["click"].to_numpy(dtype=float)).iloc[0]
    for name in ("ips", "snips", "dr"):
        combined = np.hypot(table.loc[name, "se"], on_policy["se"])
        assert abs(table.loc[name, "value"] - on_policy["value"]) < 4 * combined, (name, table.loc[name, "value"],
                                                                                 on_policy["value"], combined)
    assert table.loc["ips", "ess_share"] > 0.1


def test_a_missing_wheel_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match=r"obp wheel: .* does not exist; fetch it with: pip download obp==0.4.1"):
        find_obp_wheel(tmp_path / "obp-0.4.1-py3-none-any.whl")
    with pytest.raises(InputError, match=r"campaign: 'kids' is not one of"):
        read_open_bandit("random", "kids")
