"""The compiled passes of the ridge sweeps against their numpy formulas: greedy choices (ties included) and the
bootstrap replicates' Poisson counts; the action codes against pandas' indexer."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import poisson

from budget_rl._ridge_kernels import greedy_and_followed
from budget_rl.ridge_statistics import action_codes, resampled_counts
from campaign_core import salted_uniform


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 300), st.integers(1, 6), st.integers(1, 5), st.integers(0, 4), st.integers(0, 2**31 - 1),
       st.booleans())
def test_greedy_choices_and_followed_values_equal_numpy(n, p, n_actions, n_greedy, seed, integers):
    rng = np.random.default_rng(seed)
    def draw(*shape):
        return rng.integers(-2, 3, size=shape).astype(float) if integers else rng.normal(size=shape)

    states, greedy = draw(n, p), draw(n_greedy, n_actions, p)  # integers: many exact ties between actions
    evaluated = draw(2 * n_greedy, n_actions, p)
    follows = np.repeat(np.arange(n_greedy), 2)
    best, chosen = np.empty((n_greedy, n)), np.empty((2 * n_greedy, n))
    greedy_and_followed(states, greedy, evaluated, follows, best, chosen)
    for s in range(n_greedy):
        values = states @ greedy[s].T
        choice = values.argmax(axis=1)  # the first of tied actions
        np.testing.assert_allclose(best[s], values.max(axis=1), rtol=1e-12, atol=1e-12)
        for e in np.flatnonzero(follows == s):
            np.testing.assert_allclose(chosen[e], (states @ evaluated[e].T)[np.arange(n), choice], rtol=1e-12,
                                       atol=1e-12)


@pytest.mark.parametrize("users", [np.arange(-50_000, 250_000), np.array([f"user-{i}" for i in range(20_000)],
                                                                         dtype=object)])
def test_resampled_counts_are_the_poisson_cdf_cut_at_the_salted_uniform(users):
    """Known formula: the count is how many Poisson(1) CDF values lie at or below salted_uniform(user, salt)."""
    cdf = poisson.cdf(np.arange(21), 1.0)
    for salt in ("fqe-bootstrap-0/0", "fqe-bootstrap-7/3"):
        expected = np.searchsorted(cdf, salted_uniform(users, salt), side="right")
        counts = resampled_counts(users, salt)
        np.testing.assert_array_equal(counts, expected)
        assert counts.max() >= 5  # the tail is reached, not only 0, 1 and 2


@pytest.mark.parametrize("labels, actions", [
    (pd.Series(["a", "b", "zz", None], dtype=object), ("b", "a")),
    (pd.Series(["a", "b", "c"], dtype="string[pyarrow]"), ("c", "a")),
    (pd.Series([1, 2, 3]), (3, 1)),
    (pd.Series([1, 2, 3]), ("1", "3")),  # different types: nothing matches, as pandas' indexer says
    (pd.Series(["x", 1], dtype=object), ("x",)),
])
def test_action_codes_equal_pandas_indexer(labels, actions):
    np.testing.assert_array_equal(action_codes(labels, actions), pd.Index(actions).get_indexer(labels))
