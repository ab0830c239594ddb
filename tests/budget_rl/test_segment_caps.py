"""Per-segment spend caps (dual and LP) and the LP-only constraints (minimum treated share, level inventory)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from budget_rl import AllocationConstraints, InfeasibleAllocationError, allocate, spend_at_multiplier

from .conftest import SETTINGS, relative_gap, shares_of, value_and_cost

TOL = 1e-6


@st.composite
def segmented(draw, ties: bool | None = None):
    """(value, cost, budget, segments, caps): 2-4 capped segments plus uncapped users; caps binding (a share of
    what the segment would spend unconstrained), slack (above it) or 0; the budget binding or not."""
    n = draw(st.integers(4, 60))
    n_levels = draw(st.integers(2, 5))
    n_segments = draw(st.integers(2, 4))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    value, cost = value_and_cost(rng, n, n_levels, draw(st.booleans()) if ties is None else ties, -1)
    segments = np.array([f"seg{k}" for k in rng.integers(0, n_segments + 1, n)], dtype=object)  # seg{S}: no cap
    caps = {}
    for k in range(n_segments):
        mine = segments == f"seg{k}"
        if not mine.any():
            continue
        full, _ = spend_at_multiplier(value[mine], cost[mine], 0.0)
        kind = draw(st.sampled_from(["binding", "binding", "slack", "zero"]))
        caps[f"seg{k}"] = {"binding": float(rng.uniform(0.05, 0.95) * full), "slack": float(1.5 * full + 1.0),
                           "zero": 0.0}[kind]
    if not caps:  # every user drew the uncapped segment: cap it
        full, _ = spend_at_multiplier(value, cost, 0.0)
        caps[segments[0]] = 0.5 * full
    full, _ = spend_at_multiplier(value, cost, 0.0)
    budget = float(draw(st.sampled_from([0.3, 0.7, 1.5])) * full + draw(st.sampled_from([0.0, 1.0])))
    return value, cost, budget, segments, caps


def _tight(spent: float, bound: float) -> bool:
    return spent >= bound - 1e-9 * max(1.0, bound)


@SETTINGS
@given(segmented())
def test_dual_with_segment_caps_equals_lp_objective(instance):
    value, cost, budget, segments, caps = instance
    constraints = AllocationConstraints(segment_caps=caps)
    dual = allocate(value, cost, budget, constraints=constraints, segments=segments)
    lp = allocate(value, cost, budget, method="lp", constraints=constraints, segments=segments)
    assert relative_gap(dual.value, lp.value) <= TOL, (dual.value, lp.value)
    assert set(dual.segment_multipliers) == set(caps) == set(lp.segment_multipliers)


@SETTINGS
@given(segmented())
def test_each_capped_segment_spends_at_most_its_cap(instance):
    value, cost, budget, segments, caps = instance
    dual = allocate(value, cost, budget, constraints=AllocationConstraints(segment_caps=caps), segments=segments)
    rows = np.arange(len(value))
    integral = cost[rows, dual.level]
    relaxed = (cost * shares_of(dual, value.shape[1])).sum(axis=1)
    for label, cap in caps.items():
        mine = segments == label
        assert integral[mine].sum() <= cap * (1 + 1e-9) + 1e-12, label
        assert relaxed[mine].sum() <= cap * (1 + 1e-9) + 1e-12, label
    assert dual.integral_spend <= budget * (1 + 1e-9) + 1e-12
    assert relaxed.sum() == pytest.approx(dual.spend, rel=1e-9, abs=1e-12)


@SETTINGS
@given(segmented())
def test_at_most_one_fractional_user_per_binding_constraint(instance):
    value, cost, budget, segments, caps = instance
    dual = allocate(value, cost, budget, constraints=AllocationConstraints(segment_caps=caps), segments=segments)
    spent = (cost * shares_of(dual, value.shape[1])).sum(axis=1)
    binding = int(_tight(spent.sum(), budget)) + sum(_tight(spent[segments == label].sum(), cap)
                                                     for label, cap in caps.items())
    assert len(dual.fractional) <= binding, (dual.fractional, binding)
    assert len(dual.fractional) <= 1 + len(caps)
    for user in dual.fractional:
        assert 0.0 < user.share < 1.0


@SETTINGS
@given(segmented(ties=False))
def test_segment_multipliers_match_the_lp_dual_prices(instance):
    value, cost, budget, segments, caps = instance
    constraints = AllocationConstraints(segment_caps=caps)
    dual = allocate(value, cost, budget, constraints=constraints, segments=segments)
    lp = allocate(value, cost, budget, method="lp", constraints=constraints, segments=segments)
    for label in caps:
        ours, theirs = dual.segment_multipliers[label], lp.segment_multipliers[label]
        assert ours >= 0.0
        assert abs(ours - theirs) <= TOL * max(abs(theirs), 1e-3), (label, ours, theirs)
    assert abs(dual.budget_multiplier - lp.budget_multiplier) <= TOL * max(lp.budget_multiplier, 1e-3)


@SETTINGS
@given(segmented(), st.integers(0, 2**32 - 1))
def test_segment_capped_allocation_does_not_depend_on_the_order_of_users(instance, seed):
    value, cost, budget, segments, caps = instance
    n = len(value)
    rng = np.random.default_rng(seed)
    ids = rng.choice(5 * n, size=n, replace=False).astype(np.int64)
    order = rng.permutation(n)
    constraints = AllocationConstraints(segment_caps=caps)
    first = allocate(value, cost, budget, constraints=constraints, segments=segments, user_ids=ids)
    second = allocate(value[order], cost[order], budget, constraints=constraints, segments=segments[order],
                      user_ids=ids[order])
    first_levels = dict(zip(ids.tolist(), first.level.tolist(), strict=True))
    assert first_levels == dict(zip(ids[order].tolist(), second.level.tolist(), strict=True))
    assert relative_gap(first.value, second.value) <= 1e-9


def test_zero_cap_keeps_a_segment_at_its_free_level_and_slack_cap_changes_nothing():
    rng = np.random.default_rng(1)
    value = rng.uniform(0, 1, (30, 3))
    value[:, 0] = 0.0
    cost = rng.uniform(0.5, 1.5, (30, 3))
    cost[:, 0] = 0.0
    segments = np.array(["a"] * 10 + ["b"] * 10 + ["c"] * 10, dtype=object)
    budget = 100.0  # does not bind
    free = allocate(value, cost, budget)
    capped = allocate(value, cost, budget, constraints=AllocationConstraints(segment_caps={"a": 0.0, "b": 1e6}),
                      segments=segments)
    np.testing.assert_array_equal(capped.level[:10], 0)
    np.testing.assert_array_equal(capped.level[10:], free.level[10:])
    assert capped.segment_multipliers["b"] == 0.0
    assert capped.segment_multipliers["a"] > 0.0
    assert capped.value == pytest.approx(free.value - value[np.arange(10), free.level[:10]].sum())


# ----------------------------------------------------------------------------------------------- LP-only constraints
def _instance(seed: int, n: int = 40, n_levels: int = 4):
    rng = np.random.default_rng(seed)
    value = rng.normal(size=(n, n_levels))
    cost = rng.uniform(0.2, 2.0, (n, n_levels))
    cost[:, 0] = 0.0
    return value, cost


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("share", [0.5, 0.9, 1.0])
def test_min_treated_share_is_met(seed, share):
    value, cost = _instance(seed)
    n = len(value)
    budget = 1.05 * float(cost[:, 1:].min(axis=1).sum())  # a little more than treating everyone at the cheapest
    free = allocate(value, cost, budget, method="lp")
    free_treated = (1 - shares_of(free, value.shape[1])[:, 0]).sum() / n
    result = allocate(value, cost, budget, method="lp", constraints=AllocationConstraints(min_treated_share=share))
    treated = (1 - shares_of(result, value.shape[1])[:, 0]).sum() / n
    assert treated >= share - 1e-7, (treated, share, free_treated)
    assert result.spend <= budget * (1 + 1e-7)
    assert result.value <= free.value + 1e-7
    if free_treated < share - 1e-6:  # the constraint changed the answer
        assert result.value < free.value


@pytest.mark.parametrize("seed", range(5))
def test_level_inventory_is_met(seed):
    value, cost = _instance(seed)
    value[:, 2] += 3.0  # everyone wants level 2 ...
    inventory = {2: 5, 3: 0}  # ... but only 5 are printed, and none of level 3
    result = allocate(value, cost, 1e3, method="lp", constraints=AllocationConstraints(level_inventory=inventory))
    shares = shares_of(result, value.shape[1])
    assert shares[:, 2].sum() <= 5 + 1e-7
    assert shares[:, 3].sum() <= 1e-7
    assert shares[:, 2].sum() == pytest.approx(5.0, abs=1e-6)  # the inventory binds: all 5 are used
    assert np.count_nonzero(result.level == 2) <= 5


def test_infeasible_constraints_raise_infeasible_allocation_error():
    value, cost = _instance(0)
    constraints = AllocationConstraints(min_treated_share=1.0)
    with pytest.raises(InfeasibleAllocationError, match="infeasible") as error:
        allocate(value, cost, 0.0, method="lp", constraints=constraints)
    assert isinstance(error.value, ValueError)
    assert "\n" not in str(error.value)
    with pytest.raises(InfeasibleAllocationError):
        allocate(value, cost, 1.0, method="lp", constraints=AllocationConstraints(level_inventory={0: 0},
                                                                                   min_treated_share=1.0))
    # the same constraints are met once money is there
    allocate(value, cost, float(cost.max(axis=1).sum()), method="lp", constraints=constraints)


@pytest.mark.parametrize("constraints", [AllocationConstraints(min_treated_share=0.2),
                                         AllocationConstraints(level_inventory={1: 3})])
def test_dual_refuses_lp_only_constraints(constraints):
    value, cost = _instance(0)
    with pytest.raises(ValueError, match="lp") as error:
        allocate(value, cost, 5.0, method="dual", constraints=constraints)
    assert "\n" not in str(error.value)



def test_lp_allocation_fractional_users_describe_the_reported_optimum():
    # one user; the optimum is unique: x = (1/2, 1/6, 1/3) (treated share 1/2, budget 0.1/6 + 1/3 = 0.35)
    value = np.array([[0.5, 0.0, 1.0]])
    cost = np.array([[0.0, 0.1, 1.0]])
    result = allocate(value, cost, 0.35, method="lp", constraints=AllocationConstraints(min_treated_share=0.5))
    assert result.value == pytest.approx(0.25 + 1 / 3)
    shares = shares_of(result, 3)
    assert (shares * value).sum() == pytest.approx(result.value)
    assert (shares * cost).sum() == pytest.approx(result.spend)
