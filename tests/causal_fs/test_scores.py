"""Known answers and the properties of every bin-based score (docs/feature_selection.md, 'Properties the scores
satisfy')."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from causal_fs import score_features
from tests.causal_fs.conftest import crossover_exact, crossover_sample

ALL_BIN = ("hie", "hdd", "kl", "ed", "chi")


def test_crossover_hie_is_exactly_one_tenth_also_binarized():
    data = crossover_exact()
    scores = score_features(data, ["x", "above"], methods=("hie",), smoothing=0.0, random_state=0).to_frame()
    assert scores.loc["x", "hie"] == pytest.approx(0.100, abs=1e-12)
    assert scores.loc["above", "hie"] == pytest.approx(0.100, abs=1e-12)
    assert scores.loc["above", "n_bins"] == 2  # one bin per level, not CausalML's single bin
    smoothed = score_features(data, ["x", "above"], methods=("hie",), random_state=0).to_frame()
    assert smoothed["hie"].to_numpy() == pytest.approx([0.100, 0.100], abs=2e-3)


def test_crossover_sampled_hie_near_population_value():
    scores = score_features(crossover_sample(400_000, seed=1), ["x", "above", "noise"], random_state=0).to_frame()
    assert scores.loc["x", "hie"] == pytest.approx(0.100, abs=0.006)
    assert scores.loc["above", "hie"] == pytest.approx(0.100, abs=0.006)
    assert scores.loc["noise", "hie"] < 0.005
    assert scores.loc["x", "hdd"] > 50 * scores.loc["noise", "hdd"]


def test_constant_feature_scores_zero_everywhere():
    data = crossover_sample(5_000, seed=2).assign(constant=7.0, constant_label="a")
    scores = score_features(data, ["constant", "constant_label"], methods=ALL_BIN, random_state=0).to_frame()
    assert (scores[list(ALL_BIN) + ["combined"]].to_numpy() == 0).all()


def test_equal_shift_of_every_arm_gives_zero_hie():
    """A prognostic feature: every arm's rate moves by the same amount, so arm 1 wins every bin."""
    rows = []
    for level, shift in enumerate((0.0, 0.2, 0.4)):
        for arm, base in enumerate((0.10, 0.30, 0.20)):
            count = 600
            ones = int(round((base + shift) * count))
            rows.append(pd.DataFrame({"prognostic": level, "arm": arm,
                                      "reward": np.r_[np.ones(ones), np.zeros(count - ones)]}))
    scores = score_features(pd.concat(rows), ["prognostic"], methods=("hie",), random_state=0).to_frame()
    assert scores.loc["prognostic", "hie"] == 0.0


@pytest.mark.parametrize("reward", [0.0, 1.0])
def test_degenerate_cells_give_finite_scores(reward):
    """All-zero or all-one rewards, an arm missing from most bins, bins of one row: numbers, no NaN or inf."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=400)
    arm = np.where(x > 1.5, "rare", rng.choice(["a", "b"], size=400))
    data = pd.DataFrame({"x": x, "cat": rng.choice(["u", "v"], 400), "arm": arm, "reward": reward})
    data.loc[:3, "x"] = np.nan
    scores = score_features(data, ["x", "cat"], methods=(*ALL_BIN, "f", "lr"), n_permutations=20,
                            random_state=0).to_frame()
    assert np.isfinite(scores.select_dtypes("number").to_numpy()).all()
    assert (scores[list(ALL_BIN)].abs().to_numpy() < 1e-9).all()


def test_nan_values_get_their_own_bin():
    """Missingness that flips the best arm is found (NaN is a bin), and NaN never falls into a value bin."""
    rng = np.random.default_rng(4)
    n = 20_000
    missing = rng.random(n) < 0.3
    x = np.where(missing, np.nan, rng.normal(size=n))
    arm = rng.integers(0, 2, n)
    rate = np.where(missing, np.where(arm == 0, 0.5, 0.1), np.where(arm == 0, 0.1, 0.5))
    data = pd.DataFrame({"x": x, "arm": arm, "reward": (rng.random(n) < rate).astype(float)})
    result = score_features(data, ["x"], methods=("hie",), random_state=0)
    scores = result.to_frame()
    assert scores.loc["x", "missing_share"] == pytest.approx(missing.mean())
    assert scores.loc["x", "n_bins"] == 11
    assert scores.loc["x", "hie"] == pytest.approx(0.3 * 0.4, abs=0.02)
    assert result.bins["x"][-1] == "missing"


def test_permutation_p_values_are_uniform_under_the_null():
    """Pure noise with randomized arms: p-values of every method fall in [a, b] about as often as b - a says."""
    p_values = {method: [] for method in ("hie", "hdd", "kl")}
    for seed in range(60):
        rng = np.random.default_rng(seed)
        n = 600
        data = pd.DataFrame({"x": rng.normal(size=n), "c": rng.choice(list("pqr"), n),
                             "arm": rng.integers(0, 3, n), "reward": (rng.random(n) < 0.3).astype(float)})
        scores = score_features(data, ["x", "c"], methods=("hie", "hdd", "kl"), n_permutations=39,
                                n_bootstrap=0, random_state=seed).to_frame()
        for method in p_values:
            p_values[method] += list(scores[f"p_{method}"])
    for method, values in p_values.items():
        values = np.asarray(values)
        for cut in (0.1, 0.25, 0.5, 0.75):
            # 120 p-values on a grid of 1/40: the share at or below `cut` is binomial(120, cut) (4 sd bound).
            assert abs((values <= cut + 1e-9).mean() - cut) < 4 * np.sqrt(cut * (1 - cut) / len(values)), method


def test_modifier_is_significant_and_interval_covers_the_truth(crossover):
    scores = score_features(crossover, ["x", "noise"], n_permutations=199, random_state=0).to_frame()
    assert scores.loc["x", "p_hie"] == pytest.approx(1 / 200)
    assert scores.loc["noise", "q_hie"] > 0.05
    assert scores.loc["x", "hie_low"] < scores.loc["x", "hie"] < scores.loc["x", "hie_high"]
    # The interval's width matches the estimate's sampling spread (about 2 x 1.96 x 0.004 at 30,000 rows).
    assert 0.008 < scores.loc["x", "hie_high"] - scores.loc["x", "hie_low"] < 0.03
    assert scores.loc["x", "combined"] == 1.0


def test_same_seed_same_output_and_permutations_depend_on_it(crossover):
    first = score_features(crossover, ["x", "noise"], n_permutations=30, random_state=7).to_frame()
    again = score_features(crossover, ["x", "noise"], n_permutations=30, random_state=7).to_frame()
    other = score_features(crossover, ["x", "noise"], n_permutations=30, random_state=8).to_frame()
    pd.testing.assert_frame_equal(first, again)
    assert not first["hie_low"].equals(other["hie_low"])
    pd.testing.assert_series_equal(first["hie"], other["hie"])


def test_propensity_weighting_undoes_a_targeting_policy():
    """Arm 1 logged mostly where it is worse: plain means invert the crossover, IPW means recover it."""
    rng = np.random.default_rng(6)
    n = 60_000
    x = rng.normal(size=n)
    p_arm1 = np.where(x >= 0, 0.1, 0.9)
    arm = (rng.random(n) < p_arm1).astype(int)
    rate = np.where(x >= 0, np.where(arm == 1, 0.4, 0.2), np.where(arm == 1, 0.1, 0.3))
    data = pd.DataFrame({"x": x, "arm": arm, "reward": (rng.random(n) < rate).astype(float),
                         "propensity": np.where(arm == 1, p_arm1, 1 - p_arm1)})
    weighted = score_features(data, ["x"], methods=("hie",), propensity_col="propensity", random_state=0).to_frame()
    # Truth: arm 0 overall (0.25 vs 0.25 tie -> either), per-side gain 0.5 * 0.2 = 0.1.
    assert weighted.loc["x", "hie"] == pytest.approx(0.1, abs=0.01)


def test_real_valued_rewards_use_gaussian_divergences():
    rng = np.random.default_rng(8)
    n = 40_000
    x = rng.normal(size=n)
    arm = rng.integers(0, 2, n)
    reward = rng.normal(loc=np.where(x >= 0, arm, 1 - arm), scale=1.0)  # a crossover in the means
    result = score_features(pd.DataFrame({"x": x, "noise": rng.normal(size=n), "arm": arm, "reward": reward}),
                            ["x", "noise"], methods=("hie", "hdd", "kl", "ed", "chi"), random_state=0)
    scores = result.to_frame()
    assert not result.binary_reward and result.rows == n and result.arms == (0, 1)
    assert scores.loc["x", "hie"] == pytest.approx(0.5, abs=0.03)  # either arm overall, the other wins half
    assert (scores.loc["x", ["hdd", "kl", "ed", "chi"]] > 20 * scores.loc["noise", ["hdd", "kl", "ed", "chi"]].abs()
            ).all()
