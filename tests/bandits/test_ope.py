"""Off-policy evaluation: the properties in docs/bandits.md (IPS = replay under a uniform logger, target = logger is
exact, DR is doubly robust), unbiasedness and coverage over many logging seeds, and the mechanics (mergeable sums,
cross-fitting)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.neighbors import KNeighborsRegressor

from bandits import EpsilonGreedy, LinEpsilonGreedy, LoggedFeedback, evaluate, on_policy_value
from bandits.datasets import SyntheticBandit, load_classification_bandit
from bandits.ope import ESTIMATORS, EstimatorSettings, PoorOverlapWarning, cross_fit_rewards, finalize, ope_partial
from bandits.ope.reward_model import assign_folds

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


def by_estimator(table: pd.DataFrame) -> pd.DataFrame:
    return table.set_index("estimator")


def greedy_target(mu: np.ndarray, epsilon: float = 0.1) -> np.ndarray:
    """Epsilon-greedy on the true means: a good, nearly deterministic target policy."""
    return (1 - epsilon) * np.eye(mu.shape[1])[mu.argmax(axis=1)] + epsilon / mu.shape[1]


# ----------------------------------------------------------------------------------------------- target = logger
def test_target_equal_to_logger_gives_the_on_policy_mean_exactly():
    env = SyntheticBandit(seed=4)
    feedback, _ = env.logged_feedback(5_000, random_state=1)
    table = by_estimator(evaluate(feedback, env.logging_probabilities(feedback.contexts),
                                  estimators=("ips", "snips"), reward_model=None))
    mean = feedback.rewards.mean()
    assert abs(table.loc["ips", "value"] - mean) < 1e-12
    assert abs(table.loc["snips", "value"] - mean) < 1e-12
    on_policy = on_policy_value(feedback.rewards).iloc[0]
    assert abs(on_policy["value"] - mean) < 1e-12
    assert table.loc["ips", "se"] == pytest.approx(on_policy["se"], rel=1e-12)
    assert table.loc["ips", "effective_sample_size"] == pytest.approx(feedback.n_rounds, rel=1e-12)
    assert table.loc["ips", "max_weight"] == 1.0


def test_target_equal_to_a_logging_policy_gives_the_on_policy_mean_exactly(env):
    train, _ = env.logged_feedback(1_000, random_state=2)
    logger = LinEpsilonGreedy(epsilon=0.3).fit(train)
    feedback, _ = env.logged_feedback(3_000, random_state=3, logger=logger)
    table = by_estimator(evaluate(feedback, logger, estimators=("ips", "snips"), reward_model=None))
    assert abs(table.loc["ips", "value"] - feedback.rewards.mean()) < 1e-12
    assert abs(table.loc["snips", "value"] - feedback.rewards.mean()) < 1e-12


@SETTINGS
@given(st.integers(1, 300), st.integers(2, 6), st.integers(0, 2**32 - 1), st.sampled_from([0.0, 1e-6, 1.0]))
def test_ips_with_target_equal_to_logger_is_the_mean_reward(n, n_arms, seed, floor):
    rng = np.random.default_rng(seed)
    probabilities = rng.dirichlet(np.full(n_arms, 0.3), n) + floor
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    arms = np.array([rng.choice(n_arms, p=row) for row in probabilities])
    rewards = rng.normal(size=n) * 10.0 ** rng.integers(-3, 4)
    feedback = LoggedFeedback(rng.normal(size=(n, 2)), arms, rewards, probabilities[np.arange(n), arms],
                              tuple(range(n_arms)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PoorOverlapWarning)  # small n: the ESS < 100 warning is expected
        table = by_estimator(evaluate(feedback, probabilities, estimators=("ips", "snips"), reward_model=None))
    assert table.loc["ips", "value"] == pytest.approx(rewards.mean(), rel=1e-12, abs=1e-12)
    assert table.loc["snips", "value"] == pytest.approx(rewards.mean(), rel=1e-12, abs=1e-12)


@SETTINGS
@given(st.integers(1, 300), st.integers(2, 6), st.integers(0, 2**32 - 1))
def test_effective_sample_size_is_at_most_n(n, n_arms, seed):
    rng = np.random.default_rng(seed)
    logger = rng.dirichlet(np.ones(n_arms), n)
    logger = np.maximum(logger, 1e-4)
    logger /= logger.sum(axis=1, keepdims=True)
    target = rng.dirichlet(np.full(n_arms, 0.2), n)
    arms = np.array([rng.choice(n_arms, p=row) for row in logger])
    stats = ope_partial(("ips",), rng.random(n), target[np.arange(n), arms], logger[np.arange(n), arms])
    table = finalize(stats)
    weights = target[np.arange(n), arms] / logger[np.arange(n), arms]
    ess = table.loc[0, "effective_sample_size"]
    assert 0 <= ess <= n * (1 + 1e-12)
    if weights.sum() > 0:
        assert ess == pytest.approx(weights.sum() ** 2 / (weights @ weights), rel=1e-12)
    assert table.loc[0, "max_weight"] == pytest.approx(weights.max(), rel=1e-15)


# ----------------------------------------------------------------------------------------------- uniform logger
def test_uniform_logger_ips_equals_replay_in_expectation():
    env = SyntheticBandit(seed=6, logging_epsilon=1.0)  # epsilon 1: the logger is uniform
    values, errors, truths = [], [], []
    for seed in range(20):
        feedback, mu = env.logged_feedback(8_000, random_state=100 + seed)
        np.testing.assert_array_equal(feedback.propensities, 0.25)
        target = greedy_target(mu, epsilon=0.2)
        table = by_estimator(evaluate(feedback, target, estimators=("ips", "replay"), reward_model=None,
                                      random_state=seed))
        values.append(table.loc[["ips", "replay"], "value"].to_numpy())
        errors.append(table.loc[["ips", "replay"], "se"].to_numpy())
        truths.append(env.policy_value(target, feedback.contexts))
        assert 0.15 * feedback.n_rounds < table.loc["replay", "rows_used"] < 0.35 * feedback.n_rounds
    values, errors, truth = np.array(values), np.array(errors), np.mean(truths)
    mean_ips, mean_replay = values.mean(axis=0)
    # Monte Carlo error of the difference of the two seed-averages (independence bound: they are positively
    # correlated, so the true error of the difference is smaller)
    error = np.sqrt((errors ** 2).sum()) / len(values)
    assert abs(mean_ips - mean_replay) < 4 * error, (mean_ips, mean_replay, error)
    for column in range(2):
        assert abs(values[:, column].mean() - truth) < 4 * np.sqrt((errors[:, column] ** 2).sum()) / len(values)
    assert error < 0.01  # the comparison is sharp enough to see a replay that is off by a few points


def test_replay_with_a_deterministic_target_is_the_mean_of_matching_rows():
    env = SyntheticBandit(seed=6, logging_epsilon=1.0)
    feedback, mu = env.logged_feedback(4_000, random_state=3)
    target = np.eye(4)[mu.argmax(axis=1)]
    table = by_estimator(evaluate(feedback, target, estimators=("replay",), reward_model=None))
    match = feedback.arms == mu.argmax(axis=1)
    assert table.loc["replay", "value"] == pytest.approx(feedback.rewards[match].mean(), rel=1e-12)
    assert table.loc["replay", "rows_used"] == match.sum()
    assert table.loc["replay", "se"] == pytest.approx(feedback.rewards[match].std(ddof=1) / np.sqrt(match.sum()),
                                                      rel=1e-9)


# ----------------------------------------------------------------------------------------------- doubly robust
@pytest.fixture(scope="module")
def robustness():
    """100,000 rounds of a non-uniform logger (temperature 0.5), a near-greedy target and its true value."""
    env = SyntheticBandit(seed=8, logging_temperature=0.5, logging_epsilon=0.1)
    feedback, mu = env.logged_feedback(100_000, random_state=21)
    target = greedy_target(mu, epsilon=0.1)
    return feedback, mu, target, env.policy_value(target, feedback.contexts)


def _with_propensities(feedback: LoggedFeedback, propensities: np.ndarray) -> LoggedFeedback:
    return LoggedFeedback(feedback.contexts, feedback.arms, feedback.rewards, propensities, feedback.arm_labels,
                          feedback.feature_names)


def test_dr_is_unbiased_with_the_right_reward_model_and_wrong_propensities(robustness):
    feedback, mu, target, truth = robustness
    wrong = _with_propensities(feedback, np.minimum(1.0, 2.5 * feedback.propensities))  # valid, but wrong
    table = by_estimator(evaluate(wrong, target, estimators=("ips", "dr"), reward_model=mu))
    dr, ips = table.loc["dr"], table.loc["ips"]
    assert abs(dr["value"] - truth) < 4 * dr["se"], (dr["value"], truth, dr["se"])
    assert abs(ips["value"] - truth) > 10 * ips["se"], (ips["value"], truth, ips["se"])  # IPS is fooled


def test_dr_is_unbiased_with_the_right_propensities_and_a_wrong_reward_model(robustness):
    feedback, mu, target, truth = robustness
    for wrong_model in (mu + 0.2, np.full_like(mu, 0.3), mu[:, ::-1]):
        table = by_estimator(evaluate(feedback, target, estimators=("dm", "dr"), reward_model=wrong_model))
        dr, dm = table.loc["dr"], table.loc["dm"]
        assert abs(dr["value"] - truth) < 4 * dr["se"], (dr["value"], truth, dr["se"])
        assert abs(dm["value"] - truth) > 10 * dm["se"] + 0.02, (dm["value"], truth, dm["se"])  # DM is fooled


def test_dr_is_biased_when_both_nuisances_are_wrong(robustness):
    """Control: the two tests above pass because one nuisance is right, not because DR ignores both."""
    feedback, mu, target, truth = robustness
    wrong = _with_propensities(feedback, np.minimum(1.0, 2.5 * feedback.propensities))
    dr = by_estimator(evaluate(wrong, target, estimators=("dr",), reward_model=mu + 0.2)).loc["dr"]
    assert abs(dr["value"] - truth) > 10 * dr["se"]


# ----------------------------------------------------------------------------------------------- supervised, many seeds
@pytest.fixture(scope="module")
def digits_runs():
    """40 logging seeds on digits: logger alpha 0.4, target alpha 0.85, ridge reward model. The logger's classifier
    learns from 5% of the rows, so the two policies disagree on ~10% of them and weights up to 14 matter."""
    bandit = load_classification_bandit("digits")
    logger = bandit.classifier_policy(0.4, train_share=0.05, random_state=1)
    target = bandit.classifier_policy(0.85, random_state=2)
    names = ("ips", "snips", "dr", "switch-dr", "dr-shrink")
    tables = [by_estimator(evaluate(bandit.logged_feedback(logger, random_state=500 + seed), target,
                                    estimators=names)).loc[list(names)] for seed in range(40)]
    values = pd.DataFrame({seed: table["value"] for seed, table in enumerate(tables)}).T
    covered = pd.DataFrame({seed: (table["ci_low"] <= bandit.policy_value(target)) &
                            (bandit.policy_value(target) <= table["ci_high"]) for seed, table in enumerate(tables)}).T
    return values, covered, bandit.policy_value(target), bandit.policy_value(logger)


def test_supervised_ips_and_dr_are_unbiased_over_logging_seeds(digits_runs):
    values, _, truth, logger_value = digits_runs
    assert abs(truth - logger_value) > 0.2  # the target is clearly different from the logger
    for name in ("ips", "dr"):
        column = values[name]
        standard_error = column.std(ddof=1) / np.sqrt(len(column))
        assert abs(column.mean() - truth) < 4 * standard_error, (name, column.mean(), truth, standard_error)
    for name in ("snips", "switch-dr", "dr-shrink"):  # consistent but biased in finite samples: loosely
        assert abs(values[name].mean() - truth) < 0.05, (name, values[name].mean(), truth)


def test_supervised_dr_has_lower_rmse_than_ips(digits_runs):
    values, _, truth, _ = digits_runs
    rmse = np.sqrt(((values - truth) ** 2).mean())
    assert rmse["dr"] <= rmse["ips"], rmse.to_dict()


def test_supervised_confidence_intervals_cover_about_nominally(digits_runs):
    _, covered, _, _ = digits_runs
    for name in ("ips", "dr"):
        assert 0.8 <= covered[name].mean() <= 1.0, (name, covered[name].mean())


# ----------------------------------------------------------------------------------------------- mechanics
def _row_inputs(n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {"rewards": rng.binomial(1, 0.3, n).astype(float), "target_on_logged": rng.uniform(0, 1, n),
            "propensities": rng.uniform(0.05, 1, n), "q_logged": rng.uniform(0, 1, n),
            "q_target": rng.uniform(0, 1, n), "replay_match": rng.random(n) < 0.3}


def test_merged_chunk_sums_equal_one_pass():
    inputs = _row_inputs(10_001, seed=1)
    settings_ = EstimatorSettings(clip=5.0, switch_threshold=3.0, shrinkage=2.0)
    one_pass = ope_partial(ESTIMATORS, settings=settings_, **inputs)
    bounds = [0, 1, 17, 4_000, 4_001, 9_000, 10_001]
    merged = None
    for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
        chunk = ope_partial(ESTIMATORS, settings=settings_, **{k: v[start:stop] for k, v in inputs.items()})
        merged = chunk if merged is None else merged + chunk
    np.testing.assert_allclose(merged.moments, one_pass.moments, rtol=1e-12)
    np.testing.assert_allclose(merged.diagnostics, one_pass.diagnostics, rtol=1e-12)
    pd.testing.assert_frame_equal(finalize(merged), finalize(one_pass), rtol=1e-10)
    with pytest.raises(ValueError, match="estimators: cannot merge"):
        merged.merge(ope_partial(("ips",), **{k: inputs[k] for k in ("rewards", "target_on_logged", "propensities")}))


def test_finalize_standard_errors_are_the_textbook_ones():
    inputs = _row_inputs(5_000, seed=2)
    table = by_estimator(finalize(ope_partial(ESTIMATORS, **inputs)))
    w = inputs["target_on_logged"] / inputs["propensities"]
    y, q_logged, q_target = inputs["rewards"], inputs["q_logged"], inputs["q_target"]
    n = len(y)
    means = {"ips": w * y, "dm": q_target, "dr": q_target + w * (y - q_logged),
             "switch-dr": q_target + np.where(w <= 10, w, 0) * (y - q_logged),
             "dr-shrink": q_target + w * 10 / (w ** 2 + 10) * (y - q_logged)}
    for name, rows in means.items():
        assert table.loc[name, "value"] == pytest.approx(rows.mean(), rel=1e-12)
        assert table.loc[name, "se"] == pytest.approx(rows.std(ddof=1) / np.sqrt(n), rel=1e-9)
    snips = (w * y).sum() / w.sum()
    assert table.loc["snips", "value"] == pytest.approx(snips, rel=1e-12)
    delta = np.sqrt(((w * y - snips * w) ** 2).sum()) / w.sum() * np.sqrt(n / (n - 1))
    assert table.loc["snips", "se"] == pytest.approx(delta, rel=1e-9)
    z = 1.959963984540054
    np.testing.assert_allclose(table["ci_high"] - table["value"], z * table["se"], rtol=1e-9)
    np.testing.assert_allclose(table["value"] - table["ci_low"], z * table["se"], rtol=1e-9)
    assert table.loc["ips", "tiny_target_share"] == pytest.approx((inputs["target_on_logged"] < 1e-3).mean())
    narrow = finalize(ope_partial(("ips",), **{k: inputs[k] for k in ("rewards", "target_on_logged",
                                                                      "propensities")}), confidence=0.5)
    assert narrow.loc[0, "ci_high"] - narrow.loc[0, "value"] == pytest.approx(0.6744897501960817 * narrow.loc[0, "se"])


def test_estimator_limits_and_clipping():
    inputs = _row_inputs(3_000, seed=3)
    w = inputs["target_on_logged"] / inputs["propensities"]

    def values(**kwargs):
        return by_estimator(finalize(ope_partial(ESTIMATORS, settings=EstimatorSettings(**kwargs), **inputs)))["value"]

    huge = values(switch_threshold=1e12, shrinkage=1e12)
    assert huge["switch-dr"] == pytest.approx(huge["dr"], rel=1e-12)
    assert huge["dr-shrink"] == pytest.approx(huge["dr"], rel=1e-9)
    tiny = values(switch_threshold=w.min() / 2)
    assert tiny["switch-dr"] == pytest.approx(tiny["dm"], rel=1e-12)
    clipped = values(clip=2.0)
    assert clipped["ips"] == pytest.approx((np.minimum(w, 2.0) * inputs["rewards"]).mean(), rel=1e-12)
    assert clipped["ips"] < huge["ips"]


def test_cross_fitting_never_predicts_a_row_from_itself():
    """A 1-nearest-neighbour regressor memorizes: fitted on a row, it predicts that row's reward exactly. Cross-fitted,
    no row's prediction for its logged arm may equal its own (continuous, all distinct) reward."""
    rng = np.random.default_rng(4)
    n = 600
    X = rng.normal(size=(n, 3))
    arms = rng.integers(0, 3, n)
    rewards = X[:, 0] + rng.normal(size=n)
    feedback = LoggedFeedback(X, arms, rewards, np.full(n, 1 / 3), ("a", "b", "c"))
    memorizer = KNeighborsRegressor(n_neighbors=1)
    for k in range(3):  # the negative control: without cross-fitting it would reproduce every reward
        rows = arms == k
        np.testing.assert_array_equal(memorizer.fit(X[rows], rewards[rows]).predict(X[rows]), rewards[rows])
    q = cross_fit_rewards(feedback, memorizer, n_folds=5)
    own = q[np.arange(n), arms]
    assert (own != rewards).all()
    folds = assign_folds(feedback, 5)
    for i in range(0, n, 37):  # each prediction is the reward of some row of another fold, same arm
        source = np.flatnonzero(rewards == own[i])
        assert len(source) == 1 and folds[source[0]] != folds[i] and arms[source[0]] == arms[i]


@pytest.mark.parametrize("model", ["ridge", Ridge(alpha=1.0)], ids=["ridge", "sklearn-ridge"])
def test_changing_a_row_changes_only_other_folds_predictions(model):
    rng = np.random.default_rng(5)
    n = 500
    feedback = LoggedFeedback(rng.normal(size=(n, 3)), rng.integers(0, 2, n), rng.random(n), np.full(n, 0.5),
                              ("a", "b"))
    q = cross_fit_rewards(feedback, model, n_folds=4, random_state=3)
    folds = assign_folds(feedback, 4, random_state=3)
    assert sorted(np.bincount(folds)) == [125] * 4
    rewards = feedback.rewards.copy()
    rewards[10] = 1_000.0
    changed = LoggedFeedback(feedback.contexts, feedback.arms, rewards, feedback.propensities, feedback.arm_labels)
    q_changed = cross_fit_rewards(changed, model, n_folds=4, random_state=3)
    same_fold = folds == folds[10]
    # (the ridge route subtracts fold sums from the total, so equal up to rounding; a leak would move it by ~1)
    np.testing.assert_allclose(q_changed[same_fold], q[same_fold], rtol=0, atol=1e-9)
    assert (np.abs(q_changed[~same_fold] - q[~same_fold]).max(axis=1) > 1e-6).all()


def test_ridge_cross_fit_matches_a_second_implementation():
    rng = np.random.default_rng(6)
    n = 400
    feedback = LoggedFeedback(rng.normal(size=(n, 2)), rng.integers(0, 3, n), rng.random(n), np.full(n, 1 / 3),
                              ("a", "b", "c"))
    q = cross_fit_rewards(feedback, "ridge", n_folds=3, random_state=1, l2=2.0)
    folds = assign_folds(feedback, 3, random_state=1)
    Z = np.hstack([np.ones((n, 1)), feedback.contexts])
    for f in range(3):
        for k in range(3):
            train = (folds != f) & (feedback.arms == k)
            theta = np.linalg.solve(Z[train].T @ Z[train] + 2.0 * np.eye(3), Z[train].T @ feedback.rewards[train])
            np.testing.assert_allclose(q[folds == f, k], Z[folds == f] @ theta, rtol=0, atol=1e-10)


def test_user_id_folds_keep_each_user_in_one_fold():
    rng = np.random.default_rng(7)
    n = 2_000
    users = rng.choice([f"user-{i}" for i in range(150)], n)
    feedback = LoggedFeedback(rng.normal(size=(n, 2)), rng.integers(0, 2, n), rng.random(n), np.full(n, 0.5),
                              ("a", "b"), user_ids=users)
    folds = assign_folds(feedback, 5, random_state=2)
    per_user = pd.Series(folds).groupby(users).nunique()
    assert (per_user == 1).all()
    assert set(folds) == set(range(5))
    # stable across partitions: the fold of a user does not depend on which other rows are there
    np.testing.assert_array_equal(assign_folds(feedback.subset(slice(100, 300)), 5, random_state=2), folds[100:300])
    # a user's own rewards never reach the model that predicts that user's rows
    user = users[0]
    rewards = feedback.rewards.copy()
    rewards[users == user] += 100.0
    changed = LoggedFeedback(feedback.contexts, feedback.arms, rewards, feedback.propensities, feedback.arm_labels,
                             user_ids=users)
    mine = users == user
    np.testing.assert_allclose(cross_fit_rewards(changed)[mine], cross_fit_rewards(feedback)[mine], rtol=0, atol=1e-9)
    assert not np.allclose(cross_fit_rewards(changed)[~mine], cross_fit_rewards(feedback)[~mine])


@pytest.mark.parametrize("model", [Ridge(alpha=1.0), LogisticRegression(max_iter=500)], ids=["Ridge", "Logistic"])
def test_scikit_learn_reward_models_work(robustness, model):
    feedback, mu, target, _ = robustness
    rows = np.arange(20_000)
    small = feedback.subset(rows)
    truth = float((target[rows] * mu[rows]).sum(axis=1).mean())
    q = cross_fit_rewards(small, model, n_folds=3)
    assert q.shape == (small.n_rounds, small.n_arms) and np.isfinite(q).all()
    if isinstance(model, LogisticRegression):
        assert ((q >= 0) & (q <= 1)).all()
    assert np.corrcoef(q.ravel(), mu[rows].ravel())[0, 1] > 0.5  # it learned the reward surface
    table = by_estimator(evaluate(small, target[rows], estimators=("dm", "dr"), reward_model=model, n_folds=3))
    assert abs(table.loc["dr", "value"] - truth) < 4 * table.loc["dr", "se"]
    assert np.isfinite(table["value"]).all()


def test_policy_target_and_array_target_agree(env):
    feedback, _ = env.logged_feedback(3_000, random_state=9)
    policy = EpsilonGreedy(epsilon=0.3).fit(feedback)
    from_policy = evaluate(feedback, policy)
    from_array = evaluate(feedback, policy.action_probabilities(feedback.contexts))
    pd.testing.assert_frame_equal(from_policy, from_array)


# ----------------------------------------------------------------------------------------------- overlap warnings
def _overlap_logs(n: int = 5_000):
    rng = np.random.default_rng(8)
    logger = np.array([0.998, 0.001, 0.001])
    arms = rng.choice(3, n, p=logger)
    feedback = LoggedFeedback(rng.normal(size=(n, 2)), arms, rng.random(n), logger[arms], ("a", "b", "c"))
    return feedback, logger


def test_poor_overlap_warns():
    feedback, _ = _overlap_logs()
    target = np.tile([0.0, 0.999, 0.001], (feedback.n_rounds, 1))  # near-deterministic where the logger never goes
    with pytest.warns(PoorOverlapWarning, match="poor overlap: effective sample size"):
        table = evaluate(feedback, target, estimators=("ips", "snips"), reward_model=None)
    assert table.loc[0, "ess_share"] < 0.02
    assert table.loc[0, "tiny_target_share"] > 0.9


def test_good_overlap_does_not_warn():
    feedback, logger = _overlap_logs()
    similar = np.tile([0.99, 0.005, 0.005], (feedback.n_rounds, 1))
    with warnings.catch_warnings():
        warnings.simplefilter("error", PoorOverlapWarning)
        table = evaluate(feedback, np.tile(logger, (feedback.n_rounds, 1)), estimators=("ips",), reward_model=None)
        assert table.loc[0, "ess_share"] == pytest.approx(1.0)
        evaluate(feedback, similar, estimators=("ips",), reward_model=None)
