"""HTEFeatureSelector as a scikit-learn citizen, and selection on a synthetic campaign with known roles."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from causal_fs import HTEFeatureSelector, score_features
from pipelines.synthetic import CampaignConfig, simulate_campaign
from tests.causal_fs.conftest import crossover_sample


def test_fit_transform_support_names_and_clone():
    data = crossover_sample(20_000, seed=9)
    X = data[["noise", "x", "above"]]
    selector = HTEFeatureSelector(random_state=0, n_permutations=99).fit(X, data["reward"], arms=data["arm"])
    assert selector.selected_[:2] in (["x", "above"], ["above", "x"])
    assert "noise" not in selector.selected_
    assert list(selector.get_support()) == [False, True, True]
    assert list(selector.get_feature_names_out()) == ["x", "above"]
    np.testing.assert_array_equal(selector.transform(X), X[["x", "above"]].to_numpy())
    assert set(selector.scores_.columns) >= {"hie", "hdd", "combined", "p_combined", "q_combined"}
    copy = clone(selector)
    assert copy.get_params() == selector.get_params() and not hasattr(copy, "selected_")


def test_too_few_permutations_for_the_feature_count_warns():
    data = crossover_sample(2_000, seed=13)
    X = pd.DataFrame({f"n{i}": np.random.default_rng(i).normal(size=len(data)) for i in range(12)})
    with pytest.warns(UserWarning, match="n_permutations=200 is too few for 12 features at alpha=0.05"):
        HTEFeatureSelector(methods=("hie",), random_state=0).fit(X, data["reward"], arms=data["arm"])


def test_top_k_and_arrays_without_names():
    data = crossover_sample(5_000, seed=10)
    X = data[["noise", "x"]].to_numpy()
    selector = HTEFeatureSelector(methods=("hie",), k=1, n_permutations=0).fit(X, data["reward"], arms=data["arm"])
    assert selector.selected_ == ["x1"]


def test_inside_a_pipeline():
    data = crossover_sample(6_000, seed=12)
    X = data[["noise", "x"]]
    pipeline = Pipeline([("select", HTEFeatureSelector(methods=("hie",), k=1, n_permutations=0)),
                         ("model", LogisticRegression())])
    pipeline.fit(X, data["reward"], select__arms=data["arm"])
    assert pipeline.named_steps["select"].selected_ == ["x"]
    assert pipeline.predict_proba(X).shape == (len(X), 2)


@pytest.fixture(scope="module")
def campaign_logs():
    campaign = simulate_campaign(CampaignConfig(n_users=40_000, n_days=3, avg_degree=0), random_state=21)
    return campaign


def test_synthetic_campaign_roles(campaign_logs):
    """Modifiers rank above prognostic and noise features for HIE; no noise feature is selected at 0.05."""
    truth = campaign_logs.truth
    modifiers = truth.features_with_role("modifier")
    others = truth.features_with_role("prognostic") + truth.features_with_role("noise")
    logs = campaign_logs.logs
    scores = score_features(logs, modifiers + others, propensity_col="propensity", n_permutations=100,
                            random_state=0).to_frame()
    ranking = list(scores.sort_values("hie", ascending=False).index)
    assert set(ranking[:len(modifiers)]) == set(modifiers), ranking
    noise = truth.features_with_role("noise")
    assert (scores.loc[noise, "q_combined"] > 0.05).all()
    assert (scores.loc[modifiers, "q_combined"] <= 0.05).all()
    assert (scores.loc[noise, "q_hie"] > 0.05).all()
