"""Policies: the probabilities they report are the ones they sample with, batch = partitions for linear policies,
scikit-learn conventions (clone, fit forgets, partial_fit accumulates), and second implementations of the formulas."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import integrate
from scipy.stats import beta as beta_distribution
from scipy.stats import norm
from sklearn.base import clone

from bandits import (
    UCB1,
    EpsilonGreedy,
    LinearStats,
    LinEpsilonGreedy,
    LinTS,
    LinUCB,
    LoggedFeedback,
    NeuralTS,
    ThompsonSampling,
)
from bandits.datasets import SyntheticBandit
from bandits.policies.base import sample_from

from .conftest import chi_square_p

FACTORIES = {
    "EpsilonGreedy": lambda: EpsilonGreedy(epsilon=0.2),
    "UCB1": lambda: UCB1(alpha=0.5),
    "ThompsonSampling": lambda: ThompsonSampling(n_draws=4_000, random_state=3),
    "LinUCB": lambda: LinUCB(alpha=0.5),
    "LinTS": lambda: LinTS(alpha=0.5, n_draws=200, random_state=3),
    "LinEpsilonGreedy": lambda: LinEpsilonGreedy(epsilon=0.2),
    "NeuralTS": lambda: NeuralTS(hidden=(8,), epochs=2, n_draws=200, random_state=3),
}
LINEAR = {"LinUCB": LinUCB, "LinTS": LinTS, "LinEpsilonGreedy": LinEpsilonGreedy}


def concatenate(first: LoggedFeedback, second: LoggedFeedback) -> LoggedFeedback:
    return LoggedFeedback(np.vstack([first.contexts, second.contexts]), np.concatenate([first.arms, second.arms]),
                          np.concatenate([first.rewards, second.rewards]),
                          np.concatenate([first.propensities, second.propensities]), first.arm_labels,
                          first.feature_names)


# ----------------------------------------------------------------------------------------------- batch = partitions
@pytest.mark.parametrize("weight_by_propensity", [False, True])
@pytest.mark.parametrize("name", sorted(LINEAR))
def test_linear_batch_fit_equals_partitions_and_merged_statistics(logs, env, name, weight_by_propensity):
    feedback, _ = logs
    make = lambda: LINEAR[name](weight_by_propensity=weight_by_propensity)
    batch = make().fit(feedback)
    # uneven partitions, one of them a single row, in the order a Dask map would see them
    parts = np.split(np.arange(feedback.n_rounds), [1, 300, 301, 1_200, 1_750])
    incremental = make()
    for rows in parts:
        assert incremental.partial_fit(feedback.subset(rows)) is incremental
    statistics = []
    for rows in parts:
        weights = 1.0 / (feedback.n_arms * feedback.propensities[rows]) if weight_by_propensity else None
        statistics.append(LinearStats.partial(feedback.contexts[rows], feedback.arms[rows], feedback.rewards[rows],
                                              feedback.n_arms, weights=weights))
    merged = (statistics[0] + statistics[1]).merge(statistics[2] + statistics[3]) + (statistics[4] + statistics[5])
    from_statistics = make().fit_statistics(merged, feedback.arm_labels, feedback.feature_names)
    X = env.contexts(300, random_state=5)
    for other in (incremental, from_statistics):
        np.testing.assert_allclose(other.theta_, batch.theta_, rtol=0, atol=1e-10)
        np.testing.assert_allclose(other.action_probabilities(X), batch.action_probabilities(X), rtol=0, atol=1e-10)
    # the weights did something (the test would not notice them being ignored otherwise)
    unweighted = LINEAR[name](weight_by_propensity=not weight_by_propensity).fit(feedback)
    assert np.abs(unweighted.theta_ - batch.theta_).max() > 1e-3


def test_linear_coefficients_are_the_weighted_ridge_solution(logs):
    """Second implementation: theta_k = (l2 I + Z_k' W Z_k)^-1 Z_k' W y_k with Z = [1, X] and W = 1/(K p)."""
    feedback, _ = logs
    policy = LinUCB(l2=2.5, weight_by_propensity=True).fit(feedback)
    Z = np.hstack([np.ones((feedback.n_rounds, 1)), feedback.contexts])
    for k in range(feedback.n_arms):
        rows = feedback.arms == k
        w = 1.0 / (feedback.n_arms * feedback.propensities[rows])
        A = 2.5 * np.eye(Z.shape[1]) + Z[rows].T @ (w[:, None] * Z[rows])
        np.testing.assert_allclose(policy.theta_[k], np.linalg.solve(A, Z[rows].T @ (w * feedback.rewards[rows])),
                                   rtol=0, atol=1e-10)


def test_linucb_upper_bounds_match_the_textbook_formula(logs, env):
    feedback, _ = logs
    policy = LinUCB(alpha=0.7, l2=1.5, fit_intercept=False).fit(feedback)
    X = env.contexts(50, random_state=2)
    expected = np.empty((50, feedback.n_arms))
    for k in range(feedback.n_arms):
        rows = feedback.arms == k
        A_inverse = np.linalg.inv(1.5 * np.eye(X.shape[1]) + feedback.contexts[rows].T @ feedback.contexts[rows])
        theta = A_inverse @ feedback.contexts[rows].T @ feedback.rewards[rows]
        expected[:, k] = X @ theta + 0.7 * np.sqrt(np.einsum("ij,jk,ik->i", X, A_inverse, X))
    np.testing.assert_allclose(policy.upper_bounds(X), expected, rtol=0, atol=1e-10)
    best = np.eye(feedback.n_arms)[expected.argmax(axis=1)]
    np.testing.assert_array_equal(policy.action_probabilities(X), best)


def test_lints_two_arm_probabilities_match_the_normal_closed_form(logs, env):
    """P(arm 0 wins) = Phi((m0 - m1) / sqrt(s0^2 + s1^2)) for two independent normal draws."""
    feedback, _ = logs
    two = feedback.subset(feedback.arms < 2)
    two = LoggedFeedback(two.contexts, two.arms, two.rewards, two.propensities, feedback.arm_labels[:2])
    two = two.subset(slice(0, 60))
    policy = LinTS(alpha=3.0, n_draws=40_000, random_state=1).fit(two)
    X = env.contexts(6, random_state=8)
    Z, Z_new = (np.hstack([np.ones((len(x), 1)), x]) for x in (two.contexts, X))
    mean, width = np.empty((6, 2)), np.empty((6, 2))
    for k in range(2):
        rows = two.arms == k
        A_inverse = np.linalg.inv(np.eye(Z.shape[1]) + Z[rows].T @ Z[rows])
        mean[:, k] = Z_new @ (A_inverse @ Z[rows].T @ two.rewards[rows])
        width[:, k] = np.sqrt(np.einsum("ij,jk,ik->i", Z_new, A_inverse, Z_new))
    exact = norm.cdf((mean[:, 0] - mean[:, 1]) / (3.0 * np.hypot(width[:, 0], width[:, 1])))
    got = policy.action_probabilities(X)[:, 0]
    assert ((0.05 < exact) & (exact < 0.95)).sum() >= 3, exact  # rows where the draw is a real contest
    np.testing.assert_allclose(got, exact, atol=4 * np.sqrt(0.25 / 40_000) + 1e-3)


@pytest.mark.parametrize(("successes", "pulls"), [((4, 6), (10, 12)), ((1, 1), (1, 1)), ((30, 2), (60, 3))])
def test_thompson_sampling_two_arms_matches_exact_probability(successes, pulls):
    """P(Beta(a0, b0) > Beta(a1, b1)) = integral of f0(x) F1(x) dx, by numerical integration."""
    arms = np.repeat([0, 1], pulls)
    rewards = np.concatenate([np.arange(pulls[k]) < successes[k] for k in range(2)]).astype(float)
    feedback = LoggedFeedback(np.zeros((len(arms), 1)), arms, rewards, None, ("a", "b"))
    n_draws = 50_000
    policy = ThompsonSampling(prior_alpha=1.0, prior_beta=2.0, n_draws=n_draws, random_state=9).fit(feedback)
    alpha, beta = policy.posterior()
    np.testing.assert_allclose(alpha, 1.0 + np.bincount(arms, weights=rewards, minlength=2))
    exact = integrate.quad(lambda x: beta_distribution.pdf(x, alpha[0], beta[0]) *
                           beta_distribution.cdf(x, alpha[1], beta[1]), 0, 1, epsabs=1e-12)[0]
    got = policy.action_probabilities(np.zeros((3, 1)))
    np.testing.assert_array_equal(got[0], got[2])
    assert abs(got[0, 0] - exact) < 4 * np.sqrt(exact * (1 - exact) / n_draws) + 1e-9
    assert got[0, 0] + got[0, 1] == pytest.approx(1.0)


def test_context_free_probabilities_follow_their_formulas():
    arms = np.array([0, 0, 0, 1, 1, 2])
    rewards = np.array([1.0, 1.0, 0.0, 1.0, 0.0, 0.0])
    feedback = LoggedFeedback(np.zeros((6, 1)), arms, rewards, None, ("a", "b", "c", "never pulled"))
    greedy = EpsilonGreedy(epsilon=0.2).fit(feedback)
    np.testing.assert_allclose(greedy.mean_rewards()[:3], [2 / 3, 1 / 2, 0.0])
    # the never-pulled arm counts as best (+inf mean), so it is tried first
    np.testing.assert_allclose(greedy.action_probabilities(np.zeros((1, 1)))[0], [0.05, 0.05, 0.05, 0.85])
    pulled = feedback.subset(slice(None))
    pulled = LoggedFeedback(pulled.contexts, pulled.arms, pulled.rewards, None, ("a", "b", "c"))
    np.testing.assert_allclose(EpsilonGreedy(epsilon=0.3).fit(pulled).action_probabilities(np.zeros((2, 1))),
                               [[0.8, 0.1, 0.1]] * 2)
    ucb = UCB1(alpha=0.5).fit(pulled)
    bounds = np.array([2 / 3, 1 / 2, 0.0]) + 0.5 * np.sqrt(2 * np.log(6) / np.array([3, 2, 1]))
    np.testing.assert_allclose(ucb.upper_bounds(), bounds, rtol=1e-12)
    np.testing.assert_array_equal(ucb.action_probabilities(np.zeros((1, 1)))[0], np.eye(3)[bounds.argmax()])


# --------------------------------------------------------------------------------------------- sampled = reported
def _chi_square_case(name: str, feedback: LoggedFeedback) -> tuple:
    """A fitted policy of the class and a context row where it gives at least two arms a positive probability."""
    x = feedback.contexts[7]
    if name == "UCB1":  # three arms tie exactly (same pulls, same rewards); the fourth is worse
        tie = LoggedFeedback(np.zeros((8, feedback.n_features)), np.array([0, 0, 1, 1, 2, 2, 3, 3]),
                             np.array([1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0]), None, feedback.arm_labels,
                             feedback.feature_names)
        return UCB1().fit(tie), x
    if name == "LinUCB":  # only arm 0 logged, all zero rewards: arms 1..3 have identical models, so they tie
        only_first = feedback.subset(feedback.arms == 0)
        only_first = LoggedFeedback(only_first.contexts, only_first.arms, np.zeros(only_first.n_rounds), None,
                                    feedback.arm_labels, feedback.feature_names)
        return LinUCB(alpha=1.0).fit(only_first), x
    if name == "ThompsonSampling":
        return ThompsonSampling(n_draws=10_000, random_state=4).fit(feedback.subset(slice(0, 40))), x
    if name == "LinTS":
        return LinTS(alpha=2.0, n_draws=500, random_state=4).fit(feedback.subset(slice(0, 80))), x
    if name == "NeuralTS":
        return NeuralTS(hidden=(8,), epochs=1, alpha=3.0, n_draws=200, random_state=4).fit(
            feedback.subset(slice(0, 200))), x
    return FACTORIES[name]().fit(feedback), x


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_sampled_arm_frequencies_match_the_action_probabilities(logs, name):
    feedback, _ = logs
    policy, x = _chi_square_case(name, feedback)
    probabilities = policy.action_probabilities(x[None, :])[0]
    assert (probabilities > 0).sum() >= 2, f"degenerate case, the test would prove nothing: {probabilities}"
    draws = 20_000
    arms, propensities = policy.sample(np.repeat(x[None, :], draws, axis=0), random_state=2024)
    codes = np.array([list(policy.arms_).index(label) for label in arms])
    np.testing.assert_array_equal(propensities, probabilities[codes])  # the logged propensity is the arm's chance
    assert chi_square_p(codes, probabilities) > 1e-3
    same_codes, same_propensities = policy.sample_codes(np.repeat(x[None, :], draws, axis=0), random_state=2024)
    np.testing.assert_array_equal(same_codes, codes)
    np.testing.assert_array_equal(same_propensities, propensities)


def test_the_chi_square_check_detects_a_wrong_distribution(logs):
    """Negative control: the same draws tested against slightly wrong probabilities, and draws from another law."""
    feedback, _ = logs
    policy = EpsilonGreedy(epsilon=0.4).fit(feedback)
    probabilities = policy.action_probabilities(feedback.contexts[:1])[0]
    codes, _ = policy.sample_codes(np.repeat(feedback.contexts[:1], 20_000, axis=0), random_state=2024)
    assert chi_square_p(codes, probabilities) > 1e-3
    shifted = probabilities + np.array([0.03, -0.03, 0.0, 0.0])
    assert chi_square_p(codes, shifted) < 1e-3
    uniform = sample_from(np.full((20_000, 4), 0.25), random_state=2024)
    assert chi_square_p(uniform, probabilities) < 1e-3


def test_sampling_is_reproducible_with_a_seed_and_varies_without(logs):
    feedback, _ = logs
    policy = LinEpsilonGreedy(epsilon=0.5).fit(feedback)
    first, _ = policy.sample(feedback.contexts, random_state=5)
    np.testing.assert_array_equal(policy.sample(feedback.contexts, random_state=5)[0], first)
    assert (policy.sample(feedback.contexts, random_state=6)[0] != first).any()
    assert set(first) <= set(feedback.arm_labels)


# ----------------------------------------------------------------------------------------------- sklearn conventions
@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_clone_fit_returns_self_and_fit_forgets(logs, env, name):
    feedback, _ = logs
    first, second = feedback.subset(slice(0, 700)), feedback.subset(slice(700, 1_500))
    policy = FACTORIES[name]()
    copy = clone(policy)
    assert type(copy) is type(policy) and copy.get_params() == policy.get_params()
    assert policy.fit(first) is policy
    assert not hasattr(clone(policy), "arms_")  # a clone of a fitted policy is unfitted
    X = env.contexts(40, random_state=1)
    policy.action_probabilities(X)  # fill any cache before refitting
    refitted = policy.fit(second).action_probabilities(X)
    once = FACTORIES[name]().fit(second).action_probabilities(X)
    np.testing.assert_allclose(refitted, once, rtol=0, atol=1e-12)
    np.testing.assert_allclose(clone(policy).fit(second).action_probabilities(X), once, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", sorted(set(FACTORIES) - {"NeuralTS"}))
def test_partial_fit_accumulates(logs, env, name):
    feedback, _ = logs
    first, second = feedback.subset(slice(0, 900)), feedback.subset(slice(900, None))
    X = env.contexts(40, random_state=1)
    policy = FACTORIES[name]().fit(first)
    policy.action_probabilities(X)
    assert policy.partial_fit(second) is policy
    together = FACTORIES[name]().fit(concatenate(first, second))
    np.testing.assert_allclose(policy.action_probabilities(X), together.action_probabilities(X), rtol=0, atol=1e-10)
    state = "theta_" if name in LINEAR else "pulls_"
    np.testing.assert_allclose(getattr(policy, state), getattr(together, state), rtol=1e-12, atol=1e-10)
    assert np.abs(getattr(FACTORIES[name]().fit(second), state) - getattr(together, state)).max() > 1e-6


def test_neural_partial_fit_accumulates_its_buffer(logs, env):
    feedback, _ = logs
    policy = FACTORIES["NeuralTS"]().fit(feedback.subset(slice(0, 500)))
    policy.partial_fit(feedback.subset(slice(500, 800)))
    assert len(policy.buffer_[0]) == 800
    np.testing.assert_array_equal(policy.buffer_[1], feedback.arms[:800])
    X = env.contexts(40, random_state=1)
    fresh = FACTORIES["NeuralTS"]().fit(feedback.subset(slice(500, 800)))
    assert not np.allclose(policy.expected_rewards(X), fresh.expected_rewards(X))
    small = NeuralTS(hidden=(4,), epochs=1, max_buffer=100).fit(feedback.subset(slice(0, 500)))
    small.partial_fit(feedback.subset(slice(500, 650)))
    np.testing.assert_array_equal(small.buffer_[2], feedback.rewards[550:650])  # keeps the most recent rows


def test_fixed_arm_order_maps_the_logged_arms(logs, env):
    """A policy told its arms in another order learns the same per-arm models, in its own column order."""
    feedback, _ = logs
    order = list(reversed(feedback.arm_labels))
    reordered = LinUCB(arms=order).fit(feedback)
    plain = LinUCB().fit(feedback)
    assert list(reordered.arms_) == order
    np.testing.assert_allclose(reordered.theta_, plain.theta_[::-1], rtol=0, atol=1e-12)
    X = env.contexts(20, random_state=3)
    np.testing.assert_allclose(reordered.action_probabilities(X), plain.action_probabilities(X)[:, ::-1])
    # an extra arm never logged is allowed and stays at the prior
    extra = EpsilonGreedy(arms=[*feedback.arm_labels, "new"]).fit(feedback)
    assert extra.pulls_[-1] == 0 and extra.action_probabilities(X[:1])[0, -1] > 0.5


def test_neural_ts_is_reproducible_and_picklable(logs, env):
    feedback, _ = logs
    X = env.contexts(100, random_state=4)
    make = lambda seed: NeuralTS(hidden=(16, 8), epochs=3, n_draws=200, random_state=seed)
    torch.manual_seed(1)  # the global torch state must not matter, only random_state
    first = make(7).fit(feedback).action_probabilities(X)
    torch.manual_seed(2)
    np.random.seed(2)
    again = make(7).fit(feedback)
    np.testing.assert_array_equal(again.action_probabilities(X), first)
    assert not np.array_equal(make(8).fit(feedback).action_probabilities(X), first)
    restored = pickle.loads(pickle.dumps(again))
    np.testing.assert_array_equal(restored.action_probabilities(X), first)
    np.testing.assert_array_equal(restored.expected_rewards(X), again.expected_rewards(X))
    # training goes on after unpickling
    restored.partial_fit(feedback.subset(slice(0, 100)))
    assert len(restored.buffer_[0]) == feedback.n_rounds + 100


# ----------------------------------------------------------------------------------------------- they learn
def test_neural_ts_beats_uniform_on_the_nonlinear_environment():
    env = SyntheticBandit(reward="nonlinear", seed=0)
    feedback, _ = env.logged_feedback(3_000, random_state=1)
    X = env.contexts(5_000, random_state=2)
    policy = NeuralTS(hidden=(32, 16), epochs=10, alpha=0.1, random_state=0).fit(feedback)
    uniform = env.policy_value(np.full((len(X), env.n_arms), 1 / env.n_arms), X)
    value = env.policy_value(policy.action_probabilities(X), X)
    assert value > uniform + 0.1, (value, uniform)


def test_linucb_beats_uniform_on_the_linear_environment():
    env = SyntheticBandit(reward="linear", seed=0)
    feedback, _ = env.logged_feedback(3_000, random_state=1)
    X = env.contexts(5_000, random_state=2)
    policy = LinUCB(alpha=0.1).fit(feedback)
    uniform = env.policy_value(np.full((len(X), env.n_arms), 1 / env.n_arms), X)
    best = env.expected_rewards(X).max(axis=1).mean()
    value = env.policy_value(policy.action_probabilities(X), X)
    assert value > uniform + 0.1 and value > best - 0.03, (value, uniform, best)


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_no_rows_to_score_gives_no_probabilities(logs, name):
    feedback, _ = logs
    policy = FACTORIES[name]().fit(feedback.subset(slice(0, 300)))
    assert policy.action_probabilities(np.empty((0, feedback.n_features))).shape == (0, feedback.n_arms)
    arms, propensities = policy.sample(np.empty((0, feedback.n_features)), random_state=0)
    assert arms.shape == propensities.shape == (0,)


# ----------------------------------------------------------------------------------------------- invariants
@pytest.fixture(scope="module")
def fitted(logs) -> dict:
    feedback, _ = logs
    return {name: make().fit(feedback.subset(slice(0, 600))) for name, make in FACTORIES.items()}


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(hnp.arrays(np.float64, st.tuples(st.integers(1, 20), st.just(5)),
                  elements=st.floats(allow_nan=False, allow_infinity=False, width=64)))
def test_action_probabilities_are_distributions_for_any_finite_contexts(fitted, X):
    for name, policy in fitted.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # overflow on extreme contexts is fine, NaN is not
            probabilities = policy.action_probabilities(X)
        assert probabilities.shape == (len(X), 4), name
        assert np.isfinite(probabilities).all(), name
        assert ((probabilities >= 0) & (probabilities <= 1)).all(), name
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-9, err_msg=name)


@pytest.mark.parametrize("n_features, n_arms, alpha", [(20, 10, 1.0), (5, 3, 0.3), (1, 2, 2.0), (40, 5, 0.0),
                                                      (130, 3, 1.0)])
def test_linucb_probabilities_and_widths_are_the_numpy_forms_bit_for_bit(n_features, n_arms, alpha):
    """The compiled pass (widths in numpy's pairwise order, scores, tie split) gives exactly what the numpy form
    gives: sqrt((Z F)^2 summed per arm), then one-hot of the largest mean + alpha width with ties split; models
    wider than numpy's pairwise block (129 design columns here) keep the numpy form."""
    from bandits.policies.base import argmax_probabilities
    from bandits.policies.linear import design

    rng = np.random.default_rng(n_features)
    n = 5_000
    X = rng.normal(size=(n, n_features))
    arms = rng.integers(0, n_arms, n)
    feedback = LoggedFeedback(X, arms, (rng.random(n) < 0.3).astype(float), np.full(n, 1.0 / n_arms),
                              tuple(range(n_arms)))
    policy = LinUCB(alpha=alpha).fit(feedback)
    Z = design(X, True)
    projected = Z @ policy._stacked_factors
    width = np.sqrt((projected * projected).reshape(n, n_arms, Z.shape[1]).sum(axis=2))
    mean = Z @ policy.theta_.T
    np.testing.assert_array_equal(policy.action_probabilities(X), argmax_probabilities(mean + alpha * width))
    np.testing.assert_array_equal(policy._mean_and_width(X)[1], width)
    cold = LinUCB(arms=[0, 1, 2]).action_probabilities(rng.normal(size=(10, 4)))  # every arm tied: split
    np.testing.assert_array_equal(cold, np.full((10, 3), 1 / 3))


def _gaussian_argmax_by_numpy(mean, sd, n_draws, random_state):
    """LinTS's Monte Carlo probabilities in the numpy form the compiled pass replaced (every undecided row, every
    candidate arm, all draws at once): the reference of the test below."""
    n, n_arms = mean.shape
    half = np.random.default_rng(random_state).standard_normal(((n_draws + 1) // 2, n_arms))
    normals = np.concatenate([half, -half])[:n_draws].astype(np.float32)
    z_max = float(np.abs(normals).max())
    slack = 1e-5 * (1.0 + np.abs(mean).max(initial=0.0) + z_max * sd.max(initial=0.0))
    low, high = mean - sd * z_max, mean + sd * z_max
    best, rows = mean.argmax(axis=1), np.arange(n)
    high_other = high.copy()
    high_other[rows, best] = -np.inf
    decided = low[rows, best] > high_other.max(axis=1) + slack
    out = np.zeros((n, n_arms))
    out[rows[decided], best[decided]] = 1.0
    block = np.flatnonzero(~decided)
    m, s = mean[block].astype(np.float32), sd[block].astype(np.float32)
    candidates = high[block] >= low[block].max(axis=1, keepdims=True) - slack
    best_draw = np.full((len(block), n_draws), -np.inf, dtype=np.float32)
    winner = np.zeros((len(block), n_draws), dtype=np.int64)
    for k in range(n_arms):
        members = np.flatnonzero(candidates[:, k])
        draws = m[members, k, None] + s[members, k, None] * normals[None, :, k]
        better = draws > best_draw[members]
        best_draw[members] = np.where(better, draws, best_draw[members])
        winner[members] = np.where(better, k, winner[members])
    counts = np.bincount((winner + (np.arange(len(block)) * n_arms)[:, None]).ravel(), minlength=len(block) * n_arms)
    out[block] = counts.reshape(len(block), n_arms) / n_draws
    return out


@pytest.mark.parametrize("n_arms, scale, n_draws", [(10, 0.1, 100), (3, 1.0, 50), (2, 0.01, 7), (6, 0.3, 1)])
def test_lints_probabilities_are_the_numpy_monte_carlo_exactly(n_arms, scale, n_draws):
    from bandits.policies.linear import gaussian_argmax_probabilities

    rng = np.random.default_rng(n_arms)
    mean = rng.normal(size=(3_000, n_arms)) * scale
    sd = rng.exponential(size=(3_000, n_arms)) * scale
    mean[:, 1], sd[:, 1] = mean[:, 0], sd[:, 0]  # two identical arms: every tie goes to the lower one
    np.testing.assert_array_equal(gaussian_argmax_probabilities(mean, sd, n_draws, 4),
                                  _gaussian_argmax_by_numpy(mean, sd, n_draws, 4))


@pytest.mark.parametrize("n_arms", [1, 2, 3, 10])
def test_the_compiled_inverse_cdf_draws_the_arms_of_the_cumsum_form(n_arms):
    """Every served arm is drawn by `inverse_cdf`: the compiled pass against the numpy form it replaced (running sums
    by `np.cumsum`, the uniform scaled by the row's total), on random, one-hot and boundary cases."""
    from bandits.policies.base import inverse_cdf

    rng = np.random.default_rng(n_arms)
    probabilities = rng.dirichlet(np.ones(n_arms), size=20_000)
    probabilities[::7] = np.eye(n_arms)[rng.integers(0, n_arms, len(probabilities[::7]))]
    uniforms = rng.random(len(probabilities))
    uniforms[:4] = [0.0, np.nextafter(1.0, 0.0), 0.5, 1 / 3]
    cumulative = np.cumsum(probabilities, axis=1)
    expected = np.minimum(((uniforms * cumulative[:, -1])[:, None] >= cumulative).sum(axis=1), n_arms - 1)
    np.testing.assert_array_equal(inverse_cdf(probabilities, uniforms), expected)


@pytest.mark.parametrize("weighted, fit_intercept, empty_arm", [(False, True, False), (True, True, True),
                                                                (False, False, True), (True, False, False)])
def test_the_linear_statistics_are_the_gathered_numpy_products_bit_for_bit(weighted, fit_intercept, empty_arm):
    """`LinearStats.partial` groups rows by counting and gathers each arm's design rows into a reused buffer: the
    same single-threaded BLAS products on the same values as the plain numpy form (design copy, stable argsort,
    fancy-index gathers), so the statistics are identical (and do not depend on how many cores BLAS would use)."""
    from threadpoolctl import threadpool_limits

    from bandits.policies.linear import design

    rng = np.random.default_rng(7)
    n, n_features, n_arms = 20_000, 6, 5
    X = rng.normal(size=(n, n_features))
    arms = rng.integers(0, n_arms - int(empty_arm), n)
    rewards = rng.random(n)
    weights = rng.uniform(0.2, 3.0, n) if weighted else None
    stats = LinearStats.partial(X, arms, rewards, n_arms, weights=weights, fit_intercept=fit_intercept)
    Z = design(X, fit_intercept)
    order = np.argsort(arms, kind="stable")
    for k in range(n_arms):
        rows = order[arms[order] == k]
        Zk, yk = Z[rows], rewards[rows]
        wk = np.ones(rows.size) if weights is None else weights[rows]
        WZ = Zk * wk[:, None]
        with threadpool_limits(1):
            gram, xty = Zk.T @ WZ, WZ.T @ yk
        np.testing.assert_array_equal(stats.gram[k], gram if rows.size else 0.0)
        np.testing.assert_array_equal(stats.xty[k], xty if rows.size else 0.0)
        assert stats.weight[k] == wk.sum() and stats.yy[k] == wk @ (yk * yk)
