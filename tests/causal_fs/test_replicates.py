"""Permutation and bootstrap replicates: blocks of bounded memory, user-level resampling, and the O(arms) divergence
sums (docs/feature_selection.md, 'Significance' and 'Memory')."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

from campaign_core import InputError
from causal_fs import score_features
from causal_fs.scores import PROBABILITY_CLIP, _bernoulli_pair_sum, _gaussian_pair_sum
from causal_fs.tables import Users, poisson_ones


def _pairwise(shares, kl):
    """The double sum written out: sum_{i,j} s_i s_j KL_ij over an explicit (arms x arms) matrix."""
    return np.einsum("...i,...j,...ij->...", shares, shares, kl)


@pytest.mark.parametrize("seed", range(3))
def test_bernoulli_divergence_sum_equals_the_pairwise_double_sum(seed):
    rng = np.random.default_rng(seed)
    shares = rng.dirichlet(np.ones(7), size=(4, 5))
    p = np.clip(rng.random((4, 5, 7)), PROBABILITY_CLIP, 1 - PROBABILITY_CLIP)
    p[0, 0, 2] = 0.0  # clipped like every other probability
    q = np.clip(p, PROBABILITY_CLIP, 1 - PROBABILITY_CLIP)
    kl = (q[..., :, None] * np.log(q[..., :, None] / q[..., None, :])
          + (1 - q[..., :, None]) * np.log((1 - q[..., :, None]) / (1 - q[..., None, :])))
    np.testing.assert_allclose(_bernoulli_pair_sum(shares, p), _pairwise(shares, kl), rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("offset", [0.0, 1e3])
def test_gaussian_divergence_sum_equals_the_pairwise_double_sum(offset):
    rng = np.random.default_rng(4)
    shares = rng.dirichlet(np.ones(6), size=(3, 4))
    mean, variance = offset + rng.normal(size=(3, 4, 6)), rng.gamma(2.0, size=(3, 4, 6))
    v_i, v_j, m_i, m_j = variance[..., :, None], variance[..., None, :], mean[..., :, None], mean[..., None, :]
    kl = 0.5 * (np.log(v_j / v_i) + (v_i + (m_i - m_j) ** 2) / v_j - 1)
    np.testing.assert_allclose(_gaussian_pair_sum(shares, mean, variance), _pairwise(shares, kl), rtol=1e-9,
                               atol=1e-12)


def _repeated_users(seed: int, users: int = 80, rows_per_user: int = 10, arms: int = 3) -> pd.DataFrame:
    """Users with their own favourite arm (unrelated to any feature) and user-level features: every feature is
    null, but a user's rows move together."""
    rng = np.random.default_rng(seed)
    user = np.repeat(np.arange(users), rows_per_user)
    favourite = rng.integers(0, arms, users)[user]
    arm = rng.integers(0, arms, len(user))
    reward = (rng.random(len(user)) < np.where(arm == favourite, 0.6, 0.1)).astype(float)
    return pd.DataFrame({"user_id": user, "x": rng.normal(size=users)[user], "c": rng.choice(list("pqrs"), users)[user],
                         "arm": arm, "reward": reward})


def _null_p_values(user_col: str | None) -> np.ndarray:
    p_values = []
    for seed in range(60):
        scores = score_features(_repeated_users(seed), ["x", "c"], user_col=user_col, n_permutations=39,
                                n_bootstrap=0, random_state=seed).to_frame()
        p_values += list(scores["p_hie"]) + list(scores["p_hdd"])
    return np.asarray(p_values)


def test_user_level_permutations_give_uniform_null_p_values_where_row_permutations_do_not():
    by_user = _null_p_values("user_id")
    for cut in (0.1, 0.25, 0.5, 0.75):
        # 240 p-values (two methods, not independent: a loose bound) on a grid of 1/40.
        assert abs((by_user <= cut + 1e-9).mean() - cut) < 4 * np.sqrt(cut * (1 - cut) / 120), cut
    by_row = _null_p_values(None)
    assert (by_row <= 0.1 + 1e-9).mean() > 0.3  # the row null is far too narrow when users repeat


def test_user_level_replicates_do_not_depend_on_row_order():
    data = _repeated_users(3)
    first = score_features(data, ["x", "c"], user_col="user_id", n_permutations=20, random_state=1).to_frame()
    shuffled = data.sample(frac=1.0, random_state=9)
    again = score_features(shuffled, ["x", "c"], user_col="user_id", n_permutations=20, random_state=1).to_frame()
    pd.testing.assert_frame_equal(first, again)


def test_user_permutation_is_a_permutation_of_users_for_user_level_features():
    users = Users.of_sorted(np.repeat([5, 7, 9, 11], [3, 1, 2, 3]))
    partner = users.partner_rows(np.random.default_rng(0))
    user_feature = np.repeat([50, 70, 90, 110], [3, 1, 2, 3])
    taken = user_feature[partner]
    assert sorted(taken[users.start]) == [50, 70, 90, 110]  # every user's features go to exactly one user
    for start, size in zip(users.start, users.size, strict=True):
        assert len(set(taken[start:start + size])) == 1  # and a user keeps one feature vector
    weights = users.weights(np.random.default_rng(1))
    for start, size in zip(users.start, users.size, strict=True):
        assert len(set(weights[start:start + size])) == 1


def test_blocks_of_replicates_give_the_same_numbers_as_one_block():
    data = _repeated_users(1)
    whole = score_features(data, ["x", "c"], n_permutations=40, random_state=2)
    blocks = score_features(data, ["x", "c"], n_permutations=40, random_state=2, replicate_memory_mb=0.1)
    assert whole.passes == 1 and blocks.passes > 5
    pd.testing.assert_frame_equal(whole.to_frame(), blocks.to_frame())


def test_a_replicate_that_cannot_fit_is_refused_naming_the_knob():
    data = _repeated_users(1)
    with pytest.raises(InputError, match=r"^replicate_memory_mb: one replicate of 2 features") as error:
        score_features(data, ["x", "c"], n_permutations=10, replicate_memory_mb=0.01)
    assert "\n" not in str(error.value)


def test_the_peak_memory_of_a_many_arm_run_stays_bounded():
    """80 arms x 10 features x 200 permutations and 200 bootstrap replicates: the replicate tables alone would be
    about 100 MB and a pairwise divergence 2 GB; the run's growth stays near the 64 MB asked for."""
    script = textwrap.dedent("""
        import resource
        import numpy as np, pandas as pd
        from causal_fs import score_features
        rng = np.random.default_rng(0)
        n = 10_000
        data = pd.DataFrame({f"x{i}": rng.normal(size=n) for i in range(10)})
        data["arm"] = rng.integers(0, 80, n)
        data["reward"] = (rng.random(n) < 0.1).astype(float)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        result = score_features(data, [f"x{i}" for i in range(10)], n_permutations=200, random_state=0,
                                replicate_memory_mb=64)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(result.passes, (after - before) / 1024)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    passes, growth_mb = done.stdout.split()
    assert int(passes) > 1
    assert float(growth_mb) < 64


def test_the_selector_takes_the_users_as_groups():
    from causal_fs import HTEFeatureSelector

    data = _repeated_users(2)
    by_user = HTEFeatureSelector(n_permutations=40, random_state=0).fit(
        data[["x", "c"]], data["reward"], arms=data["arm"], groups=data["user_id"])
    direct = score_features(data, ["x", "c"], user_col="user_id", n_permutations=40, random_state=0).to_frame()
    np.testing.assert_array_equal(by_user.scores_["p_hie"], direct["p_hie"])
    with pytest.raises(InputError, match="^groups: 3 values for 800 rows"):
        HTEFeatureSelector().fit(data[["x"]], data["reward"], arms=data["arm"], groups=[1, 2, 3])


@pytest.mark.parametrize("propensity_col", [None, "propensity"])
def test_row_blocks_add_up_to_the_scores_of_one_block(propensity_col):
    """A small memory cap cuts 20,000 rows into row blocks of 4,096: the observed scores and the interaction tests
    (which use the tables' sums of squared weights) equal those of one block."""
    rng = np.random.default_rng(6)
    n = 20_000
    data = pd.DataFrame({"x": rng.normal(size=n), "c": rng.choice(list("pqr"), n), "arm": rng.integers(0, 3, n)})
    data["reward"] = rng.normal(size=n) + (data["x"] > 0) * (data["arm"] == 1)
    data["propensity"] = rng.uniform(0.2, 0.6, n)
    options = {"methods": ("hie", "hdd", "f", "lr"), "propensity_col": propensity_col, "random_state": 0}
    whole = score_features(data, ["x", "c"], **options).to_frame()
    blocks = score_features(data, ["x", "c"], replicate_memory_mb=0.5, **options).to_frame()
    pd.testing.assert_frame_equal(whole, blocks, check_exact=False, rtol=1e-10)


def test_causalml_compat_scores_in_blocks_equal_one_block():
    """The compat filters' tables are a second layout held beside the first: both fit the cap together."""
    rng = np.random.default_rng(0)
    n = 3000
    data = pd.DataFrame({"x": rng.normal(size=n), "y": rng.normal(size=n), "arm": rng.choice(["control", "t1"], n),
                         "reward": rng.integers(0, 2, n)})
    options = {"methods": ("kl", "ed", "hie"), "compat": "causalml", "n_permutations": 20, "random_state": 0}
    whole = score_features(data, ["x", "y"], **options)
    blocks = score_features(data, ["x", "y"], replicate_memory_mb=0.25, **options)
    assert whole.passes == 1 and blocks.passes > 5
    pd.testing.assert_frame_equal(whole.to_frame(), blocks.to_frame())


def _bincount_tables(codes, arms, reward, weight, layout, replicates, seed, users):
    """The tables by four `np.bincount` calls over the (features, rows) cell index per replicate: the form the
    compiled pass replaced, kept here as its reference."""
    cell_base = ((np.arange(layout.n_features) * layout.n_bins)[:, None] + codes) * layout.n_arms
    binary = bool(np.all((reward == 0) | (reward == 1)))
    out = [np.empty((len(replicates), *layout.shape()[1:])) for _ in range(4)]
    for position, replicate in enumerate(replicates):
        rng = np.random.default_rng([*seed, replicate])
        base, a, y, w, resample = cell_base, arms, reward, weight, None
        if 0 < replicate <= layout.n_permutations and users is None:
            order = rng.permutation(len(arms))
            a, y, w = arms[order], reward[order], None if weight is None else weight[order]
        elif 0 < replicate <= layout.n_permutations:
            base = cell_base[:, users.partner_rows(rng)]
        elif replicate > layout.n_permutations:
            resample = poisson_ones(rng, len(arms)) if users is None else users.weights(rng)
        unit = resample if w is None else (w if resample is None else resample * w)

        def total(index, values, cells):
            repeated = None if values is None else np.tile(values, layout.n_features)
            return np.bincount(index, weights=repeated, minlength=cells).astype(float)

        rows, weights, wy, wyy = (array[position] for array in out)
        if binary:
            index = (base * 2 + (a * 2 + y.astype(np.int64))[None, :]).ravel()
            counts = total(index, resample, layout.cells * 2).reshape(*rows.shape, 2)
            rows[...] = counts[..., 0] + counts[..., 1]
            if unit is not resample:
                counts = total(index, unit, layout.cells * 2).reshape(*rows.shape, 2)
            weights[...] = counts[..., 0] + counts[..., 1]
            wy[...] = wyy[...] = counts[..., 1]
        else:
            index = (base + a[None, :]).ravel()
            unit = np.ones(len(a)) if unit is None else unit
            rows[...] = total(index, resample, layout.cells).reshape(rows.shape)
            weights[...] = total(index, unit, layout.cells).reshape(rows.shape)
            wy[...] = total(index, unit * y, layout.cells).reshape(rows.shape)
            wyy[...] = total(index, unit * y * y, layout.cells).reshape(rows.shape)
    return out


@pytest.mark.parametrize("binary", [True, False])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("by_user", [False, True])
def test_the_compiled_pass_gives_the_bincount_tables_bit_for_bit(binary, weighted, by_user):
    from causal_fs.tables import Layout, Users, chunk_tables

    rng = np.random.default_rng(3)
    n, layout = 2_000, Layout(4, 6, 3, 15, 15)
    codes = rng.integers(0, 6, size=(4, n))
    arms = rng.integers(0, 3, n)
    reward = (rng.random(n) < 0.3).astype(float) if binary else rng.normal(size=n)
    weight = rng.uniform(0.5, 3.0, n) if weighted else None
    users = Users.of_sorted(np.sort(rng.integers(0, 500, n))) if by_user else None
    before = codes.copy()
    ours = chunk_tables(codes, arms, reward, weight, layout, range(0, 31), [5, 6], users)
    reference = _bincount_tables(codes, arms, reward, weight, layout, range(0, 31), [5, 6], users)
    for name, expected in zip(("rows", "weight", "wy", "wyy"), reference, strict=True):
        np.testing.assert_array_equal(getattr(ours, name), expected, err_msg=name)
    np.testing.assert_array_equal(codes, before)  # the caller's codes are not touched
    one = chunk_tables(codes[:1], arms, reward, weight, Layout(1, 6, 3, 15, 15), range(0, 2), [5, 6], users)
    np.testing.assert_array_equal(codes, before)  # nor a single feature's (its transpose is contiguous)
    assert one.rows.shape == (2, 1, 6, 3)


def test_the_bootstrap_weights_are_poisson_one():
    """Inverse-CDF draws: the counts 0..5 in 10^6 draws against Poisson(1) by chi-square, and the mean and variance."""
    from scipy import stats

    draws = poisson_ones(np.random.default_rng(4), 1_000_000)
    observed = np.bincount(draws.astype(np.int64), minlength=7)[:7].astype(float)
    observed[6] = (draws >= 6).sum()
    expected = np.r_[stats.poisson.pmf(np.arange(6), 1.0), stats.poisson.sf(5, 1.0)] * draws.size
    assert stats.chisquare(observed, expected).pvalue > 0.001
    assert abs(draws.mean() - 1) < 0.005 and abs(draws.var() - 1) < 0.01
    assert poisson_ones(np.random.default_rng(4), 10).dtype == np.float64


@pytest.mark.parametrize("binary", [True, False])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("by_user", [False, True])
def test_the_observed_pass_gives_the_row_block_tables_bit_for_bit(binary, weighted, by_user):
    """The observed data is one compiled pass per feature (no code matrix, features on threads). Its tables are, bit
    for bit, replicate 0 of the row blocks' code matrices added up block by block, and so are the extras of the
    interaction tests (`_row_block_reference`, the form the pass replaced): numeric features with NaN and infinite
    values, few-valued and categorical ones with an "other" level, over several row blocks."""
    from causal_fs.options import ScoringOptions
    from causal_fs.plan import SketchPass
    from causal_fs.scoring import TablePass
    from causal_fs.tables import Layout

    rng = np.random.default_rng(11)
    n = 9_000
    x = rng.normal(size=n) * 1e3
    x[rng.random(n) < 0.1] = np.nan
    x[:3] = [np.inf, -np.inf, np.inf]
    data = pd.DataFrame({"x": x, "small": rng.integers(0, 4, n).astype(float),
                         "c": rng.choice(list("pqrstuvwxyz"), n, p=[0.3, 0.3, 0.3] + [0.0125] * 8),
                         "arm": rng.choice(["a", "b", "c"], n), "user": rng.integers(0, 2_000, n)})
    data["reward"] = (rng.random(n) < 0.3).astype(float) if binary else rng.normal(size=n)
    data["propensity"] = rng.uniform(0.1, 1.0, n)
    options = ScoringOptions(features=("x", "small", "c"), arm_col="arm", reward_col="reward", methods=("hie",),
                             n_bins=10, control=None, propensity_col="propensity" if weighted else None,
                             user_col="user" if by_user else None, n_permutations=1, n_bootstrap=0, compat=None,
                             seed=3, smoothing=1.0, confidence=0.95, combined_weights=(0.5, 0.5), max_levels=50,
                             min_level_share=0.02, forest_rows=1000)
    plan = SketchPass(options, None).finalize(SketchPass(options, None).partial(data))
    assert plan.bins[2].has_other and plan.binary_reward == binary
    layout = Layout(3, plan.max_bins, 3, 1, 0)
    fast, fast_extras = TablePass(plan.bins, plan, layout, options, range(1), 2_048, threads=2).partial(data)
    blocks, block_extras = _row_block_reference(data, plan, layout, options, 2_048)
    for name in ("rows", "weight", "wy", "wyy"):
        np.testing.assert_array_equal(getattr(fast, name)[0], getattr(blocks, name)[0], err_msg=name)
    np.testing.assert_array_equal(fast_extras.x_sum, block_extras.x_sum)
    np.testing.assert_array_equal(fast_extras.weight_sq, block_extras.weight_sq)
    assert fast.rows[0].sum() == 3 * n


def _row_block_reference(data, plan, layout, options, block_rows):
    """The observed tables and extras as row blocks' code matrices, summed block by block: replicate 0 of
    `chunk_tables` per block, the values' sums per bin and the squared weights per cell by `np.bincount`."""
    from causal_fs.binning import label_codes, numeric_values
    from causal_fs.scoring import _grouped_by_user
    from causal_fs.tables import ObservedExtras, chunk_tables

    starts = list(range(0, len(data), block_rows))
    if options.user_col is not None:
        data, words = _grouped_by_user(data, options)
        user_starts = Users.of_sorted(words).start
        starts = sorted({int(user_starts[np.searchsorted(user_starts, start)]) for start in starts} | {0})
    total = None
    for start, stop in zip(starts, [*starts[1:], len(data)], strict=True):
        block = data.iloc[start:stop]
        codes = np.array([feature.codes(block[feature.name]) for feature in plan.bins])
        x_sum = np.zeros((layout.n_features, layout.n_bins))
        for f, feature in enumerate(plan.bins):
            if not feature.categorical:
                values = np.nan_to_num(numeric_values(block[feature.name]), nan=0.0, posinf=0.0, neginf=0.0)
                x_sum[f, :feature.n_bins] = np.bincount(codes[f], weights=values, minlength=feature.n_bins)
        arms = label_codes(block[options.arm_col], plan.arms)
        reward = block[options.reward_col].to_numpy(dtype=np.float64)
        weight = None if options.propensity_col is None else 1.0 / block[options.propensity_col].to_numpy()
        tables = chunk_tables(codes, arms, reward, weight, layout, range(1), [0])
        if weight is None:
            weight_sq = tables.rows[0].copy()
        else:
            cells = ((np.arange(layout.n_features) * layout.n_bins)[:, None] + codes) * layout.n_arms + arms[None, :]
            weight_sq = np.bincount(cells.ravel(), weights=np.tile(weight**2, len(plan.bins)),
                                    minlength=layout.cells).reshape(layout.shape()[1:])
        part = (tables, ObservedExtras(x_sum, weight_sq))
        total = part if total is None else (total[0] + part[0], total[1] + part[1])
    return total


def test_exact_bin_edges_are_the_inverted_cdf_deciles():
    """An in-memory column's edges (one sort, read off) against numpy's inverted-CDF quantiles of its present values,
    repeats and the maximum dropped; a column with at most n_bins distinct values gets one bin per value."""
    from causal_fs.binning import feature_bins, sketch_feature

    rng = np.random.default_rng(4)
    columns = [rng.normal(size=10_001), rng.integers(0, 40, 5_000).astype(float), np.round(rng.lognormal(size=777), 1),
               np.r_[np.zeros(900), rng.normal(size=100)],
               np.where(rng.random(3_000) < 0.4, np.nan, rng.normal(size=3_000)),
               rng.integers(0, 7, 500).astype(float), np.r_[np.full(20, np.nan), np.arange(10.0)]]
    for index, column in enumerate(columns):
        bins = feature_bins("x", sketch_feature(pd.Series(column), 10, None, np.random.default_rng(0)), 10)
        present = column[~np.isnan(column)]
        distinct = np.unique(present)
        if len(distinct) <= 10:
            expected = distinct[:-1]
        else:
            expected = np.unique(np.quantile(present, np.arange(1, 10) / 10, method="inverted_cdf"))
            expected = expected[expected < present.max()]
        np.testing.assert_array_equal(bins.edges, expected, err_msg=f"column {index}")


def test_one_replicate_per_block_gives_the_numbers_of_one_block():
    """At a cap that fits a single replicate per pass, the first pass holds the observed data alone (its compiled
    per-feature pass); every p-value and interval equals that of one block."""
    from dataclasses import replace

    from causal_fs.options import ScoringOptions
    from causal_fs.scoring import replicate_blocks
    from causal_fs.tables import Layout

    rng = np.random.default_rng(5)
    n = 3_000
    data = pd.DataFrame({"x": rng.normal(size=n), "y": rng.normal(size=n), "arm": rng.integers(0, 3, n)})
    data["reward"] = (rng.random(n) < 0.2 + 0.2 * (data["x"] > 0) * (data["arm"] == 1)).astype(float)
    options = {"n_permutations": 6, "n_bootstrap": 6, "random_state": 1}
    whole = score_features(data, ["x", "y"], **options)
    scoring = ScoringOptions(features=("x", "y"), arm_col="arm", reward_col="reward", methods=("hie", "hdd"),
                             n_bins=10, control=None, propensity_col=None, user_col=None, n_permutations=6,
                             n_bootstrap=6, compat=None, seed=1, smoothing=1.0, confidence=0.95,
                             combined_weights=(0.5, 0.5), max_levels=50, min_level_share=0.005, forest_rows=1000)
    layout = Layout(2, 11, 3, 6, 6)  # ten quantile bins and the NaN bin

    def first_block(mb: float) -> int:
        try:
            return len(replicate_blocks([layout], replace(scoring, replicate_memory_mb=mb), False, n).blocks[0])
        except InputError:  # not even one replicate fits
            return 0

    cap = next(float(mb) for mb in np.linspace(0.01, 1.0, 991) if first_block(float(mb)) == 1)
    single = score_features(data, ["x", "y"], **options, replicate_memory_mb=cap)
    assert single.passes == 13
    pd.testing.assert_frame_equal(whole.to_frame(), single.to_frame())
