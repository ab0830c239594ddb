"""The compiled greedy pass of the ridge sweeps against numpy's argmax and products, ties included."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from budget_rl._ridge_kernels import greedy_and_followed


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
