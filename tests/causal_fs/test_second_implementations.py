"""Against a second implementation: CausalML in compat mode, statsmodels for F/LR, pandas vs Dask, the selector."""

from __future__ import annotations

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

from causal_fs import score_features
from pipelines.execution import Partitions
from tests.causal_fs.conftest import crossover_sample


def _uplift_logs(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5))
    x[:, 3] = rng.integers(0, 2, n)  # binary: one qcut bin in CausalML
    x[:, 4] = np.round(x[:, 4], 1)  # many ties: dropped duplicate edges
    arm = rng.choice(["control", "t1", "t2"], n)
    rate = 0.1 + 0.08 * (arm == "t1") * (x[:, 0] > 0) + 0.04 * (arm == "t2") * np.clip(x[:, 1], -1, 1)
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(5)])
    return frame.assign(treatment_group_key=arm, conversion=(rng.random(n) < rate).astype(int))


@pytest.mark.parametrize("method", ["KL", "ED", "Chi"])
def test_compat_mode_reproduces_causalml(method):
    filters = pytest.importorskip("causalml.feature_selection.filters", reason="causalml comes with the bench extra")
    data = _uplift_logs(20_000, seed=1)
    features = [f"f{i}" for i in range(5)]
    reference = filters.FilterSelect().get_importance(data, features, "conversion", method, n_bins=10)
    reference = reference.set_index("feature")["score"].astype(float)
    ours = score_features(data, features, arm_col="treatment_group_key", reward_col="conversion",
                          methods=(method.lower(),), compat="causalml", random_state=0).to_frame()[method.lower()]
    np.testing.assert_allclose(ours[features].to_numpy(), reference[features].to_numpy(), rtol=1e-10, atol=1e-14)
    assert ours["f3"] == 0.0  # CausalML's single bin for a binary feature, reproduced on purpose


def test_compat_mode_differs_from_default_binning_on_binary_features():
    data = _uplift_logs(20_000, seed=2).assign(flag=lambda d: (d["f0"] > 0).astype(int))
    kw = dict(arm_col="treatment_group_key", reward_col="conversion", methods=("kl",), random_state=0)
    assert score_features(data, ["flag"], compat="causalml", **kw).to_frame().loc["flag", "kl"] == 0.0
    assert score_features(data, ["flag"], **kw).to_frame().loc["flag", "kl"] > 0.001


def test_f_and_lr_equal_statsmodels_on_the_grouped_design():
    """Our F and LR from bin tables equal statsmodels fitted on the rows with x replaced by its bin mean."""
    data = _uplift_logs(8_000, seed=3)
    scores = score_features(data, ["f0"], arm_col="treatment_group_key", reward_col="conversion", methods=("f", "lr"),
                            random_state=0).to_frame()
    bins = pd.qcut(data["f0"], 10, labels=False)  # exact deciles: the same bins as ours for continuous data
    x = data.groupby(bins)["f0"].transform("mean")
    treated = pd.get_dummies(data["treatment_group_key"])[["t1", "t2"]].astype(float)
    reduced = sm.add_constant(pd.concat([treated, x.rename("x")], axis=1))
    full = reduced.assign(t1x=treated["t1"] * x, t2x=treated["t2"] * x)
    y = data["conversion"].astype(float)
    ols = sm.OLS(y, full).fit()
    f_test = ols.f_test(np.eye(full.shape[1])[-2:])
    assert scores.loc["f0", "f"] == pytest.approx(float(f_test.fvalue), rel=1e-8)
    assert scores.loc["f0", "p_f"] == pytest.approx(float(f_test.pvalue), rel=1e-6)
    lr = 2 * (sm.Logit(y, full).fit(disp=0).llf - sm.Logit(y, reduced).fit(disp=0).llf)
    assert scores.loc["f0", "lr"] == pytest.approx(lr, rel=1e-6)


def test_partitions_give_the_pandas_scores():
    data = _uplift_logs(30_000, seed=4).assign(channel=lambda d: np.where(d["f0"] > 1, "app", "web"))
    data.loc[::13, "f2"] = np.nan
    features = ["f0", "f1", "f2", "f3", "channel"]
    kw = dict(arm_col="treatment_group_key", reward_col="conversion", methods=("hie", "hdd", "kl", "f"),
              random_state=3)
    expected = score_features(data, features, **kw).to_frame()
    with dask.config.set(scheduler="synchronous"):
        one = score_features(Partitions(dd.from_pandas(data, npartitions=1)), features, **kw).to_frame()
        many = score_features(Partitions(dd.from_pandas(data, npartitions=6)), features, **kw).to_frame()
    pd.testing.assert_frame_equal(one, expected)
    # Six partitions: the same exact-data bins (the merged sample keeps every value), sums in another order.
    pd.testing.assert_frame_equal(many, expected, rtol=1e-9)


def test_permutations_over_partitions_are_reproducible_on_any_scheduler():
    frame = Partitions(dd.from_pandas(crossover_sample(6_000, seed=5), npartitions=3))
    with dask.config.set(scheduler="synchronous"):
        sequential = score_features(frame, ["x", "noise"], n_permutations=25, random_state=1).to_frame()
    with dask.config.set(scheduler="threads"):
        threaded = score_features(frame, ["x", "noise"], n_permutations=25, random_state=1).to_frame()
    pd.testing.assert_frame_equal(sequential, threaded)
    assert sequential.loc["x", "p_hie"] == pytest.approx(1 / 26)  # shuffles within partitions: still a valid null


def test_f_and_lr_p_values_stay_calibrated_with_unequal_propensities():
    """Noise features, arms logged 70/10/10/10 with propensities: about 5% of p-values below 0.05, LR ~ chi2(3)."""
    rng = np.random.default_rng(0)
    n, count = 20_000, 60
    probabilities = np.array([0.7, 0.1, 0.1, 0.1])
    arm = rng.choice(4, size=n, p=probabilities)
    data = pd.DataFrame(rng.standard_normal((n, count)), columns=[f"x{i}" for i in range(count)])
    data = data.assign(arm=arm, propensity=probabilities[arm], reward=(rng.random(n) < 0.2).astype(float))
    scores = score_features(data, list(data.columns[:count]), methods=("f", "lr"), propensity_col="propensity",
                            random_state=0).to_frame()
    for method in ("f", "lr"):
        assert (scores[f"p_{method}"] < 0.05).mean() < 0.05 + 4 * np.sqrt(0.05 * 0.95 / count)
    assert 1.5 < scores["lr"].median() < 3.5  # chi2 with 3 degrees of freedom: median 2.37


def test_the_compat_bin_edges_are_pandas_qcut_edges_bit_for_bit():
    """`qcut_edges` against `pd.qcut(..., retbins=True, duplicates="drop")` on continuous, discrete, rounded and
    heavy-tailed columns with and without NaN, at several bin counts, and on constant and empty columns."""
    from causal_fs.binning import qcut_edges

    rng = np.random.default_rng(0)
    columns = [np.full(50, 3.0), np.r_[np.full(49, 3.0), 4.0], np.full(5, np.nan), np.r_[np.full(9, np.nan), 1.0]]
    for trial in range(300):
        n = int(rng.integers(20, 3000))
        x = (rng.normal(size=n), rng.integers(0, int(rng.integers(2, 30)), n).astype(float),
             np.round(rng.exponential(size=n), int(rng.integers(0, 4))), rng.standard_t(2, n))[trial % 4]
        if trial % 5 == 0:
            x[rng.random(n) < 0.1] = np.nan
        columns.append(x)
    for index, x in enumerate(columns):
        q = (10, 5, 7, 20)[(index // 4) % 4]
        _, expected = pd.qcut(x, q, retbins=True, duplicates="drop")
        np.testing.assert_array_equal(qcut_edges(x, q), expected, err_msg=f"column {index}, {q} bins")


def test_the_compat_bin_edges_follow_numpy_quantile_with_infinite_values():
    """With +-inf among the values, pandas' edges are numpy's linear quantiles (nan where inf - inf appears): read off
    the sorted column with numpy's own interpolation arithmetic, they are the same bit for bit."""
    from causal_fs.binning import qcut_edges

    rng = np.random.default_rng(1)
    levels = np.linspace(0, 1, 11)
    np.putmask(levels, 10 * levels != np.arange(11), np.nextafter(levels, 1))
    for trial in range(100):
        x = rng.normal(size=int(rng.integers(20, 500)))
        x[:int(rng.integers(1, 5))] = np.inf if trial % 2 else -np.inf
        if trial % 3 == 0:
            x[-1] = np.nan
        with np.errstate(invalid="ignore"):
            expected = np.quantile(x[~np.isnan(x)], levels, method="linear")
            unique = pd.unique(expected)
            expected = unique if len(unique) < len(expected) else expected
            np.testing.assert_array_equal(qcut_edges(x, 10), expected, err_msg=f"trial {trial}")
