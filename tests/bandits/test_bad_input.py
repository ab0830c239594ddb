"""Bad input: a ValueError with one line naming the column or key, raised before any work."""

from __future__ import annotations

import importlib

import numpy as np
import pandas as pd
import pytest

from bandits import (
    UCB1,
    ContextEncoder,
    EpsilonGreedy,
    LinearStats,
    LinEpsilonGreedy,
    LinTS,
    LinUCB,
    LoggedFeedback,
    NeuralTS,
    ThompsonSampling,
    evaluate,
)
from bandits.ope import cross_fit_rewards, ope_partial

# the module, not the function `bandits.ope.evaluate` that the package re-exports under the same name
evaluate_module = importlib.import_module("bandits.ope.evaluate")
N = 50
POLICY_CLASSES = [EpsilonGreedy, UCB1, ThompsonSampling, LinUCB, LinTS, LinEpsilonGreedy, NeuralTS]


def one_line(error: pytest.ExceptionInfo) -> None:
    assert "\n" not in str(error.value), str(error.value)


@pytest.fixture
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({"age": rng.normal(size=N), "score": rng.normal(size=N),
                         "arm": rng.choice(["red", "green", "blue"], N), "reward": (rng.random(N) < 0.3) * 1.0,
                         "propensity": np.full(N, 1 / 3)})


@pytest.fixture
def feedback(frame) -> LoggedFeedback:
    return LoggedFeedback.from_frame(frame, ["age", "score"])


def _raw(feedback: LoggedFeedback, **changes) -> dict:
    fields = {"contexts": feedback.contexts, "arms": feedback.arms, "rewards": feedback.rewards,
              "propensities": feedback.propensities, "arm_labels": feedback.arm_labels}
    return {**fields, **changes}


# ----------------------------------------------------------------------------------------------- LoggedFeedback
def _with(values, rows, value):
    values = np.array(values, dtype=float)
    values[rows] = value
    return values


FEEDBACK_CASES = [
    ({"propensities": np.zeros(N)},
     r"^propensity: zero or negative in 50 of 50 rows; propensities must lie in \(0, 1\]$"),
    ({"propensities": _with(np.full(N, 0.5), [3, 4], -0.2)}, r"^propensity: zero or negative in 2 of 50 rows"),
    ({"propensities": _with(np.full(N, 0.5), [7], 1.5)}, r"^propensity: above 1 in 1 of 50 rows"),
    ({"propensities": _with(np.full(N, 0.5), [1, 2, 9], np.nan)}, r"^propensity: missing or NaN in 3 of 50 rows"),
    ({"propensities": [0.5] * (N - 1) + [None]}, r"^propensity: missing or NaN in 1 of 50 rows"),
    ({"propensities": np.full(N - 1, 0.5)}, r"^propensity: expected 50 rows, got shape \(49,\)"),
    ({"contexts": _with(np.zeros((N, 2)), (5, 1), np.nan)},
     r"^contexts: NaN or inf in 1 of 50 rows \(first in feature 1\); impute before fitting"),
    ({"contexts": _with(np.zeros((N, 2)), (5, 0), np.inf)},
     r"^contexts: NaN or inf in 1 of 50 rows \(first in feature 0"),
    ({"contexts": np.zeros((N, 2, 2))}, r"^contexts: expected a 2-d array"),
    ({"arm_labels": ("only",), "arms": np.zeros(N, dtype=int)}, r"^arm_labels: need at least 2 arms, got 1"),
    ({"arm_labels": ("a", "a", "b")}, r"^arm_labels: duplicated labels"),
    ({"arms": np.full(N, 3)}, r"^arm: codes outside 0\.\.2 in 50 of 50 rows"),
    ({"arms": np.full(N, 1.0)}, r"^arm: expected integer codes into arm_labels, got dtype float64"),
    ({"rewards": _with(np.zeros(N), [0], np.nan)}, r"^reward: NaN or inf in 1 of 50 rows"),
    ({"rewards": np.zeros(N + 1)}, r"^reward: expected 50 rows"),
    ({"contexts": np.zeros((0, 2)), "arms": np.zeros(0, int), "rewards": np.zeros(0), "propensities": None},
     r"^feedback: no rows"),
]


@pytest.mark.parametrize(("changes", "message"), FEEDBACK_CASES)
def test_logged_feedback_rejects_bad_values(feedback, changes, message):
    with pytest.raises(ValueError, match=message) as error:
        LoggedFeedback(**_raw(feedback, **changes))
    one_line(error)


FRAME_CASES = [
    (lambda d: d.assign(score=np.where(np.arange(N) == 4, np.nan, d["score"])), {},
     r"^score: NaN or inf in 1 of 50 rows; impute before fitting"),
    (lambda d: d.assign(age=pd.array([None] * 2 + [1.0] * (N - 2), dtype="Float64")), {},
     r"^age: NaN or inf in 2 of 50 rows"),
    (lambda d: d.assign(propensity=np.where(np.arange(N) < 3, np.nan, 0.5)), {},
     r"^propensity: missing or NaN in 3 of 50 rows"),
    (lambda d: d.rename(columns={"propensity": "p"}).assign(p=0.0), {"propensity": "p"},
     r"^p: zero or negative in 50 of 50 rows"),
    (lambda d: d.assign(propensity=1.2), {}, r"^propensity: above 1 in 50 of 50 rows"),
    (lambda d: d.drop(columns=["propensity"]), {}, r"^feedback: columns not in the frame: \['propensity'\]"),
    (lambda d: d, {"features": ["age", "height"]}, r"^feedback: columns not in the frame: \['height'\]"),
    (lambda d: d.assign(city="x"), {"features": ["age", "city"]}, r"^features: non-numeric columns \['city'\]"),
    (lambda d: d.assign(arm="red"), {"arms": ["red"]}, r"^arm_labels: need at least 2 arms, got 1"),
    (lambda d: d, {"arms": ["red", "green"]}, r"^arm: \d+ of 50 rows have arms unknown to the policy \['blue'\]"),
    (lambda d: d.assign(arm=np.where(np.arange(N) == 0, None, d["arm"])), {}, r"^arm: missing arm in 1 of 50 rows"),
    (lambda d: d.assign(reward="yes"), {}, r"^reward: rewards must be numeric"),
    (lambda d: d.assign(reward=np.inf), {}, r"^reward: NaN or inf in 50 of 50 rows"),
]


@pytest.mark.parametrize(("change", "kwargs", "message"), FRAME_CASES)
def test_from_frame_names_the_column(frame, change, kwargs, message):
    kwargs = {"features": ["age", "score"], **kwargs}
    with pytest.raises(ValueError, match=message) as error:
        LoggedFeedback.from_frame(change(frame), **kwargs)
    one_line(error)


# ----------------------------------------------------------------------------------------------- policies
@pytest.mark.parametrize("policy_class", POLICY_CLASSES)
def test_policies_need_two_arms(feedback, policy_class):
    with pytest.raises(ValueError, match=r"^arms: a policy needs at least 2 arms, got 1$") as error:
        policy_class(arms=["red"]).fit(feedback)
    one_line(error)


@pytest.mark.parametrize("policy_class", POLICY_CLASSES)
def test_logged_arms_unknown_to_the_policy(feedback, policy_class, monkeypatch):
    policy = policy_class().fit(feedback.subset(feedback.arms < 2))  # labels blue, green, red; rows of blue, green
    before = policy.action_probabilities(feedback.contexts[:3])
    extended = LoggedFeedback(feedback.contexts, np.where(np.arange(N) < 5, 3, feedback.arms), feedback.rewards,
                              feedback.propensities, (*feedback.arm_labels, "purple"))
    monkeypatch.setattr(policy_class, "_update", lambda *args: pytest.fail("learned before checking the arms"))
    with pytest.raises(ValueError, match=r"^arm: 5 of 50 rows have arms unknown to the policy \['purple'\]; "
                                         r"known arms: \['blue', 'green', 'red'\]$") as error:
        policy.partial_fit(extended)
    one_line(error)
    monkeypatch.undo()
    np.testing.assert_array_equal(policy.action_probabilities(feedback.contexts[:3]), before)
    with pytest.raises(ValueError, match=r"unknown to the policy \['purple'\]"):
        policy_class(arms=feedback.arm_labels).fit(extended)


@pytest.mark.parametrize("policy_class", POLICY_CLASSES)
def test_action_probabilities_reject_nan_and_wrong_width(feedback, policy_class):
    policy = policy_class().fit(feedback)
    contexts = feedback.contexts[:4].copy()
    contexts[2, 1] = np.nan
    with pytest.raises(ValueError, match=r"^contexts: NaN or inf in 1 of 4 rows \(first in feature 1\)") as error:
        policy.action_probabilities(contexts)
    one_line(error)
    with pytest.raises(ValueError, match=r"^contexts: NaN or inf"):
        policy.sample(contexts, random_state=0)
    with pytest.raises(ValueError, match=r"^contexts: expected 2 features, got 3$"):
        policy.action_probabilities(np.zeros((4, 3)))
    with pytest.raises(ValueError, match=r"^contexts: the policy was fitted on 2 features, the feedback has 1$"):
        policy.partial_fit(LoggedFeedback(feedback.contexts[:, :1], feedback.arms, feedback.rewards,
                                          feedback.propensities, feedback.arm_labels))


@pytest.mark.parametrize("policy_class", POLICY_CLASSES)
def test_weighting_by_propensity_needs_propensities(feedback, policy_class):
    unknown = LoggedFeedback(**_raw(feedback, propensities=None))
    with pytest.raises(ValueError, match=r"^propensity: weight_by_propensity=True needs the logging propensities"):
        policy_class(weight_by_propensity=True).fit(unknown)
    policy_class().fit(unknown)  # unweighted learning does not need them


@pytest.mark.parametrize(("policy", "message"), [
    (EpsilonGreedy(epsilon=1.5), r"^epsilon: must be in \[0, 1\], got 1\.5$"),
    (LinEpsilonGreedy(epsilon=-0.1), r"^epsilon: must be in \[0, 1\]"),
    (UCB1(alpha=-1), r"^alpha: must be >= 0"),
    (LinTS(alpha=-1), r"^alpha: must be >= 0"),
    (LinUCB(l2=0), r"^l2: the ridge penalty must be > 0, got 0$"),
    (LinTS(n_draws=0), r"^n_draws: must be >= 1"),
    (ThompsonSampling(prior_beta=0), r"^prior_beta: must be > 0"),
    (ThompsonSampling(n_draws=0), r"^n_draws: must be >= 1"),
    (NeuralTS(hidden=()), r"^hidden: need at least one layer"),
    (NeuralTS(epochs=0), r"^epochs: must be >= 1"),
])
def test_bad_hyperparameters(feedback, policy, message):
    with pytest.raises(ValueError, match=message) as error:
        policy.fit(feedback)
    one_line(error)


def test_thompson_sampling_needs_rewards_in_unit_interval(feedback):
    rewards = feedback.rewards.copy()
    rewards[:2] = 3.0
    with pytest.raises(ValueError, match=r"^reward: Beta-Bernoulli Thompson sampling needs rewards in \[0, 1\]; "
                                         r"2 of 50 rows are outside$"):
        ThompsonSampling().fit(LoggedFeedback(**_raw(feedback, rewards=rewards)))




@pytest.mark.parametrize(("priors", "message"), [
    ({"prior_alpha": [1.0, 2.0]}, r"^prior_alpha: expected one value or one per arm \(3\), got shape \(2,\)$"),
    ({"prior_alpha": [1.0, 2.0, 3.0, 4.0]},
     r"^prior_alpha: expected one value or one per arm \(3\), got shape \(4,\)$"),
    ({"prior_beta": [[1.0, 2.0, 3.0]]}, r"^prior_beta: expected one value or one per arm \(3\), got shape \(1, 3\)$"),
    ({"prior_alpha": [1.0, 2.0, 3.0], "prior_beta": [1.0]},
     r"^prior_beta: expected one value or one per arm \(3\), got shape \(1,\)$"),
    ({"prior_alpha": [1.0, 0.0, 3.0]}, r"^prior_alpha: must be > 0 \(one value or one per arm\)"),
    ({"prior_beta": np.inf}, r"^prior_beta: must be > 0 \(one value or one per arm\), got inf$"),
])
def test_thompson_sampling_per_arm_priors_need_one_value_per_arm(feedback, priors, message):
    with pytest.raises(ValueError, match=message) as error:
        ThompsonSampling(**priors).fit(feedback)
    one_line(error)
    with pytest.raises(ValueError, match=message):  # the same check when the policy acts before any fit
        ThompsonSampling(**priors, arms=feedback.arm_labels).action_probabilities(feedback.contexts[:2])


def test_thompson_sampling_per_arm_priors_of_the_right_length_work(feedback):
    policy = ThompsonSampling(prior_alpha=[1.0, 2.0, 3.0], prior_beta=(4.0, 5.0, 6.0)).fit(feedback)
    alpha, beta = policy.posterior()
    np.testing.assert_array_equal(alpha - policy.reward_sums_, [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(beta - (policy.pulls_ - policy.reward_sums_), [4.0, 5.0, 6.0])


# ----------------------------------------------------------------------------------------------- fit_statistics
def test_fit_statistics_needs_two_arms(feedback):
    stats = LinearStats.partial(feedback.contexts, np.zeros(N, dtype=np.int64), feedback.rewards, 1)
    with pytest.raises(ValueError, match=r"^arms: a policy needs at least 2 arms, got 1$") as error:
        LinUCB(arms=["red"]).fit_statistics(stats, ["red"], feedback.feature_names)
    one_line(error)
    with pytest.raises(ValueError, match=r"^arms: a policy needs at least 2 arms, got 1$"):
        LinTS().fit_statistics(stats, ["red"], feedback.feature_names)


@pytest.mark.parametrize("policy_class", [LinUCB, LinTS, LinEpsilonGreedy])
def test_fit_statistics_checks_arms_and_width_before_changing_the_policy(feedback, policy_class):
    policy = policy_class().fit(feedback)
    before = policy.action_probabilities(feedback.contexts[:5])
    stats = LinearStats.partial(feedback.contexts, feedback.arms, feedback.rewards, 3)  # width 3: intercept + 2
    with pytest.raises(ValueError, match=r"^stats: statistics of width 3 for 1 features "
                                         r"\(expected 2 with fit_intercept=True\)$") as error:
        policy.fit_statistics(stats, feedback.arm_labels, ["age"])
    one_line(error)
    with pytest.raises(ValueError, match=r"^stats: statistics of width 3 for 2 features "
                                         r"\(expected 2 with fit_intercept=False\)$"):
        policy_class(fit_intercept=False).fit_statistics(stats, feedback.arm_labels, feedback.feature_names)
    with pytest.raises(ValueError, match=r"^stats: 3 arms in the statistics, 2 in the policy$"):
        policy.fit_statistics(stats, feedback.arm_labels[:2], feedback.feature_names)
    with pytest.raises(ValueError, match=r"^stats: 3 arms in the statistics, 4 in the policy$"):
        policy_class(arms=[*feedback.arm_labels, "purple"]).fit_statistics(stats, feedback.arm_labels,
                                                                           feedback.feature_names)
    np.testing.assert_array_equal(policy.action_probabilities(feedback.contexts[:5]), before)
    refitted = policy_class().fit_statistics(stats, feedback.arm_labels, feedback.feature_names)
    np.testing.assert_allclose(refitted.action_probabilities(feedback.contexts[:5]), before)


@pytest.mark.parametrize("policy_class", POLICY_CLASSES)
def test_policies_given_one_arm_cannot_act(feedback, policy_class):
    """Cold start (acting before any fit) checks the arms as fit does."""
    with pytest.raises(ValueError, match=r"^arms: a policy needs at least 2 arms, got 1$") as error:
        policy_class(arms=["red"]).action_probabilities(feedback.contexts[:3])
    one_line(error)
    with pytest.raises(ValueError, match=r"^arms: a policy needs at least 2 arms, got 0$"):
        policy_class(arms=[]).sample(feedback.contexts[:3], random_state=0)


# ----------------------------------------------------------------------------------------------- target probabilities
check_target_probabilities = importlib.import_module("bandits.feedback").check_target_probabilities
UNIFORM = np.full((N, 3), 1 / 3)

TARGET_CASES = [
    (UNIFORM[:, :2] * 1.5, r"^target_probabilities: expected shape \(50, 3\) \(rows, arms\), got \(50, 2\)$"),
    (UNIFORM[:-1], r"^target_probabilities: expected shape \(50, 3\) \(rows, arms\), got \(49, 3\)$"),
    (UNIFORM[0], r"^target_probabilities: expected shape \(50, 3\) \(rows, arms\), got \(3,\)$"),
    (UNIFORM.T, r"^target_probabilities: expected shape \(50, 3\) \(rows, arms\), got \(3, 50\)$"),
    (_with(UNIFORM, (4, 0), 0.3),
     r"^target_probabilities: rows do not sum to 1 in 1 of 50 rows \(worst sum 0\.966667\)$"),
    (UNIFORM * 2, r"^target_probabilities: rows do not sum to 1 in 50 of 50 rows \(worst sum 2\)$"),
    (_with(_with(UNIFORM, (2, 0), -0.5), (2, 1), 7 / 6),
     r"^target_probabilities: values outside \[0, 1\] or NaN in 1 of 50 rows$"),
    (_with(UNIFORM, ([1, 3], 2), np.nan), r"^target_probabilities: values outside \[0, 1\] or NaN in 2 of 50 rows$"),
    (_with(UNIFORM, (0, 0), np.inf), r"^target_probabilities: values outside \[0, 1\] or NaN in 1 of 50 rows$"),
]


@pytest.mark.parametrize(("target", "message"), TARGET_CASES)
def test_target_probabilities_are_checked(feedback, target, message):
    with pytest.raises(ValueError, match=message) as error:
        check_target_probabilities(target, N, 3)
    one_line(error)
    with pytest.raises(ValueError, match=message) as error:
        evaluate(feedback, target, estimators=("ips",), reward_model=None)
    one_line(error)


def test_target_probabilities_within_rounding_are_clipped_into_the_unit_interval():
    nearly = _with(_with(UNIFORM, (0, 0), -1e-9), (0, 1), 2 / 3 + 1e-9)  # row 0: -1e-9, 2/3 + 1e-9, 1/3
    checked = check_target_probabilities(nearly, N, 3)
    assert checked.min() == 0.0 and checked.max() <= 1.0


@pytest.mark.filterwarnings("ignore::bandits.ope.PoorOverlapWarning")  # 50 rows: an ESS below 100 is expected
def test_a_policy_target_must_have_the_logs_arms(feedback):
    reordered = EpsilonGreedy(arms=["red", "green", "blue"]).fit(feedback)
    with pytest.raises(ValueError, match=r"^target: the policy's arms \['red', 'green', 'blue'\] differ from the "
                                         r"logs' arms \['blue', 'green', 'red'\]$") as error:
        evaluate(feedback, reordered, estimators=("ips",), reward_model=None)
    one_line(error)
    extra = EpsilonGreedy(arms=[*feedback.arm_labels, "purple"]).fit(feedback)
    with pytest.raises(ValueError, match=r"^target: the policy's arms \['blue', 'green', 'red', 'purple'\] differ"):
        evaluate(feedback, extra, estimators=("ips",), reward_model=None)
    same = EpsilonGreedy(arms=list(feedback.arm_labels)).fit(feedback)  # same arms, same order: fine
    assert evaluate(feedback, same, estimators=("ips",), reward_model=None).loc[0, "estimator"] == "ips"


# ----------------------------------------------------------------------------------------------- evaluate arguments
@pytest.mark.parametrize(("estimators", "message"), [
    (("ips", "magic"), r"^estimators: unknown \['magic'\]; choose from \['ips', 'snips', 'dm', 'dr', 'switch-dr', "
                       r"'dr-shrink', 'replay'\]$"),
    (("IPS",), r"^estimators: unknown \['IPS'\]"),
    ("magic", r"^estimators: unknown \['magic'\]"),
    ((), r"^estimators: unknown empty list; choose from"),
])
def test_unknown_estimator_names(feedback, estimators, message):
    with pytest.raises(ValueError, match=message) as error:
        evaluate(feedback, UNIFORM, estimators=estimators, reward_model=None)
    one_line(error)


@pytest.mark.filterwarnings("ignore::bandits.ope.PoorOverlapWarning")
@pytest.mark.parametrize("name", ["ips", "snips", "replay", "dr"])
def test_one_estimator_name_as_a_string(feedback, name):
    """`estimators="ips"` is one estimator, not the letters i, p and s."""
    table = evaluate(feedback, UNIFORM, estimators=name, reward_model=None if name != "dr" else "ridge",
                     min_ess_share=0.0)
    assert table["estimator"].tolist() == [name]
    listed = evaluate(feedback, UNIFORM, estimators=[name], reward_model=None if name != "dr" else "ridge",
                      min_ess_share=0.0)
    pd.testing.assert_frame_equal(table, listed)


@pytest.mark.parametrize(("estimators", "needing"), [
    (("dr",), r"\['dr'\]"), (("ips", "dm", "switch-dr"), r"\['dm', 'switch-dr'\]"), ("dr-shrink", r"\['dr-shrink'\]"),
])
def test_reward_model_none_while_a_model_based_estimator_is_asked_for(feedback, estimators, needing):
    with pytest.raises(ValueError, match=rf"^reward_model: estimators {needing} need a reward model; pass 'ridge', "
                                         r"a scikit-learn estimator or an \(n, K\) array$") as error:
        evaluate(feedback, UNIFORM, estimators=estimators, reward_model=None)
    one_line(error)


@pytest.mark.parametrize(("reward_model", "message"), [
    (np.zeros((N, 2)), r"^reward_model: expected a finite \(50, 3\) array of estimates, got shape \(50, 2\)$"),
    (np.zeros((N - 1, 3)), r"^reward_model: expected a finite \(50, 3\) array of estimates, got shape \(49, 3\)$"),
    (np.zeros(N), r"^reward_model: expected a finite \(50, 3\) array of estimates, got shape \(50,\)$"),
    (_with(np.zeros((N, 3)), (3, 1), np.nan),
     r"^reward_model: expected a finite \(50, 3\) array of estimates, got shape \(50, 3\)$"),
    ("forest", r"^reward_model: unknown model 'forest'; use 'ridge', a scikit-learn estimator or an \(n, K\) array$"),
    (3, r"^reward_model: expected 'ridge', a scikit-learn estimator or an array, got <class 'int'>$"),
])
def test_bad_reward_models(feedback, reward_model, message):
    with pytest.raises(ValueError, match=message) as error:
        evaluate(feedback, UNIFORM, estimators=("ips", "dr"), reward_model=reward_model)
    one_line(error)


def test_reward_contexts_need_one_row_per_logged_round(feedback):
    with pytest.raises(ValueError, match=r"^reward_contexts: expected 50 rows, got 49$") as error:
        evaluate(feedback, UNIFORM, estimators=("dr",), reward_contexts=np.zeros((N - 1, 4)))
    one_line(error)
    with pytest.raises(ValueError, match=r"^reward_contexts: expected 50 rows, got 51$"):
        cross_fit_rewards(feedback, contexts=np.zeros((N + 1, 2)))
    with pytest.raises(ValueError, match=r"^reward_contexts: NaN or inf in 1 of 50 rows \(first in feature 3\)"):
        cross_fit_rewards(feedback, contexts=_with(np.zeros((N, 4)), (7, 3), np.nan))
    wider = np.column_stack([feedback.contexts, np.arange(N) % 2])  # more features than the policy: fine
    assert cross_fit_rewards(feedback, contexts=wider).shape == (N, 3)


def test_cross_fitting_needs_two_folds(feedback):
    with pytest.raises(ValueError, match=r"^n_folds: cross-fitting needs at least 2 folds, got 1$") as error:
        evaluate(feedback, UNIFORM, estimators=("dr",), n_folds=1)
    one_line(error)


def test_evaluation_needs_propensities(feedback):
    unknown = LoggedFeedback(**_raw(feedback, propensities=None))
    with pytest.raises(ValueError, match=r"^propensity: off-policy evaluation needs the logging propensities, "
                                         r"and these logs have none$") as error:
        evaluate(unknown, UNIFORM, estimators=("ips",), reward_model=None)
    one_line(error)


@pytest.mark.parametrize(("settings", "message"), [
    ({"clip": 0.0}, r"^clip: must be > 0 \(or None for no clipping\), got 0\.0$"),
    ({"switch_threshold": -1.0}, r"^switch_threshold: must be > 0, got -1\.0$"),
    ({"shrinkage": 0.0}, r"^shrinkage: must be > 0, got 0\.0$"),
])
def test_bad_estimator_settings(feedback, settings, message):
    with pytest.raises(ValueError, match=message) as error:
        evaluate(feedback, UNIFORM, estimators=("ips",), reward_model=None, **settings)
    one_line(error)


@pytest.mark.parametrize(("confidence", "shown"), [(1.5, "1.5"), (1.0, "1.0"), (0.0, "0.0"), (-0.2, "-0.2"),
                                                   (float("nan"), "nan")])
def test_confidence_is_checked_before_any_work(feedback, monkeypatch, confidence, shown):
    target = EpsilonGreedy().fit(feedback)
    monkeypatch.setattr(importlib.import_module("bandits.ope.evaluate").RewardModelPass, "partial",
                        lambda *args, **kwargs: pytest.fail("fitted a reward model before checking confidence"))
    monkeypatch.setattr(target, "action_probabilities",
                        lambda *args: pytest.fail("scored the target before checking confidence"))
    with pytest.raises(ValueError, match=rf"^confidence: must be in \(0, 1\), got {shown}$") as error:
        evaluate(feedback, target, estimators=("ips", "dr"), confidence=confidence)
    one_line(error)


@pytest.mark.filterwarnings("ignore::bandits.ope.PoorOverlapWarning")
def test_the_confidence_check_patch_takes_effect(feedback, monkeypatch):
    """Control for the test above: with a valid confidence the patched reward model is the one evaluate calls."""
    calls = []
    original = evaluate_module.RewardModelPass.partial

    def recorded(self, chunk):
        calls.append(chunk)
        return original(self, chunk)

    monkeypatch.setattr(evaluate_module.RewardModelPass, "partial", recorded)
    table = evaluate(feedback, UNIFORM, estimators=("dm",), confidence=0.9, min_ess_share=0.0)
    assert len(calls) == 1
    assert np.isfinite(table.loc[0, "value"])


# ----------------------------------------------------------------------------------------------- ope_partial
OPE_PARTIAL_CASES = [
    ("dm", {}, r"^dm: needs the reward model's q_logged and q_target$"),
    ("dr", {"q_logged": np.zeros(N)}, r"^dr: needs the reward model's q_logged and q_target$"),
    ("switch-dr", {"q_target": np.zeros(N)}, r"^switch-dr: needs the reward model's q_logged and q_target$"),
    ("dr-shrink", {}, r"^dr-shrink: needs the reward model's q_logged and q_target$"),
    ("replay", {"q_logged": np.zeros(N), "q_target": np.zeros(N)}, r"^replay: needs replay_match$"),
    ("magic", {}, r"^estimators: unknown estimator 'magic'; choose from \['ips', 'snips', 'dm', 'dr', 'switch-dr', "
                  r"'dr-shrink', 'replay'\]$"),
]


@pytest.mark.parametrize(("name", "inputs", "message"), OPE_PARTIAL_CASES, ids=[case[0] for case in OPE_PARTIAL_CASES])
def test_ope_partial_names_the_estimator_missing_an_input(name, inputs, message):
    ones = np.ones(N)
    with pytest.raises(ValueError, match=message) as error:
        ope_partial(("ips", name), ones, ones / 2, ones / 3, **inputs)
    one_line(error)


# ----------------------------------------------------------------------------------------------- ContextEncoder
ENCODER_CASES = [
    (lambda d: d, ["age", "height"], r"^features: columns not in the frame: \['height'\]$"),
    (lambda d: d, [], r"^features: need at least one feature to encode$"),
    (lambda d: d.assign(age=np.nan), ["age", "score"], r"^age: no finite values to encode$"),
    (lambda d: d.assign(score=np.inf), ["age", "score"], r"^score: no finite values to encode$"),
    (lambda d: d.assign(score=pd.array([None] * N, dtype="Float64")), ["score"],
     r"^score: no finite values to encode$"),
]


@pytest.mark.parametrize(("change", "features", "message"), ENCODER_CASES)
def test_context_encoder_names_the_column(frame, change, features, message):
    with pytest.raises(ValueError, match=message) as error:
        ContextEncoder(features).fit(change(frame))
    one_line(error)


def test_context_encoder_transform_needs_the_fitted_columns(frame):
    encoder = ContextEncoder(["age", "arm"]).fit(frame)
    with pytest.raises(ValueError, match=r"^features: columns not in the frame: \['arm'\]$") as error:
        encoder.transform(frame.drop(columns=["arm"]))
    one_line(error)


def test_from_frame_with_an_encoder_names_missing_columns(frame):
    with pytest.raises(ValueError, match=r"^feedback: columns not in the frame: \['height'\]$") as error:
        LoggedFeedback.from_frame(frame, ContextEncoder(["age", "height"]))
    one_line(error)
    with pytest.raises(ValueError, match=r"^age: no finite values to encode$"):
        LoggedFeedback.from_frame(frame.assign(age=np.nan), ContextEncoder(["age", "score"]))
