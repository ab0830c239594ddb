"""The estimators' properties (docs/abtest.md, 'The global effect and the bias a design removes'), checked by
simulation with abtest.simulate (Monte Carlo error bounds), and their arithmetic against statsmodels and hand
computations."""

from __future__ import annotations

from functools import cache

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy import stats
from scipy.sparse import csr_matrix

from abtest import (
    assign,
    design_diagnostics,
    difference_in_means,
    exposure_estimate,
    exposure_probabilities,
    exposure_units,
)
from abtest import realized_exposure as realized
from abtest.estimate import network_effect_test
from abtest.simulate import LinearInMeans, planted_partition
from tests.abtest.helpers import cluster_frame, mc_summary

REPS = 200
Z = 4.0  # |mean - expected| < Z Monte Carlo standard errors
SE_RATIO = (0.8, 1.25)  # mean reported SE / Monte Carlo SD
B = 0.5


@cache
def dense():
    """4,000 users in 400 planted communities of 10 (mean degree 7.5, ~2 neighbours outside), no isolated users;
    the planted communities are the clusters (equal sizes)."""
    graph = planted_partition(400, 10, 0.6, 2 / 3990, random_state=5)
    assert (graph.degree > 0).all()
    return graph, cluster_frame(graph, np.arange(graph.n_users) // 10)


@cache
def sparse():
    """2,400 users in 300 planted communities of 8, mean degree 2.8 (72 isolated): exposure probabilities under the
    user design stay large enough for Horvitz-Thompson."""
    graph = planted_partition(300, 8, 0.35, 0.4 / 2400, random_state=2)
    return graph, cluster_frame(graph, np.arange(graph.n_users) // 8)


@cache
def simulate(which: str, design: str, g: float, exposure: bool) -> dict[str, np.ndarray]:
    """Replicated (estimate, se, relative lift) of each estimator: fresh salt and fresh noise per replication.
    Cached: call with positional arguments only, so that equal calls share one simulation."""
    graph, frame = dense() if which == "dense" else sparse()
    model = LinearInMeans(a=1.0, b=B, g=g, noise=1.0)
    rows: dict[str, list] = {}
    probabilities = None
    for r in range(REPS):
        table = assign(frame, salt=f"{which}-{design}-{g}-{r}", design=design)
        z = table["group"].to_numpy()
        y = model.outcomes(graph, z, random_state=1000 + r)
        unit = table["user_id"].to_numpy() if design == "user" else table["cluster"].to_numpy()
        effects = [difference_in_means(y, z, unit)]
        if exposure:
            if probabilities is None or design == "paired":  # the pairing changes with the salt
                probabilities = exposure_probabilities(graph, table, p=0.5, condition="full", design=design)
            e1, e0 = realized(graph, z, condition="full")
            p1, p0 = probabilities["exposure_p1"].to_numpy(), probabilities["exposure_p0"].to_numpy()
            coins = exposure_units(graph, table, design=design)  # as `readout` passes them
            effects += [exposure_estimate(y, e1, e0, p1, p0, unit, kind=kind, exposure_units=coins)
                        for kind in ("horvitz_thompson", "hajek")]
        for effect in effects:
            rows.setdefault(effect.estimator, []).append((effect.estimate, effect.se, effect.relative_lift))
    return {name: np.array(values) for name, values in rows.items()}


def assert_mean(values: np.ndarray, expected: float, slack: float = 0.0) -> None:
    mean, mcse, _ = mc_summary(values)
    assert abs(mean - expected) < Z * mcse + slack, f"mean {mean:.4f} expected {expected:.4f} (MC SE {mcse:.4f})"


def se_ratio(results: np.ndarray) -> float:
    return float(results[:, 1].mean() / results[:, 0].std(ddof=1))


# ---- the designs' and estimators' properties ------------------------------------------------------------------------

@pytest.mark.parametrize("design", ["user", "bernoulli", "paired"])
@pytest.mark.parametrize("estimator", ["difference_in_means", "horvitz_thompson", "hajek"])
def test_without_interference_every_design_and_estimator_is_unbiased(design, estimator):
    results = simulate("sparse", design, 0.0, True)[estimator]
    assert np.isfinite(results[:, 0]).all()
    assert_mean(results[:, 0], B)


@pytest.mark.parametrize("g", [1.0, 2.0])
def test_user_level_difference_in_means_has_bias_minus_g(g):
    graph, _ = dense()
    truth = LinearInMeans(b=B, g=g).global_effect(graph)
    assert truth == pytest.approx(B + g)  # no isolated users
    estimates = simulate("dense", "user", g, False)["difference_in_means"][:, 0]
    assert_mean(estimates - truth, -g)


@pytest.mark.parametrize(("design", "g"), [("bernoulli", 1.0), ("paired", 1.0), ("bernoulli", 2.0)])
def test_cluster_randomized_difference_in_means_recovers_the_same_cluster_share(design, g):
    """E = b + g * c, c the average share of a user's neighbours in their own cluster (diagnostics). The ratio
    estimator's finite-cluster bias is about g (1 - c) / (C - 1) for C equal clusters, allowed as slack."""
    graph, frame = dense()
    share = design_diagnostics(graph, assign(frame, salt="any")).same_cluster_share
    assert 0.6 < share < 0.9  # far enough from 1 that the test tells b + g c from the global effect b + g
    estimates = simulate("dense", design, g, False)["difference_in_means"][:, 0]
    assert_mean(estimates, B + g * share, slack=g * (1 - share) / 399)
    truth = LinearInMeans(b=B, g=g).global_effect(graph)
    assert_mean(estimates - truth, -g * (1 - share), slack=g * (1 - share) / 399)  # the bias left: g (1 - c)


@pytest.mark.parametrize("design", ["bernoulli", "paired"])
@pytest.mark.parametrize("estimator", ["horvitz_thompson", "hajek"])
def test_full_exposure_estimators_are_unbiased_for_the_global_effect(design, estimator):
    """Under linear-in-means a fully exposed user has s = 1 (treated) or 0 (control): the exposure estimators target
    the global effect b + g (b for isolated users) even with interference."""
    graph, _ = sparse()
    truth = LinearInMeans(b=B, g=1.0).global_effect(graph)
    results = simulate("sparse", design, 1.0, True)[estimator]
    assert_mean(results[:, 0], truth)
    # while the difference in means is biased towards b
    dim = simulate("sparse", design, 1.0, True)["difference_in_means"][:, 0]
    assert dim.mean() < truth - 0.05


@pytest.mark.parametrize(("which", "design", "g"), [("dense", "user", 1.0), ("dense", "bernoulli", 1.0),
                                                     ("dense", "paired", 1.0), ("sparse", "user", 0.0),
                                                     ("sparse", "bernoulli", 0.0), ("sparse", "paired", 0.0)])
def test_cluster_robust_se_matches_monte_carlo_sd(which, design, g):
    results = simulate(which, design, g, which == "sparse")
    ratio = se_ratio(results["difference_in_means"])
    assert SE_RATIO[0] < ratio < SE_RATIO[1], ratio
    if which == "sparse":
        ratio = se_ratio(results["hajek"])
        assert SE_RATIO[0] < ratio < SE_RATIO[1], ratio


@pytest.mark.parametrize("which", ["dense", "sparse"])
@pytest.mark.parametrize("design", ["user", "bernoulli", "paired"])
def test_horvitz_thompson_se_is_never_optimistic(which, design):
    """Horvitz-Thompson's SE sums each user into every coin their exposure depends on: conservative (each user's own
    variance is counted once per coin touched), close to the Monte Carlo SD under cluster Bernoulli, where users
    touch few coins."""
    ratio = se_ratio(simulate(which, design, 1.0, True)["horvitz_thompson"])
    assert ratio > 0.9, ratio
    if design == "bernoulli":
        assert ratio < 1.4, ratio


@pytest.mark.parametrize("design", ["bernoulli", "user"])
def test_relative_lift_se_matches_monte_carlo_sd(design):
    results = simulate("dense", design, 1.0, False)["difference_in_means"]
    relative = results[:, 2]
    _, _, sd = mc_summary(relative)
    # the delta-method SE is not stored on Effect: recover it from the relative interval half-width
    graph, frame = dense()
    table = assign(frame, salt="relative", design=design)
    z = table["group"].to_numpy()
    y = LinearInMeans(b=B, g=1.0).outcomes(graph, z, random_state=0)
    unit = table["user_id"].to_numpy() if design == "user" else table["cluster"].to_numpy()
    effect = difference_in_means(y, z, unit)
    quantile = stats.t.ppf(0.975, effect.n_units - 1)
    relative_se = (effect.relative_ci_high - effect.relative_ci_low) / (2 * quantile)
    assert SE_RATIO[0] < relative_se / sd < SE_RATIO[1], relative_se / sd


def test_cuped_reduces_the_standard_error_and_stays_unbiased():
    graph, frame = dense()
    share = design_diagnostics(graph, assign(frame, salt="any")).same_cluster_share
    model = LinearInMeans(a=1.0, b=B, g=1.0, noise=0.0)
    plain, cuped = [], []
    for r in range(150):
        rng = np.random.default_rng(5000 + r)
        table = assign(frame, salt=f"cuped-{r}")
        z, unit = table["group"].to_numpy(), table["cluster"].to_numpy()
        pre = rng.normal(size=graph.n_users)  # the pre-period metric carries most of the outcome's noise
        y = model.outcomes(graph, z, random_state=rng) + 0.9 * pre + 0.45 * rng.normal(size=graph.n_users)
        plain.append(difference_in_means(y, z, unit))
        cuped.append(difference_in_means(y, z, unit, covariate=pre))
    assert all(e.estimator == "cuped" for e in cuped)
    plain_est, cuped_est = np.array([e.estimate for e in plain]), np.array([e.estimate for e in cuped])
    plain_se, cuped_se = np.array([e.se for e in plain]), np.array([e.se for e in cuped])
    assert np.all(cuped_se < 0.8 * plain_se)
    assert cuped_est.std() < 0.8 * plain_est.std()
    assert_mean(cuped_est, B + share, slack=(1 - share) / 399)
    assert SE_RATIO[0] < cuped_se.mean() / cuped_est.std(ddof=1) < SE_RATIO[1]


# ---- the arithmetic ------------------------------------------------------------------------------------------------

@pytest.fixture
def clustered_data():
    rng = np.random.default_rng(0)
    n, k = 500, 45
    unit = rng.integers(0, k, n)
    treated = (rng.random(k) < 0.4)[unit]
    y = 2.0 + 0.3 * treated + rng.normal(size=k)[unit] + rng.normal(size=n)
    return y, treated, unit


def test_difference_in_means_equals_statsmodels_cluster_robust_ols(clustered_data):
    y, treated, unit = clustered_data
    effect = difference_in_means(y, treated, unit)
    fit = sm.OLS(y, sm.add_constant(treated.astype(float))).fit(cov_type="cluster", cov_kwds={"groups": unit},
                                                                 use_t=True)
    assert effect.estimate == pytest.approx(fit.params[1], rel=1e-12)
    assert effect.estimate == pytest.approx(y[treated].mean() - y[~treated].mean(), rel=1e-12)
    assert effect.control_mean == pytest.approx(y[~treated].mean(), rel=1e-12)
    assert effect.se == pytest.approx(fit.bse[1], rel=1e-10)
    assert effect.p_value == pytest.approx(fit.pvalues[1], rel=1e-8)
    low, high = fit.conf_int()[1]
    assert (effect.ci_low, effect.ci_high) == (pytest.approx(low, rel=1e-10), pytest.approx(high, rel=1e-10))
    assert effect.n_units == 45 and effect.n_treatment == treated.sum() and effect.n_control == (~treated).sum()


def test_relative_lift_delta_method_by_hand(clustered_data):
    y, treated, unit = clustered_data
    effect = difference_in_means(y, treated, unit, alpha=0.1)
    fit = sm.OLS(y, sm.add_constant(treated.astype(float))).fit(cov_type="cluster", cov_kwds={"groups": unit})
    m0, d = fit.params
    cov = fit.cov_params()
    assert effect.relative_lift == pytest.approx(d / m0, rel=1e-12)
    gradient = np.array([-d / m0 ** 2, 1 / m0])  # of d / m0 with respect to (m0, d)
    se = np.sqrt(gradient @ cov @ gradient)
    quantile = stats.t.ppf(0.95, 44)
    assert effect.relative_ci_low == pytest.approx(d / m0 - quantile * se, rel=1e-9)
    assert effect.relative_ci_high == pytest.approx(d / m0 + quantile * se, rel=1e-9)
    # the same by the ratio of arm means: (m1 / m0 - 1), gradient (-m1 / m0^2, 1 / m0) on (m0, m1)
    m1 = m0 + d
    to_means = np.array([[1.0, 0.0], [1.0, 1.0]])
    cov_means = to_means @ cov @ to_means.T
    gradient = np.array([-m1 / m0 ** 2, 1 / m0])
    assert np.sqrt(gradient @ cov_means @ gradient) == pytest.approx(se, rel=1e-9)


def test_cuped_equals_regression_adjusted_difference(clustered_data):
    y, treated, unit = clustered_data
    rng = np.random.default_rng(1)
    x = y + rng.normal(size=len(y))
    effect = difference_in_means(y, treated, unit, covariate=x)
    theta = np.cov(x, y)[0, 1] / np.var(x, ddof=1)  # the least-squares slope of y on x
    adjusted = y - theta * (x - x.mean())
    assert effect.estimate == pytest.approx(adjusted[treated].mean() - adjusted[~treated].mean(), rel=1e-10)
    fit = sm.OLS(adjusted, sm.add_constant(treated.astype(float))).fit(cov_type="cluster", cov_kwds={"groups": unit})
    assert effect.se == pytest.approx(fit.bse[1], rel=1e-10)


def test_cuped_theta_is_the_least_squares_slope_at_small_n():
    rng = np.random.default_rng(0)
    n = 20
    x = rng.normal(size=n)
    treated = np.arange(n) < 10
    x[treated] += 1.0  # a chance imbalance in the pre-period metric, which CUPED corrects
    y = x + 0.1 * rng.normal(size=n)
    effect = difference_in_means(y, treated, np.arange(n), covariate=x)
    theta = np.polyfit(x, y, 1)[0]
    adjusted = y - theta * (x - x.mean())
    assert effect.estimate == pytest.approx(adjusted[treated].mean() - adjusted[~treated].mean(), abs=1e-9)


def test_exposure_estimators_by_hand():
    y = np.array([3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0])
    e1 = np.array([1, 1, 0, 0, 0, 1, 0, 0], dtype=bool)
    e0 = np.array([0, 0, 1, 1, 0, 0, 1, 0], dtype=bool)
    p1 = np.array([0.5, 0.25, 0.5, 0.125, 0.5, 0.25, 0.25, 0.0])  # the last user is never eligible
    p0 = np.array([0.5, 0.25, 0.5, 0.5, 0.5, 0.25, 0.5, 0.5])
    unit = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    n = 7
    ht = exposure_estimate(y, e1, e0, p1, p0, unit, kind="horvitz_thompson")
    assert ht.estimate == pytest.approx((3 / 0.5 + 1 / 0.25 + 9 / 0.25) / n - (4 / 0.5 + 1 / 0.5 + 2 / 0.5) / n)
    hajek = exposure_estimate(y, e1, e0, p1, p0, unit, kind="hajek")
    mean1 = (3 / 0.5 + 1 / 0.25 + 9 / 0.25) / (1 / 0.5 + 1 / 0.25 + 1 / 0.25)
    mean0 = (4 / 0.5 + 1 / 0.5 + 2 / 0.5) / (3 / 0.5)
    assert hajek.estimate == pytest.approx(mean1 - mean0)
    assert hajek.control_mean == pytest.approx(mean0)
    assert hajek.relative_lift == pytest.approx((mean1 - mean0) / mean0)
    assert (hajek.n_treatment, hajek.n_control, hajek.n_units) == (3, 3, 4)
    # Hajek SE from the linearization summed per unit, with the G / (G - 1) factor
    w1, w0 = np.where(e1, 1 / np.where(p1 > 0, p1, 1), 0), np.where(e0, 1 / p0, 0)
    influence = w1 * (y - mean1) / w1.sum() - w0 * (y - mean0) / w0.sum()
    totals = np.bincount(unit, influence)
    assert hajek.se == pytest.approx(np.sqrt(totals @ totals * 4 / 3))
    # Horvitz-Thompson with exposure_units: each user's centred term summed into every coin their exposure depends
    # on (users 2 and 5 also touch coin 0), over the coins eligible users touch (all 4), G / (G - 1) factor
    coins = np.zeros((8, 4))
    coins[np.arange(8), unit] = 1
    coins[2, 0] = coins[5, 0] = 1
    touched = exposure_estimate(y, e1, e0, p1, p0, unit, kind="horvitz_thompson",
                                exposure_units=csr_matrix(coins))
    assert touched.estimate == ht.estimate and touched.n_units == 4
    term = (w1 - w0) * y / n
    term[:7] -= term[:7].mean()
    term[7] = 0.0  # not eligible
    per_coin = coins.T @ term
    assert touched.se == pytest.approx(np.sqrt(per_coin @ per_coin * 4 / 3))
    with pytest.raises(ValueError, match="exposure_units: need a sparse matrix with one row per user"):
        exposure_estimate(y, e1, e0, p1, p0, unit, kind="horvitz_thompson", exposure_units=coins)


def test_empty_arm_gives_nan_with_a_note():
    y = np.arange(6.0)
    effect = difference_in_means(y, np.ones(6, dtype=bool), np.arange(6) // 2)
    assert np.isnan([effect.estimate, effect.se, effect.p_value, effect.ci_low, effect.relative_lift]).all()
    assert "no users" in effect.note and effect.n_control == 0 and effect.n_units == 3
    none_exposed = exposure_estimate(y, np.zeros(6, bool), np.ones(6, bool), np.full(6, 0.5), np.full(6, 0.5),
                                     np.arange(6) // 2)
    assert np.isnan(none_exposed.estimate) and "exposed" in none_exposed.note
    ok = difference_in_means(y, np.arange(6) % 2 == 0, np.arange(6) // 2)
    assert ok.note == "" and np.isfinite(ok.estimate)


def test_single_unit_gives_nan_se_not_an_exception():
    effect = difference_in_means(np.array([1.0, 2.0, 3.0, 5.0]), np.array([1, 0, 1, 0]), np.zeros(4))
    assert effect.estimate == pytest.approx(-1.5)
    assert np.isnan(effect.se) and np.isnan(effect.p_value) and effect.n_units == 1


def test_network_effect_test_combines_the_two_arms():
    rng = np.random.default_rng(3)
    n = 800
    cluster = np.arange(n) // 8
    design = np.where(cluster % 2 == 0, "user", "cluster")
    treated = np.where(design == "user", rng.random(n) < 0.5, (rng.random(100) < 0.5)[cluster])
    y = rng.normal(size=n) + 0.2 * treated + 0.5 * treated * (design == "cluster")
    result = network_effect_test(y, treated, cluster, design)
    users, clusters = design == "user", design == "cluster"
    by_user = difference_in_means(y[users], treated[users], np.flatnonzero(users))
    by_cluster = difference_in_means(y[clusters], treated[clusters], cluster[clusters])
    assert result.user_randomized.estimate == pytest.approx(by_user.estimate)
    assert result.user_randomized.se == pytest.approx(by_user.se)
    assert result.cluster_randomized.se == pytest.approx(by_cluster.se)
    assert result.difference == pytest.approx(by_cluster.estimate - by_user.estimate)
    assert result.se == pytest.approx(np.hypot(by_user.se, by_cluster.se))
    assert result.p_value == pytest.approx(2 * stats.norm.sf(abs(result.difference / result.se)))
    assert result.user_randomized.estimator == "user_randomized"
    assert result.cluster_randomized.estimator == "cluster_randomized"


def test_alpha_sets_the_interval_width(clustered_data):
    y, treated, unit = clustered_data
    wide, narrow = difference_in_means(y, treated, unit, alpha=0.01), difference_in_means(y, treated, unit, alpha=0.2)
    ratio = (wide.ci_high - wide.ci_low) / (narrow.ci_high - narrow.ci_low)
    assert ratio == pytest.approx(stats.t.ppf(0.995, 44) / stats.t.ppf(0.9, 44))


def test_simulation_frames_are_what_the_tests_assume():
    graph, frame = dense()
    assert isinstance(frame, pd.DataFrame) and frame["cluster"].nunique() == 400
    assert np.bincount(frame["cluster"]).min() == 10
