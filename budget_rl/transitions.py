"""Transitions of the constrained MDP from ordinary decision logs, one day at a time.

A decision log has one row per decision the campaign made (user, day, level, reward, cost, propensity); the
constrained MDP of docs/constrained_rl.md needs one row per user and day, with the state before the day's decision
and the state after it. `transition_day` turns one day's decisions into that day's rows and the next day's history;
the history of every user lives in arrays indexed by user (0..n_users - 1), so the logs are read one day at a time
and never regrouped by user.

A user without a decision on a day gets reward 0 and cost 0, and one of two rules for the action (`absent`):

- `inactive` (for logs that record a decision when the user comes, as the platform's serving does): the user did
  not come, so no level would have changed that day's reward, cost or next state. The row carries a level drawn
  uniformly (`absent_draw`, a salted hash of user and day) with propensity 1 / levels: weighted by 1 / propensity,
  each level's regression then sees these days in their share of the population, and a level's Q-function is the
  expected outcome of sending it to every user of the day, active or not, which is what executing a policy does.
  Labelling them all with the no-contact level instead would make no contact look worse than it is and every
  coupon better (its rows would all be users who came).
- `not_contacted` (for campaigns that decide for every user and log only contacts): the action is the no-contact
  level (a zero-cost level) with propensity 1 (the choice not to contact is not randomized).

History features, in this order, computed before the day's decision (a purchase is a decision with reward > 0):

- `recent_purchases`: purchases in the last `window` days (7) / `window`;
- `purchased_yesterday`: 1 if the user purchased yesterday, else 0;
- `active_yesterday`: 1 if the user had a decision yesterday, else 0;
- `day_share`: day / horizon (days counted from 0 at the first logged day);
- `purchases_decay_<d>` for each decay d (0.5, 0.9): h(t + 1) = d h(t) + purchase(t), h(0) = 0 (purchase counts
  that forget at rate d per day, standing in for a habit whose decay the analyst does not know);
- `last_arm_<level>`: one-hot of the level of the user's last decision (all zero before the first).

These are the names and definitions of the synthetic campaign's state (`pipelines.synthetic.episodes`), so the
transitions built from its logs and those its simulator records have the same columns.

`LogDays` is the mergeable statistic (`campaign_core.Statistic`) of the check that runs before any day is built:
the days present, the levels and their redeemed costs, users missing from the users table and a user with two
decisions on one day, with memory of one bit per user and day (no regrouping either).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from campaign_core import InputError, plain

RECENT_WINDOW_DAYS = 7
HISTORY_DECAYS = (0.5, 0.9)


def history_feature_names(levels: Sequence, decays: Sequence[float] = HISTORY_DECAYS) -> list[str]:
    """Names of the history features, in column order (see the module docstring)."""
    return ["recent_purchases", "purchased_yesterday", "active_yesterday", "day_share",
            *[f"purchases_decay_{d}" for d in decays], *[f"last_arm_{plain(level)}" for level in levels]]


@dataclass(frozen=True)
class UserHistory:
    """Every user's past before `day`, in arrays indexed by user.

    purchases: (window, n_users) bool, purchases by day modulo the window; active_yesterday: (n_users,) bool;
    decayed: (n_users, len(decays)) decayed purchase counts; last_level: (n_users,) level code of the last decision,
    -1 before the first.
    """

    purchases: np.ndarray
    active_yesterday: np.ndarray
    decayed: np.ndarray
    last_level: np.ndarray
    day: int
    decays: tuple[float, ...]
    #: (n_levels, horizon, features) when `features` was computed already (it is the day before's next state).
    computed: tuple[int, int, np.ndarray] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def start(cls, n_users: int, *, decays: Sequence[float] = HISTORY_DECAYS,
              window: int = RECENT_WINDOW_DAYS) -> UserHistory:
        """The history before the first day: no purchase, no decision."""
        if window < 1:
            raise InputError(f"window: must be >= 1 day, got {window}")
        decays = tuple(float(d) for d in decays)
        if any(not 0.0 <= d < 1.0 for d in decays):
            raise InputError(f"decays: each must be in [0, 1), got {list(decays)}")
        return cls(np.zeros((window, n_users), dtype=bool), np.zeros(n_users, dtype=bool),
                   np.zeros((n_users, len(decays))), np.full(n_users, -1, dtype=np.int64), 0, decays)

    @property
    def n_users(self) -> int:
        return self.last_level.size

    def features(self, n_levels: int, horizon: int) -> np.ndarray:
        """(n_users, 4 + len(decays) + n_levels) float64 history features, in `history_feature_names` order.

        Column-major (each feature's column is contiguous, so a table of columns takes them without a copy) and
        read-only: the array is shared with the previous day's `DayTransitions.next_state` when that computed it."""
        if self.computed is not None and self.computed[:2] == (n_levels, horizon):
            return self.computed[2]
        window, n_decays = self.purchases.shape[0], len(self.decays)
        features = np.empty((self.n_users, 4 + n_decays + n_levels), order="F")
        np.divide(self.purchases.sum(axis=0), window, out=features[:, 0])
        features[:, 1] = self.purchases[(self.day - 1) % window] if self.day > 0 else False
        features[:, 2] = self.active_yesterday
        features[:, 3] = self.day / horizon
        features[:, 4:4 + n_decays] = self.decayed
        for level in range(n_levels):
            np.equal(self.last_level, level, out=features[:, 4 + n_decays + level])
        features.flags.writeable = False
        return features


@dataclass(frozen=True)
class DayDecisions:
    """One day's decisions: user index (into the users table), level code, reward, cost (>= 0) and the logged
    propensity of the level (None when the logs have none)."""

    user: np.ndarray
    level: np.ndarray
    reward: np.ndarray
    cost: np.ndarray
    propensity: np.ndarray | None = None


@dataclass(frozen=True)
class DayTransitions:
    """One row per user (in user-index order) for one day: the action (level code), reward, cost, propensity
    (None when the logs have none) and the history features before (`state`) and after (`next_state`) the day."""

    day: int
    action: np.ndarray
    reward: np.ndarray
    cost: np.ndarray
    propensity: np.ndarray | None
    state: np.ndarray
    next_state: np.ndarray


def transition_day(history: UserHistory, decisions: DayDecisions, *, n_levels: int, no_contact_level: int,
                   horizon: int, absent_draw: np.ndarray | None = None) -> tuple[DayTransitions, UserHistory]:
    """That day's transitions for every user and the history before the next day.

    Users without a decision get reward 0 and cost 0 and, with `absent_draw` (n_users,) uniform numbers in [0, 1),
    the level floor(draw x n_levels) with propensity 1 / n_levels (the `inactive` rule of the module docstring);
    without it, `no_contact_level` with propensity 1 (`not_contacted`). Refuses (InputError) a user index outside
    the users, a level code outside 0..n_levels-1, and a user with two decisions on the day.
    """
    n = history.n_users
    user = np.asarray(decisions.user, dtype=np.int64)
    level = np.asarray(decisions.level, dtype=np.int64)
    if user.size and (user.min() < 0 or user.max() >= n):
        raise InputError(f"user_id: {int(((user < 0) | (user >= n)).sum())} decisions on day {history.day} name "
                         f"users outside the {n} users")
    if level.size and (level.min() < 0 or level.max() >= n_levels):
        raise InputError(f"arm: {int(((level < 0) | (level >= n_levels)).sum())} decisions on day {history.day} "
                         f"have a level outside the {n_levels} known levels")
    if not 0 <= no_contact_level < n_levels:
        raise InputError(f"no_contact: level code {no_contact_level} is outside the {n_levels} known levels")
    counts = np.bincount(user, minlength=n)
    if (counts > 1).any():
        raise InputError(f"user_id: {int((counts > 1).sum())} users have two or more decisions on day "
                         f"{history.day}, e.g. user index {int(np.argmax(counts > 1))}")
    if absent_draw is None:
        action, absent_propensity = np.full(n, no_contact_level, dtype=np.int64), 1.0
    else:
        action = np.minimum((np.asarray(absent_draw) * n_levels).astype(np.int64), n_levels - 1)
        absent_propensity = 1.0 / n_levels
    reward, cost = np.zeros(n), np.zeros(n)
    action[user], reward[user], cost[user] = level, decisions.reward, decisions.cost
    propensity = None
    if decisions.propensity is not None:
        propensity = np.full(n, absent_propensity)
        propensity[user] = decisions.propensity
    state = history.features(n_levels, horizon)

    purchased = reward > 0
    active = np.zeros(n, dtype=bool)
    active[user] = True
    purchases = history.purchases.copy()
    purchases[history.day % purchases.shape[0]] = purchased
    decays = np.asarray(history.decays)
    last_level = np.where(active, action, history.last_level)
    following = UserHistory(purchases, active, decays[None, :] * history.decayed + purchased[:, None], last_level,
                            history.day + 1, history.decays)
    next_state = following.features(n_levels, horizon)
    rows = DayTransitions(history.day, action, reward, cost, propensity, state, next_state)
    return rows, replace(following, computed=(n_levels, horizon, next_state))


# ---------------------------------------------------------------------------- the check before any day is built
@dataclass
class LogDaysState:
    """What the check has seen: one bit per (day, user) with a decision, decisions on an already-seen (day, user),
    decisions naming users outside the users table, and per level the rewarded decisions and their cost."""

    seen: dict[int, np.ndarray] = field(default_factory=dict)  # day -> packed bits over user indices
    repeated: int = 0
    repeated_example: tuple | None = None
    unknown: int = 0
    unknown_example: object = None
    levels: dict[str, tuple[int, float]] = field(default_factory=dict)  # level -> (rewarded rows, their cost)
    rows: int = 0


@dataclass(frozen=True)
class LogDaysSummary:
    """The days present (sorted), level -> (rewarded decisions, their total cost), and the number of decisions."""

    days: list[int]
    levels: dict[str, tuple[int, float]]
    rows: int


@dataclass(frozen=True)
class LogDays:
    """The mergeable check of the decision logs before transitions are built (`campaign_core.Statistic`).

    user_ids: the users table's ids, sorted and unique (a decision's user index is its position here); the chunk
    columns are named by `user_id`, `day`, `arm`, `reward`, `cost`. Memory: one bit per user for each day.
    """

    user_ids: np.ndarray
    user_id: str = "user_id"
    day: str = "day"
    arm: str = "arm"
    reward: str = "reward"
    cost: str = "cost"

    def user_index(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(index into `user_ids`, whether the id is there) for each id."""
        position = np.searchsorted(self.user_ids, ids)
        inside = position < self.user_ids.size
        found = np.zeros(ids.size, dtype=bool)
        found[inside] = self.user_ids[position[inside]] == ids[inside]
        return position, found

    def partial(self, chunk: pd.DataFrame) -> LogDaysState:
        state = LogDaysState(rows=len(chunk))
        ids = chunk[self.user_id].to_numpy()
        index, found = self.user_index(ids)
        if not found.all():
            state.unknown, state.unknown_example = int((~found).sum()), plain(ids[~found][0])
        days = chunk[self.day].to_numpy(dtype=np.int64)
        for day in np.unique(days):
            users = index[(days == day) & found]
            unique, counts = np.unique(users, return_counts=True)
            if (counts > 1).any():
                state.repeated += int((counts > 1).sum())
                state.repeated_example = state.repeated_example or (plain(self.user_ids[unique[counts > 1][0]]),
                                                                    int(day))
            bits = np.zeros(self.user_ids.size, dtype=bool)
            bits[unique] = True
            state.seen[int(day)] = np.packbits(bits)
        rewarded = chunk[chunk[self.reward].to_numpy() > 0]
        for level, costs in rewarded.groupby(rewarded[self.arm].astype(str), sort=True)[self.cost]:
            state.levels[str(level)] = (len(costs), float(costs.sum()))
        for level in chunk[self.arm].astype(str).unique():
            state.levels.setdefault(str(level), (0, 0.0))
        return state

    def merge(self, left: LogDaysState, right: LogDaysState) -> LogDaysState:
        merged = LogDaysState(dict(left.seen), left.repeated + right.repeated,
                              left.repeated_example or right.repeated_example, left.unknown + right.unknown,
                              left.unknown_example if left.unknown else right.unknown_example,
                              dict(left.levels), left.rows + right.rows)
        for day, bits in right.seen.items():
            if day in merged.seen:
                both = np.unpackbits(merged.seen[day] & bits, count=self.user_ids.size).astype(bool)
                if both.any():
                    merged.repeated += int(both.sum())
                    merged.repeated_example = merged.repeated_example or (plain(self.user_ids[np.argmax(both)]), day)
                merged.seen[day] = merged.seen[day] | bits
            else:
                merged.seen[day] = bits
        for level, (count, total) in right.levels.items():
            before = merged.levels.get(level, (0, 0.0))
            merged.levels[level] = (before[0] + count, before[1] + total)
        return merged

    def finalize(self, state: LogDaysState) -> LogDaysSummary:
        """The summary; refuses (InputError, one line) users outside the users table and a user with two decisions
        on one day."""
        if state.unknown:
            raise InputError(f"{self.user_id}: {state.unknown} decisions name users not in the users table, e.g. "
                             f"{state.unknown_example!r}")
        if state.repeated:
            user, day = state.repeated_example
            raise InputError(f"{self.user_id}: {state.repeated} users have two or more decisions on one day, e.g. "
                             f"user {user!r} on day {day}")
        return LogDaysSummary(sorted(state.seen), dict(sorted(state.levels.items())), state.rows)


def campaign_days(days: Sequence[int], *, column: str = "day") -> tuple[int, int]:
    """(first day, horizon) of logs covering `days`: at least two days, and every day from the first to the last
    (a day without any decision is taken for a missing file, not for a day the campaign contacted no one)."""
    days = sorted(int(d) for d in days)
    if len(days) < 2:
        raise InputError(f"{column}: the logs cover a single day ({days[0] if days else 'none'}); transitions need "
                         "at least two consecutive days")
    missing = sorted(set(range(days[0], days[-1] + 1)) - set(days))
    if missing:
        raise InputError(f"{column}: days are not consecutive: {len(missing)} days between {days[0]} and "
                         f"{days[-1]} have no decision ({missing[:5]}{' ...' if len(missing) > 5 else ''})")
    return days[0], days[-1] - days[0] + 1
