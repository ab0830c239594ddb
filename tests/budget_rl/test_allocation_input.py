"""Bad input to `allocate` and `AllocationConstraints`: a one-line ValueError naming the argument, before any work."""

from __future__ import annotations

import numpy as np
import pytest

import budget_rl.allocation as allocation_module
from budget_rl import AllocationConstraints, allocate

N, J = 6, 3


def _good() -> dict:
    rng = np.random.default_rng(0)
    value = rng.uniform(0, 1, (N, J))
    cost = rng.uniform(0.5, 1.5, (N, J))
    cost[:, 0] = 0.0
    return {"value": value, "cost": cost, "budget": 2.0}


def _with(array: np.ndarray, row: int, column: int, entry: float) -> np.ndarray:
    array = array.copy()
    array[row, column] = entry
    return array


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if a solver starts: validation must come first."""
    def started(*args, **kwargs):
        raise AssertionError("a solver ran on invalid input")
    monkeypatch.setattr(allocation_module, "solve_dual", started)
    monkeypatch.setattr(allocation_module, "solve_lp", started)


def one_line(error: pytest.ExceptionInfo) -> None:
    assert "\n" not in str(error.value), str(error.value)


def test_good_input_passes_validation_and_the_no_work_guard_is_live(no_work):
    good = _good()
    with pytest.raises(AssertionError, match="solver ran"):
        allocate(good["value"], good["cost"], good["budget"])


BAD_ARRAYS = {
    "negative cost": (lambda g: {**g, "cost": _with(g["cost"], 2, 1, -0.5)}, r"^cost:.*negative"),
    "cost shape mismatch": (lambda g: {**g, "cost": g["cost"][:, :2]}, r"^cost:.*shape"),
    "cost more rows": (lambda g: {**g, "cost": np.vstack([g["cost"], g["cost"]])}, r"^cost:.*shape"),
    "NaN in value": (lambda g: {**g, "value": _with(g["value"], 3, 2, np.nan)}, r"^value:.*NaN"),
    "inf in value": (lambda g: {**g, "value": _with(g["value"], 0, 0, -np.inf)}, r"^value:.*infinite"),
    "inf in cost": (lambda g: {**g, "cost": _with(g["cost"], 1, 2, np.inf)}, r"^cost:.*infinite"),
    "NaN in cost": (lambda g: {**g, "cost": _with(g["cost"], 1, 2, np.nan)}, r"^cost:.*NaN"),
    "1-D value": (lambda g: {**g, "value": g["value"][:, 0], "cost": g["cost"][:, 0]}, r"^value:.*shape"),
    "1-D cost": (lambda g: {**g, "cost": g["cost"][:, 0]}, r"^cost:.*shape"),
    "3-D value": (lambda g: {**g, "value": g["value"][None], "cost": g["cost"][None]}, r"^value:.*shape"),
    "no users": (lambda g: {**g, "value": np.zeros((0, J)), "cost": np.zeros((0, J))}, r"^value:.*non-empty"),
    "no levels": (lambda g: {**g, "value": np.zeros((N, 0)), "cost": np.zeros((N, 0))}, r"^value:.*non-empty"),
    "text value": (lambda g: {**g, "value": np.full((N, J), "x")}, r"^value:.*numeric"),
    "ragged cost": (lambda g: {**g, "cost": [[0.0, 1.0], [0.0]]}, r"^cost:"),
    "negative budget": (lambda g: {**g, "budget": -1.0}, r"^budget:"),
    "NaN budget": (lambda g: {**g, "budget": float("nan")}, r"^budget:"),
    "inf budget": (lambda g: {**g, "budget": float("inf")}, r"^budget:"),
    "text budget": (lambda g: {**g, "budget": "10"}, r"^budget:"),
    "array budget": (lambda g: {**g, "budget": np.array([1.0, 2.0])}, r"^budget:"),
    "no zero-cost level": (lambda g: {**g, "cost": g["cost"] + 0.1}, r"^cost:.*zero-cost"),
}


@pytest.mark.parametrize("case", list(BAD_ARRAYS))
@pytest.mark.parametrize("method", ["dual", "lp"])
def test_bad_arrays_and_budget(no_work, case, method):
    make, message = BAD_ARRAYS[case]
    arguments = make(_good())
    with pytest.raises(ValueError, match=message) as error:
        allocate(arguments["value"], arguments["cost"], arguments["budget"], method=method)
    one_line(error)


def test_no_zero_cost_level_is_allowed_when_the_budget_covers_everyones_best_level():
    good = _good()
    cost = good["cost"] + 0.1  # nobody has a free level
    best = np.argmax(good["value"], axis=1)
    enough = float(cost[np.arange(N), best].sum())
    for method in ("dual", "lp"):
        result = allocate(good["value"], cost, enough, method=method)
        np.testing.assert_array_equal(result.level, best)
        assert result.spend == pytest.approx(enough)
        assert result.integral_spend <= enough * (1 + 1e-12)
    with pytest.raises(ValueError, match="zero-cost") as error:
        allocate(good["value"], cost, enough * (1 - 1e-6))
    one_line(error)


def test_no_zero_cost_level_is_refused_with_segment_caps_even_when_the_budget_covers_everything(no_work):
    good = _good()
    segments = np.array(["a", "b"] * (N // 2), dtype=object)
    with pytest.raises(ValueError, match="zero-cost") as error:
        allocate(good["value"], good["cost"] + 0.1, 1e6, constraints=AllocationConstraints(segment_caps={"a": 1e6}),
                 segments=segments)
    one_line(error)


SEGMENTS = np.array(["a", "b", "a", "b", "c", "c"], dtype=object)
BAD_OPTIONS = {
    "unknown segment": ({"constraints": AllocationConstraints(segment_caps={"a": 1.0, "zz": 2.0}),
                         "segments": SEGMENTS}, r"^constraints.segment_caps:.*unknown segment"),
    "caps without segments": ({"constraints": AllocationConstraints(segment_caps={"a": 1.0})},
                              r"^constraints.segment_caps:.*segments"),
    "segments too short": ({"constraints": AllocationConstraints(segment_caps={"a": 1.0}),
                            "segments": SEGMENTS[:4]}, r"^segments:"),
    "segment missing": ({"constraints": AllocationConstraints(segment_caps={"a": 1.0}),
                         "segments": np.array(["a", None, "a", "b", "c", "c"], dtype=object)}, r"^segments:"),
    "duplicated user ids": ({"user_ids": np.array([1, 2, 3, 3, 4, 5])}, r"^user_ids:.*repeated"),
    "float user ids": ({"user_ids": np.arange(N, dtype=float)}, r"^user_ids:.*integers"),
    "text user ids": ({"user_ids": np.array([str(i) for i in range(N)])}, r"^user_ids:.*integers"),
    "too few user ids": ({"user_ids": np.arange(N - 1)}, r"^user_ids:"),
    "inventory level out of range": ({"constraints": AllocationConstraints(level_inventory={J: 2})},
                                     r"^constraints:.*level 3 does not exist"),
    "untreated level out of range": ({"constraints": AllocationConstraints(untreated_level=J)},
                                     r"^constraints:.*level 3 does not exist"),
}


@pytest.mark.parametrize("case", list(BAD_OPTIONS))
def test_bad_segments_ids_and_levels(no_work, case):
    options, message = BAD_OPTIONS[case]
    good = _good()
    with pytest.raises(ValueError, match=message) as error:
        allocate(good["value"], good["cost"], good["budget"], method="lp", **options)
    one_line(error)


@pytest.mark.parametrize(("options", "message"), [
    ({"segment_caps": {"a": -1.0}}, r"^constraints.segment_caps:.*'a'"),
    ({"segment_caps": {"a": float("nan")}}, r"^constraints.segment_caps:"),
    ({"segment_caps": {"a": float("inf")}}, r"^constraints.segment_caps:"),
    ({"segment_caps": {"a": "5"}}, r"^constraints.segment_caps:"),
    ({"min_treated_share": -0.1}, r"^constraints.min_treated_share:"),
    ({"min_treated_share": 1.5}, r"^constraints.min_treated_share:"),
    ({"min_treated_share": float("nan")}, r"^constraints.min_treated_share:"),
    ({"level_inventory": {-1: 3}}, r"^constraints.level_inventory:.*level"),
    ({"level_inventory": {1.5: 3}}, r"^constraints.level_inventory:.*level"),
    ({"level_inventory": {1: -3}}, r"^constraints.level_inventory:.*inventory"),
    ({"untreated_level": -1}, r"^constraints.untreated_level:"),
])
def test_bad_constraints_are_refused_on_construction(options, message):
    with pytest.raises(ValueError, match=message) as error:
        AllocationConstraints(**options)
    one_line(error)


def test_unknown_method(no_work):
    good = _good()
    with pytest.raises(ValueError, match=r"^method:.*bogus") as error:
        allocate(good["value"], good["cost"], good["budget"], method="bogus")
    one_line(error)


def test_constraints_are_read_only_after_construction():
    caps = {"a": 1.0}
    constraints = AllocationConstraints(segment_caps=caps)
    caps["a"] = 100.0  # the caller's dict changing later does not change the constraints
    assert constraints.segment_caps["a"] == 1.0
    with pytest.raises(TypeError):
        constraints.segment_caps["a"] = 5.0
