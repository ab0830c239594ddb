"""Invariances of the scores (docs/feature_selection.md, 'Properties the scores satisfy'), as property-based tests:
arm labels, row order, increasing transforms."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from causal_fs import score_features

METHODS = ("hie", "hdd", "kl", "ed", "chi")


@st.composite
def logs(draw):
    n = draw(st.integers(30, 300))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    arms = draw(st.integers(2, 4))
    binary = draw(st.booleans())
    x = rng.normal(size=n).round(draw(st.sampled_from([0, 1, 3])))  # ties and low cardinality included
    x[rng.random(n) < draw(st.sampled_from([0.0, 0.1]))] = np.nan
    if np.isnan(x).all():
        x[0] = 0.0
    reward = (rng.random(n) < 0.4).astype(float) if binary else rng.exponential(size=n)
    return pd.DataFrame({"x": x, "c": rng.choice(["u", "v", "w"], n), "arm": rng.integers(0, arms, n),
                         "reward": reward})


def _scores(data: pd.DataFrame, **kwargs) -> pd.DataFrame:
    return score_features(data, ["x", "c"], methods=METHODS, control=0, random_state=0, **kwargs).to_frame()[
        [*METHODS, "combined"]]


SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(logs(), st.permutations([0, 1, 2, 3]))
def test_relabeling_arms_changes_nothing(data, relabel):
    """Arms renamed (and so reordered) score the same; the control is renamed with them."""
    names = np.array(["zeta", "alpha", "mu", "beta"])[relabel]
    renamed = data.assign(arm=names[data["arm"].to_numpy()])
    expected = _scores(data)
    got = score_features(renamed, ["x", "c"], methods=METHODS, control=names[0], random_state=0).to_frame()
    got = got[expected.columns]
    np.testing.assert_allclose(got.to_numpy(), expected.to_numpy(), rtol=1e-9, atol=1e-12)


@SETTINGS
@given(logs(), st.integers(0, 2**31 - 1))
def test_reordering_rows_changes_nothing(data, seed):
    shuffled = data.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    np.testing.assert_allclose(_scores(shuffled).to_numpy(), _scores(data).to_numpy(), rtol=1e-9, atol=1e-12)


@SETTINGS
@given(logs(), st.sampled_from(["exp", "cube", "affine"]))
def test_increasing_transform_of_a_feature_changes_nothing(data, transform):
    function = {"exp": np.exp, "cube": lambda v: v**3 + v, "affine": lambda v: 3 * v - 11}[transform]
    transformed = data.assign(x=function(data["x"]))
    np.testing.assert_allclose(_scores(transformed).to_numpy(), _scores(data).to_numpy(), rtol=1e-9, atol=1e-12)


@SETTINGS
@given(logs())
def test_hie_is_never_negative_and_nothing_is_nan(data):
    scores = score_features(data, ["x", "c"], methods=(*METHODS, "f", "lr"), control=0, random_state=0).to_frame()
    assert (scores["hie"] >= 0).all()
    assert np.isfinite(scores.select_dtypes("number").to_numpy()).all()
