"""Transitions from decision logs, one day at a time (budget_rl/transitions.py): known answers by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from budget_rl.transitions import (
    DayDecisions,
    LogDays,
    UserHistory,
    campaign_days,
    history_feature_names,
    transition_day,
)
from campaign_core import InputError


def _run(days: list[DayDecisions], n_users: int, n_levels: int = 2):
    history, out = UserHistory.start(n_users, decays=(0.5,), window=2), []
    for decisions in days:
        rows, history = transition_day(history, decisions, n_levels=n_levels, no_contact_level=0, horizon=len(days))
        out.append(rows)
    return out, history


def test_inactive_users_carry_a_uniform_level_that_changes_nothing():
    # 4 users, levels 0..3; user 1 has a decision, the others did not come: each gets floor(draw x 4) with
    # propensity 1/4, nothing bought or paid, and no history changes (their last level stays "none")
    decisions = DayDecisions(np.array([1]), np.array([2]), np.array([1.0]), np.array([5.0]), np.array([0.4]))
    draw = np.array([0.0, 0.99, 0.5, 0.9999])
    rows, after = transition_day(UserHistory.start(4), decisions, n_levels=4, no_contact_level=0, horizon=2,
                                 absent_draw=draw)
    np.testing.assert_array_equal(rows.action, [0, 2, 2, 3])
    np.testing.assert_array_equal(rows.propensity, [0.25, 0.4, 0.25, 0.25])
    np.testing.assert_array_equal(rows.reward, [0.0, 1.0, 0.0, 0.0])
    np.testing.assert_array_equal(after.last_level, [-1, 2, -1, -1])
    np.testing.assert_array_equal(after.active_yesterday, [False, True, False, False])
    # the same day under the not-contacted rule: the no-contact level, propensity 1; the same history
    plain_rows, plain_after = transition_day(UserHistory.start(4), decisions, n_levels=4, no_contact_level=0,
                                             horizon=2)
    np.testing.assert_array_equal(plain_rows.action, [0, 2, 0, 0])
    np.testing.assert_array_equal(plain_rows.propensity, [1.0, 0.4, 1.0, 1.0])
    np.testing.assert_array_equal(plain_rows.next_state, rows.next_state)


def test_history_features_by_hand():
    # 3 users, 3 days, levels 0 (no contact) and 1; window 2 days, decay 0.5.
    # day 0: user 0 gets level 1 and buys; user 2 gets level 0, no purchase; user 1 not contacted.
    # day 1: user 0 gets level 1, no purchase; user 1 gets level 1 and buys.
    # day 2: user 1 gets level 0 and buys.
    days = [DayDecisions(np.array([0, 2]), np.array([1, 0]), np.array([1.0, 0.0]), np.array([2.0, 0.0]),
                         np.array([0.25, 0.5])),
            DayDecisions(np.array([1, 0]), np.array([1, 1]), np.array([1.0, 0.0]), np.array([2.0, 0.0]),
                         np.array([0.5, 0.8])),
            DayDecisions(np.array([1]), np.array([0]), np.array([3.0]), np.array([0.0]), np.array([0.9]))]
    rows, last = _run(days, 3)
    names = history_feature_names(["nothing", "coupon"], (0.5,))
    assert names == ["recent_purchases", "purchased_yesterday", "active_yesterday", "day_share",
                     "purchases_decay_0.5", "last_arm_nothing", "last_arm_coupon"]
    np.testing.assert_array_equal(rows[0].action, [1, 0, 0])
    np.testing.assert_array_equal(rows[0].propensity, [0.25, 1.0, 0.5])  # not contacted: propensity 1
    np.testing.assert_array_equal(rows[0].reward, [1.0, 0.0, 0.0])
    np.testing.assert_array_equal(rows[0].cost, [2.0, 0.0, 0.0])
    assert not rows[0].state.any()  # nothing happened before the first day but its day share, 0
    # after day 0 (= state of day 1): user 0 bought (recent 1/2, yesterday 1, active, decayed 1, last level 1)
    expected_day1 = np.array([[0.5, 1, 1, 1 / 3, 1.0, 0, 1],
                              [0.0, 0, 0, 1 / 3, 0.0, 0, 0],
                              [0.0, 0, 1, 1 / 3, 0.0, 1, 0]])
    np.testing.assert_allclose(rows[0].next_state, expected_day1)
    np.testing.assert_allclose(rows[1].state, expected_day1)
    # after day 1: user 0's purchase is one day older (decayed 0.5), user 1 bought
    expected_day2 = np.array([[0.5, 0, 1, 2 / 3, 0.5, 0, 1],
                              [0.5, 1, 1, 2 / 3, 1.0, 0, 1],
                              [0.0, 0, 0, 2 / 3, 0.0, 1, 0]])
    np.testing.assert_allclose(rows[2].state, expected_day2)
    # after day 2: the window of 2 days forgets user 0's day-0 purchase; user 1 bought again on level 0
    expected_end = np.array([[0.0, 0, 0, 1.0, 0.25, 0, 1],
                             [1.0, 1, 1, 1.0, 1.5, 1, 0],
                             [0.0, 0, 0, 1.0, 0.0, 1, 0]])
    np.testing.assert_allclose(rows[2].next_state, expected_end)
    assert last.day == 3


def test_a_day_state_is_the_day_before_next_state_computed_once_by_columns():
    # the next state of day 0 is handed on as the state of day 1 (one array, read-only, each feature's column
    # contiguous for the day's table); asked with other levels or another horizon, the features are recomputed
    decisions = DayDecisions(np.array([0]), np.array([1]), np.array([1.0]), np.array([2.0]))
    rows, after = transition_day(UserHistory.start(2, decays=(0.5,)), decisions, n_levels=2, no_contact_level=0,
                                 horizon=4)
    assert after.features(2, 4) is rows.next_state
    assert not rows.next_state.flags.writeable and rows.next_state[:, 0].flags.c_contiguous
    # 3 levels, horizon 2: the same history, last level 1 one-hot over three levels, day share 1 / 2
    np.testing.assert_array_equal(after.features(3, 2), [[1 / 7, 1, 1, 0.5, 1.0, 0, 1, 0],
                                                         [0.0, 0, 0, 0.5, 0.0, 0, 0, 0]])
    following, _ = transition_day(after, decisions, n_levels=2, no_contact_level=0, horizon=4)
    assert following.state is rows.next_state


def test_without_propensities_the_rows_have_none():
    rows, _ = _run([DayDecisions(np.array([0]), np.array([1]), np.array([0.0]), np.array([0.0]))] * 2, 2)
    assert rows[0].propensity is None and rows[1].propensity is None


@pytest.mark.parametrize("decisions, match", [
    (DayDecisions(np.array([1, 1]), np.array([0, 1]), np.zeros(2), np.zeros(2)), "two or more decisions on day 0"),
    (DayDecisions(np.array([0]), np.array([2]), np.zeros(1), np.zeros(1)), "outside the 2 known levels"),
    (DayDecisions(np.array([5]), np.array([0]), np.zeros(1), np.zeros(1)), "outside the 3 users"),
])
def test_a_bad_day_is_refused_in_one_line(decisions, match):
    with pytest.raises(InputError, match=match) as error:
        transition_day(UserHistory.start(3), decisions, n_levels=2, no_contact_level=0, horizon=2)
    assert "\n" not in str(error.value)


def test_campaign_days_need_two_consecutive_days():
    assert campaign_days([3, 4, 5, 4]) == (3, 3)
    with pytest.raises(InputError, match=r"day: the logs cover a single day \(2\)"):
        campaign_days([2])
    with pytest.raises(InputError, match=r"day: days are not consecutive: 2 days between 0 and 4 .*\[1, 3\]"):
        campaign_days([0, 2, 4])


def _logs() -> pd.DataFrame:
    return pd.DataFrame({"user_id": [10, 20, 30, 10, 20], "day": [0, 0, 0, 1, 1],
                         "arm": ["a", "b", "a", "b", "b"], "reward": [1.0, 1.0, 0.0, 0.0, 1.0],
                         "cost": [0.0, 5.0, 0.0, 0.0, 3.0]})


def _reduce(check: LogDays, chunks: list[pd.DataFrame]):
    states = [check.partial(chunk) for chunk in chunks]
    state = states[0]
    for other in states[1:]:
        state = check.merge(state, other)
    return check.finalize(state)


def test_log_days_summary_is_the_same_however_the_logs_are_chunked():
    check = LogDays(np.array([10, 20, 30, 40]))
    whole = _reduce(check, [_logs()])
    assert whole.days == [0, 1] and whole.rows == 5
    assert whole.levels == {"a": (1, 0.0), "b": (2, 8.0)}
    split = _reduce(check, [_logs().iloc[[0, 3]], _logs().iloc[[1]], _logs().iloc[[2, 4]]])
    assert split == whole


def test_log_days_finds_a_repeated_user_day_across_chunks_and_unknown_users():
    check = LogDays(np.array([10, 20, 30]))
    repeated = pd.DataFrame({"user_id": [20], "day": [1], "arm": ["a"], "reward": [0.0], "cost": [0.0]})
    with pytest.raises(InputError, match="user_id: 1 users have two or more decisions on one day, e.g. user 20 "
                                         "on day 1"):
        _reduce(check, [_logs(), repeated])
    with pytest.raises(InputError, match="user_id: 1 users have two or more decisions"):
        _reduce(check, [pd.concat([_logs(), repeated])])
    with pytest.raises(InputError, match="user_id: 1 decisions name users not in the users table, e.g. 40"):
        _reduce(check, [_logs().replace({"user_id": {30: 40}})])
