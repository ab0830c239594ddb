"""Data with known answers: the synthetic environment, supervised-to-bandit conversion, Open Bandit helpers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import integrate
from scipy.stats import beta as beta_distribution

from bandits import EpsilonGreedy, LinEpsilonGreedy, LinUCB, ThompsonSampling, evaluate, on_policy_value
from bandits.datasets import (
    SyntheticBandit,
    bts_position_probabilities,
    load_classification_bandit,
    open_bandit_feedback,
    position_target_probabilities,
)


# ----------------------------------------------------------------------------------------------- BTS probabilities
def test_bts_position_probabilities_are_distributions_over_items():
    rng = np.random.default_rng(0)
    alpha, beta = rng.uniform(0.5, 20, 12), rng.uniform(5, 200, 12)
    probabilities = bts_position_probabilities(alpha, beta, n_draws=30_000)
    assert probabilities.shape == (12, 3)
    np.testing.assert_allclose(probabilities.sum(axis=0), 1.0, rtol=0, atol=1e-12)
    assert ((probabilities >= 0) & (probabilities <= 1)).all()
    # an item is shown at most once per round: across positions its probabilities sum to at most 1
    assert (probabilities.sum(axis=1) <= 1 + 1e-12).all()
    np.testing.assert_array_equal(bts_position_probabilities(alpha, beta, n_draws=30_000), probabilities)  # seeded


@pytest.mark.parametrize(("alpha", "beta"), [((2.0, 3.0), (5.0, 4.0)), ((1.0, 1.0), (1.0, 1.0)),
                                             ((30.0, 3.0), (70.0, 10.0))])
def test_bts_two_items_one_position_matches_the_exact_probability(alpha, beta):
    """P(item 0 shown) = P(Beta(a0, b0) > Beta(a1, b1)) = integral of f0(x) F1(x) dx."""
    n_draws = 200_000
    probabilities = bts_position_probabilities(np.array(alpha), np.array(beta), n_positions=1, n_draws=n_draws,
                                               block=30_000)
    exact = integrate.quad(lambda x: beta_distribution.pdf(x, alpha[0], beta[0]) *
                           beta_distribution.cdf(x, alpha[1], beta[1]), 0, 1, epsabs=1e-12)[0]
    assert probabilities.shape == (2, 1)
    assert abs(probabilities[0, 0] - exact) < 4 * np.sqrt(exact * (1 - exact) / n_draws)
    assert probabilities[0, 0] + probabilities[1, 0] == pytest.approx(1.0, abs=1e-12)


def test_bts_two_items_two_positions_are_complementary():
    probabilities = bts_position_probabilities(np.array([2.0, 3.0]), np.array([5.0, 4.0]), n_positions=2,
                                               n_draws=20_000)
    np.testing.assert_allclose(probabilities[:, 1], probabilities[::-1, 0], atol=1e-12)


@pytest.mark.parametrize(("n_items", "n_positions"), [(2, 3), (1, 2), (4, 5), (3, 0)])
def test_bts_needs_between_one_position_and_the_number_of_items(n_items, n_positions):
    with pytest.raises(ValueError, match=rf"^n_positions: must be between 1 and the number of items \({n_items}\), "
                                         rf"got {n_positions}$") as error:
        bts_position_probabilities(np.ones(n_items), np.ones(n_items), n_positions=n_positions, n_draws=100)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(("alpha", "beta"), [([1.0, 2.0], [1.0]), ([1.0, 0.0], [1.0, 1.0]), ([1.0, 1.0], [-1.0, 1.0]),
                                             ([[1.0, 2.0]], [[1.0, 2.0]])])
def test_bts_needs_positive_beta_parameters_of_equal_length(alpha, beta):
    with pytest.raises(ValueError, match=r"^alpha, beta: need two equal-length 1-d arrays of positive Beta "
                                         r"parameters$"):
        bts_position_probabilities(np.array(alpha), np.array(beta), n_positions=1, n_draws=100)


def test_bts_n_positions_equal_to_the_number_of_items_shows_every_item_once():
    probabilities = bts_position_probabilities(np.array([2.0, 9.0, 1.0]), np.array([8.0, 1.0, 1.0]), n_positions=3,
                                               n_draws=5_000)
    np.testing.assert_allclose(probabilities.sum(axis=0), 1.0, atol=1e-12)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-12)


# ----------------------------------------------------------------------------------------------- Open Bandit frames
def open_bandit_frame() -> pd.DataFrame:
    """Six rounds in the Open Bandit Dataset layout: 4 items, positions 1..3, three affinity columns, hashed user
    features (strings, left out of the contexts), and an extra column the conversion ignores."""
    return pd.DataFrame({
        "timestamp": pd.date_range("2019-11-24", periods=6, freq="min"),
        "item_id": [0, 3, 1, 2, 3, 0],
        "position": [1, 2, 3, 1, 3, 2],
        "click": [0, 1, 0, 0, 1, 0],
        "propensity_score": [0.25, 0.25, 0.5, 0.125, 0.25, 1.0],
        "user_feature_0": ["81ce", "03a5", "81ce", "cef3", "03a5", "81ce"],
        "user-item_affinity_0": [0.0, 1.0, 2.0, 0.0, 0.0, 3.0],
        "user-item_affinity_1": [0.5, 0.0, 0.0, 0.0, 1.5, 0.0],
        "user-item_affinity_2": [0.0, 0.0, 0.0, 4.0, 0.0, 0.0],
    })


def test_open_bandit_feedback_contexts_are_affinities_and_one_hot_positions():
    logs = open_bandit_frame()
    feedback, positions = open_bandit_feedback(logs, n_items=4)
    np.testing.assert_array_equal(positions, [0, 1, 2, 0, 2, 1])
    assert positions.dtype == np.int64
    affinities = logs[["user-item_affinity_0", "user-item_affinity_1", "user-item_affinity_2"]].to_numpy()
    np.testing.assert_array_equal(feedback.contexts, np.hstack([affinities, np.eye(3)[positions]]))
    assert feedback.feature_names == ("user-item_affinity_0", "user-item_affinity_1", "user-item_affinity_2",
                                      "position_1", "position_2", "position_3")
    assert feedback.arm_labels == (0, 1, 2, 3)
    np.testing.assert_array_equal(feedback.arms, [0, 3, 1, 2, 3, 0])
    np.testing.assert_array_equal(feedback.arm_names(), [0, 3, 1, 2, 3, 0])
    np.testing.assert_array_equal(feedback.rewards, [0.0, 1.0, 0.0, 0.0, 1.0, 0.0])
    np.testing.assert_array_equal(feedback.propensities, logs["propensity_score"].to_numpy())
    more, _ = open_bandit_feedback(logs, n_items=6)  # items never logged are still arms
    assert more.arm_labels == tuple(range(6))
    np.testing.assert_array_equal(more.arms, feedback.arms)


def test_open_bandit_feedback_without_affinity_columns_has_position_contexts_only():
    logs = open_bandit_frame().drop(columns=["user-item_affinity_0", "user-item_affinity_1", "user-item_affinity_2"])
    feedback, positions = open_bandit_feedback(logs, n_items=4)
    np.testing.assert_array_equal(feedback.contexts, np.eye(3)[positions])
    assert feedback.feature_names == ("position_1", "position_2", "position_3")


@pytest.mark.parametrize("column", ["item_id", "position", "click", "propensity_score"])
def test_open_bandit_feedback_names_missing_columns(column):
    with pytest.raises(ValueError, match=rf"^open bandit logs: missing columns \['{column}'\]$"):
        open_bandit_feedback(open_bandit_frame().drop(columns=[column]), n_items=4)
    with pytest.raises(ValueError, match=r"^open bandit logs: missing columns \['click', 'propensity_score'\]$"):
        open_bandit_feedback(open_bandit_frame().drop(columns=["click", "propensity_score"]), n_items=4)


@pytest.mark.parametrize("bad_position", [0, 4, -1])
def test_open_bandit_feedback_positions_must_be_one_to_three(bad_position):
    logs = open_bandit_frame()
    logs.loc[2, "position"] = bad_position
    with pytest.raises(ValueError, match=r"^position: expected 1\.\.3$"):
        open_bandit_feedback(logs, n_items=4)


def test_open_bandit_feedback_checks_items_and_propensities():
    with pytest.raises(ValueError, match=r"^arm: codes outside 0\.\.2 in 2 of 6 rows$"):
        open_bandit_feedback(open_bandit_frame(), n_items=3)  # item 3 is not one of 3 items
    with pytest.raises(ValueError, match=r"^propensity: zero or negative in 1 of 6 rows"):
        open_bandit_feedback(open_bandit_frame().assign(propensity_score=[0.25, 0.0, 0.5, 0.5, 0.5, 0.5]), n_items=4)


def test_position_target_probabilities_pick_each_rows_position_column():
    rng = np.random.default_rng(1)
    alpha, beta = rng.uniform(1, 5, 4), rng.uniform(5, 20, 4)
    item_position = bts_position_probabilities(alpha, beta, n_draws=5_000)
    positions = np.array([0, 1, 2, 0, 2, 1])
    target = position_target_probabilities(item_position, positions)
    assert target.shape == (6, 4)
    np.testing.assert_allclose(target.sum(axis=1), 1.0, atol=1e-12)
    for row, position in enumerate(positions):
        np.testing.assert_array_equal(target[row], item_position[:, position])
    # the result is a valid target for evaluate on logs of the same rows
    feedback, logged_positions = open_bandit_feedback(open_bandit_frame(), n_items=4)
    np.testing.assert_array_equal(logged_positions, positions)
    with pytest.warns(UserWarning, match="poor overlap"):  # six rows
        table = evaluate(feedback, target, estimators=("ips",), reward_model=None)
    rows = np.arange(6)
    expected = (target[rows, feedback.arms] / feedback.propensities * feedback.rewards).mean()
    assert table.loc[0, "value"] == pytest.approx(expected, rel=1e-12)


# ----------------------------------------------------------------------------------------------- SyntheticBandit
@pytest.mark.parametrize("reward", ["linear", "nonlinear"])
def test_synthetic_policy_value_is_the_mean_of_sum_pi_mu(reward):
    env = SyntheticBandit(n_features=3, n_arms=5, reward=reward, seed=2)
    X = env.contexts(400, random_state=1)
    mu = env.expected_rewards(X)
    assert mu.shape == (400, 5) and ((mu > 0) & (mu < 1)).all()
    pi = np.random.default_rng(0).dirichlet(np.ones(5), 400)
    by_hand = np.mean([sum(pi[i, k] * mu[i, k] for k in range(5)) for i in range(400)])
    assert env.policy_value(pi, X) == pytest.approx(by_hand, rel=1e-12)
    # deterministic policies: the value of always playing arm k is the mean of mu[:, k]; the oracle is the best
    for k in range(5):
        assert env.policy_value(np.eye(5)[np.full(400, k)], X) == pytest.approx(mu[:, k].mean(), rel=1e-12)
    assert env.policy_value(np.eye(5)[mu.argmax(axis=1)], X) == pytest.approx(mu.max(axis=1).mean(), rel=1e-12)


def test_synthetic_on_policy_rewards_estimate_the_loggers_value():
    env = SyntheticBandit(seed=5)
    feedback, mu = env.logged_feedback(20_000, random_state=3)
    truth = env.policy_value(env.logging_probabilities(feedback.contexts), feedback.contexts)
    on_policy = on_policy_value(feedback.rewards).iloc[0]
    assert abs(on_policy["value"] - truth) < 4 * on_policy["se"], (on_policy["value"], truth, on_policy["se"])
    np.testing.assert_array_equal(mu, env.expected_rewards(feedback.contexts))


def test_synthetic_logging_probabilities_are_bounded_away_from_zero():
    env = SyntheticBandit(n_arms=6, logging_temperature=0.2, logging_epsilon=0.3, seed=1)
    probabilities = env.logging_probabilities(env.contexts(1_000, random_state=0))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-12)
    assert probabilities.min() >= 0.3 / 6 - 1e-15


def test_synthetic_logged_propensities_are_the_loggers_probability_of_the_logged_arm(env):
    feedback, mu = env.logged_feedback(3_000, random_state=4)
    X = feedback.contexts
    rows = np.arange(feedback.n_rounds)
    np.testing.assert_array_equal(feedback.propensities, env.logging_probabilities(X)[rows, feedback.arms])
    assert feedback.arm_labels == env.arm_labels == ("arm_0", "arm_1", "arm_2", "arm_3")
    assert feedback.feature_names == ("x0", "x1", "x2", "x3", "x4")
    assert set(np.unique(feedback.rewards)) == {0.0, 1.0}
    # the rewards follow the logged arm's mean: rows with mu near 1 are mostly rewarded
    own = mu[rows, feedback.arms]
    assert feedback.rewards[own > 0.6].mean() > feedback.rewards[own < 0.3].mean() + 0.3
    # a logger given as a function of the contexts
    def fixed(X):
        return np.tile([0.1, 0.2, 0.3, 0.4], (len(X), 1))

    functional, _ = env.logged_feedback(2_000, random_state=4, logger=fixed)
    np.testing.assert_array_equal(functional.propensities, np.array([0.1, 0.2, 0.3, 0.4])[functional.arms])
    frequencies = np.bincount(functional.arms, minlength=4) / 2_000
    np.testing.assert_allclose(frequencies, [0.1, 0.2, 0.3, 0.4], atol=0.04)


def test_synthetic_logs_of_a_fitted_policy_logger(env, logs):
    feedback, _ = logs
    logger = EpsilonGreedy(epsilon=0.2).fit(feedback)
    logged, _ = env.logged_feedback(2_000, random_state=6, logger=logger)
    rows = np.arange(logged.n_rounds)
    np.testing.assert_array_equal(logged.propensities,
                                  logger.action_probabilities(logged.contexts)[rows, logged.arms])
    best = int(np.argmax(logger.mean_rewards()))
    assert abs((logged.arms == best).mean() - (0.8 + 0.2 / 4)) < 0.03


def _probability_of_logged_label(logger, logged) -> np.ndarray:
    """The logger's probability of each logged arm, looked up by label in the logger's own column order."""
    columns = [list(logger.arms_).index(label) for label in logged.arm_names()]
    return logger.action_probabilities(logged.contexts)[np.arange(logged.n_rounds), columns]


@pytest.mark.parametrize("make", [
    lambda labels: EpsilonGreedy(epsilon=0.2, arms=labels),
    lambda labels: LinUCB(alpha=0.1, arms=labels),
    lambda labels: LinEpsilonGreedy(epsilon=0.3, arms=labels),
], ids=["EpsilonGreedy", "LinUCB", "LinEpsilonGreedy"])
def test_synthetic_logs_of_a_logger_with_its_own_arm_order(env, logs, make):
    """A policy's columns follow its `arms_`; the environment reorders them into its own arm order, so the logged
    arm is the one the logger chose and its propensity is the logger's probability of that arm."""
    feedback, _ = logs
    order = list(reversed(env.arm_labels))
    logger = make(order).fit(feedback)
    assert list(logger.arms_) == order
    logged, _ = env.logged_feedback(3_000, random_state=7, logger=logger)
    assert logged.arm_labels == env.arm_labels
    np.testing.assert_allclose(logged.propensities, _probability_of_logged_label(logger, logged), rtol=0, atol=0)
    # the arms are drawn from the logger's probabilities of those labels (not of the arm in the same column)
    expected = logger.action_probabilities(logged.contexts)[:, ::-1].mean(axis=0)  # in the environment's order
    frequencies = np.bincount(logged.arms, minlength=env.n_arms) / logged.n_rounds
    np.testing.assert_allclose(frequencies, expected, atol=0.03)
    # the same logger in the environment's order logs the same rounds
    same, _ = env.logged_feedback(3_000, random_state=7, logger=make(list(env.arm_labels)).fit(feedback))
    np.testing.assert_array_equal(same.arms, logged.arms)
    np.testing.assert_allclose(same.propensities, logged.propensities, rtol=0, atol=1e-12)


def test_synthetic_logs_of_a_cold_started_logger_with_its_own_arm_order(env):
    order = list(reversed(env.arm_labels))
    logger = LinUCB(arms=order)  # never fitted: acts from its ridge prior (all arms tie: uniform)
    logged, _ = env.logged_feedback(1_000, random_state=8, logger=logger)
    assert list(logger.arms_) == order
    np.testing.assert_array_equal(logged.propensities, _probability_of_logged_label(logger, logged))
    np.testing.assert_allclose(logged.propensities, 1 / env.n_arms)
    prior = ThompsonSampling(prior_alpha=[1.0, 1.0, 1.0, 30.0], prior_beta=[30.0, 30.0, 30.0, 1.0], arms=order)
    logged, _ = env.logged_feedback(1_000, random_state=8, logger=prior)  # its favourite is arm_0, its last column
    np.testing.assert_array_equal(logged.propensities, _probability_of_logged_label(prior, logged))
    assert (logged.arm_names() == "arm_0").mean() > 0.95


def test_synthetic_logger_with_other_arms_is_an_error(env, logs):
    feedback, _ = logs
    other = EpsilonGreedy(arms=["a", "b", "c", "d"])
    with pytest.raises(ValueError, match=r"^logger: its arms \['a', 'b', 'c', 'd'\] are not this environment's "
                                         r"\['arm_0', 'arm_1', 'arm_2', 'arm_3'\]$"):
        env.logged_feedback(100, logger=other)
    with pytest.raises(ValueError, match=r"^logger: its arms \['arm_0', 'arm_1', 'arm_2'\] are not this environment's"):
        env.logged_feedback(100, logger=EpsilonGreedy(arms=list(env.arm_labels[:3])))
    with pytest.raises(ValueError, match=r"^logger: its arms .* are not this environment's"):
        env.logged_feedback(100, logger=EpsilonGreedy(arms=[*env.arm_labels, "arm_4"]).fit(feedback))


def test_synthetic_logs_are_reproducible_with_the_same_seed():
    first, mu = SyntheticBandit(reward="nonlinear", seed=9).logged_feedback(500, random_state=2)
    again, mu_again = SyntheticBandit(reward="nonlinear", seed=9).logged_feedback(500, random_state=2)
    for name in ("contexts", "arms", "rewards", "propensities"):
        np.testing.assert_array_equal(getattr(again, name), getattr(first, name))
    np.testing.assert_array_equal(mu_again, mu)
    other_logs, _ = SyntheticBandit(reward="nonlinear", seed=9).logged_feedback(500, random_state=3)
    assert not np.array_equal(other_logs.contexts, first.contexts)
    other_world = SyntheticBandit(reward="nonlinear", seed=10)
    assert not np.allclose(other_world.expected_rewards(first.contexts), mu)
    assert SyntheticBandit(seed=9) == SyntheticBandit(seed=9)


@pytest.mark.parametrize(("parameters", "message"), [
    ({"reward": "quadratic"}, r"^reward: 'linear' or 'nonlinear', got 'quadratic'$"),
    ({"n_arms": 1}, r"^n_arms: need at least 2 arms, got 1$"),
    ({"n_features": 0}, r"^n_features: need at least 1, got 0$"),
    ({"logging_epsilon": 1.5}, r"^logging_epsilon: must be in \[0, 1\], got 1\.5$"),
    ({"logging_epsilon": -0.1}, r"^logging_epsilon: must be in \[0, 1\], got -0\.1$"),
])
def test_synthetic_bad_parameters(parameters, message):
    with pytest.raises(ValueError, match=message):
        SyntheticBandit(**parameters)


# ----------------------------------------------------------------------------------------------- supervised
@pytest.mark.parametrize(("name", "shape", "labels"), [
    ("digits", (1797, 64), tuple(str(digit) for digit in range(10))),
    ("wine", (178, 13), ("class_0", "class_1", "class_2")),
    ("breast_cancer", (569, 30), ("malignant", "benign")),
])
def test_classification_bandits_load_offline(name, shape, labels):
    bandit = load_classification_bandit(name)
    assert bandit.contexts.shape == shape
    assert bandit.arm_labels == labels and bandit.n_arms == len(labels)
    assert bandit.labels.shape == (shape[0],) and bandit.labels.dtype == np.int64
    np.testing.assert_array_equal(np.unique(bandit.labels), np.arange(len(labels)))
    np.testing.assert_allclose(bandit.contexts.mean(axis=0), 0.0, atol=1e-12)  # standardized
    sd = bandit.contexts.std(axis=0)
    np.testing.assert_allclose(sd[sd > 0], 1.0, atol=1e-9)
    mu = bandit.expected_rewards()
    assert mu.shape == (shape[0], len(labels))
    np.testing.assert_array_equal(mu.sum(axis=1), 1.0)
    np.testing.assert_array_equal(mu[np.arange(shape[0]), bandit.labels], 1.0)


def test_classification_bandit_default_is_digits():
    assert load_classification_bandit().contexts.shape == (1797, 64)


def test_classification_policy_value_is_the_mean_probability_of_the_right_class():
    bandit = load_classification_bandit("wine")
    rows = np.arange(len(bandit.labels))
    for alpha in (0.0, 0.3, 0.9, 1.0):
        policy = bandit.classifier_policy(alpha, random_state=1)
        assert policy.shape == (178, 3)
        np.testing.assert_allclose(policy.sum(axis=1), 1.0, atol=1e-12)
        assert bandit.policy_value(policy) == pytest.approx(policy[rows, bandit.labels].mean(), rel=1e-12)
        # and the same as the general definition mean sum_a pi(a|x) mu(x, a)
        assert bandit.policy_value(policy) == pytest.approx((policy * bandit.expected_rewards()).sum(axis=1).mean())
    assert bandit.policy_value(bandit.classifier_policy(0.0)) == pytest.approx(1 / 3)
    assert bandit.policy_value(np.eye(3)[bandit.labels]) == 1.0
    accurate = bandit.policy_value(bandit.classifier_policy(1.0, random_state=1))
    assert 0.5 < accurate <= 1.0  # a weak classifier, still far better than chance
    np.testing.assert_array_equal(bandit.classifier_policy(0.7, random_state=4),
                                  bandit.classifier_policy(0.7, random_state=4))


def test_classification_logged_feedback_rewards_one_exactly_on_the_label():
    bandit = load_classification_bandit("digits")
    logging = bandit.classifier_policy(0.5, random_state=2)
    feedback = bandit.logged_feedback(logging, random_state=3)
    rows = np.arange(feedback.n_rounds)
    np.testing.assert_array_equal(feedback.rewards, (feedback.arms == bandit.labels).astype(float))
    assert 0 < feedback.rewards.sum() < feedback.n_rounds
    np.testing.assert_array_equal(feedback.propensities, logging[rows, feedback.arms])
    np.testing.assert_array_equal(feedback.contexts, bandit.contexts)
    assert feedback.arm_labels == bandit.arm_labels
    assert feedback.feature_names == tuple(f"x{j}" for j in range(64))
    again = bandit.logged_feedback(logging, random_state=3)
    np.testing.assert_array_equal(again.arms, feedback.arms)
    on_policy = on_policy_value(feedback.rewards).iloc[0]
    truth = bandit.policy_value(logging)
    assert abs(on_policy["value"] - truth) < 4 * on_policy["se"]


def test_classification_bandit_bad_arguments():
    with pytest.raises(ValueError, match=r"^name: unknown data set 'iris'; choose from "
                                         r"\['breast_cancer', 'digits', 'wine'\]$"):
        load_classification_bandit("iris")
    bandit = load_classification_bandit("wine")
    for alpha, shown in ((1.5, "1.5"), (-0.1, "-0.1")):
        with pytest.raises(ValueError, match=rf"^alpha: must be in \[0, 1\], got {shown}$"):
            bandit.classifier_policy(alpha)
