"""The synthetic campaign as a constrained MDP: every user gets a decision every day, under any policy.

Same world, same formulas as `CampaignWorld.simulate` (which logs only active users' decisions under the logging
policy): each day user i is active with probability sigmoid(activity logit(habit, previous arm)); an active user
purchases with probability mu_ik(t) = sigmoid(base + prognostic + tau_k(x) + habit_effect h); a purchase costs
the coupon's face value and adds to the habit, h(t+1) = habit_decay h(t) + purchase(t); the arm an active user got
raises tomorrow's activity (carry-over). An inactive user sees nothing: no purchase, no cost, no carry-over.

Reward = purchase (0/1) and cost = face value if purchased, per user-day; an episode is one user over `horizon`
days. The policy sees the state features: the user's encoded features (`bandits.ContextEncoder`), purchases in the
last 7 days / 7, purchased yesterday, whether the user was active yesterday, day / horizon, purchase counts
decayed at 0.5 and 0.9 per day, and the last arm the user saw (one-hot; none before the first). Habit itself is
latent. `run` returns `budget_rl.offline.Transitions` and the per-user totals; random streams are keyed by
(random_state, purpose, chunk), so the same random_state gives the same episodes whatever the policy's batch sizes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from bandits import ContextEncoder
from budget_rl.offline import Transitions
from budget_rl.transitions import HISTORY_DECAYS, history_feature_names
from campaign_core import InputError
from pipelines.io import atomic_output
from pipelines.synthetic.world import RECENT_WINDOW_DAYS, CampaignWorld, UserBlock, _sigmoid, stream

EPISODE_STREAM = 5
#: The history features before the last arm seen; purchase histories decayed at `HISTORY_DECAYS` stand in for the
#: latent habit (whose decay the analyst does not know). Named as in `budget_rl.transitions`.
DYNAMIC_FEATURES = history_feature_names([])

#: policy(state features (n, p), day) -> arm index per user (n,)
Policy = Callable[[np.ndarray, int], np.ndarray]


@dataclass(frozen=True)
class Episodes:
    """The transitions of a run and each user's totals over the campaign."""

    transitions: Transitions
    total_reward: np.ndarray
    total_cost: np.ndarray

    @property
    def value(self) -> float:
        """Mean purchases per user over the campaign (the long-term value)."""
        return float(self.total_reward.mean())

    @property
    def spend(self) -> float:
        """Mean spend per user over the campaign."""
        return float(self.total_cost.mean())


class CampaignEpisodes:
    """Runs `horizon` campaign days for one chunk of users under any policy; `logging_policy` is the world's."""

    def __init__(self, world: CampaignWorld, chunk_index: int, n_users: int, horizon: int,
                 encoder: ContextEncoder | None = None):
        self.world, self.chunk_index, self.horizon = world, chunk_index, horizon
        self.users: UserBlock = world.draw_users(chunk_index, chunk_index * world.config.chunk_users, n_users)
        frame = pd.DataFrame(self.users.columns)
        self.encoder = encoder if encoder is not None else ContextEncoder(list(frame.columns)).fit(frame)
        self.static = self.encoder.transform(frame)

    @property
    def feature_names(self) -> list[str]:
        """Names of the state features, in column order."""
        return [*self.encoder.feature_names_out_, *history_feature_names(self.world.arm_labels)]

    def log(self, *, random_state: int = 0) -> Episodes:
        """The campaign under the world's logging policy, with each decision's propensity recorded."""
        episodes = self.run(self.logging_policy(random_state=random_state), random_state=random_state)
        data = episodes.transitions
        probabilities = self.world.logging_probabilities(self.users)
        propensity = probabilities[np.tile(np.arange(len(self.users)), self.horizon), data.action]
        logged = Transitions(data.state, data.action, data.reward, data.cost, data.next_state, data.day, data.user,
                             data.n_actions, data.horizon, propensity)
        return Episodes(logged, episodes.total_reward, episodes.total_cost)

    def to_frame(self, episodes: Episodes) -> pd.DataFrame:
        """The transitions as a table: user_id, day, action (arm label), reward, cost, propensity (when logged),
        state_<feature> and next_<feature> (`budget_rl.offline.Transitions.from_frame` reads it back)."""
        return episodes.transitions.to_frame(actions=self.world.arm_labels, feature_names=self.feature_names)

    @property
    def n_arms(self) -> int:
        return len(self.world.arm_base)

    def features(self, purchases: np.ndarray, active: np.ndarray, day: int, decayed: np.ndarray,
                 previous_arm: np.ndarray) -> np.ndarray:
        """State features: (n, p) static encoding, then DYNAMIC_FEATURES, then the last arm seen (one-hot)."""
        recent = purchases.sum(axis=0) / RECENT_WINDOW_DAYS
        yesterday = purchases[(day - 1) % RECENT_WINDOW_DAYS] if day > 0 else np.zeros(len(self.users))
        dynamic = np.column_stack([recent, yesterday, active, np.full(len(self.users), day / self.horizon), decayed])
        last_arm = (previous_arm[:, None] == np.arange(self.n_arms)[None, :]).astype(np.float64)
        return np.hstack([self.static, dynamic, last_arm])

    def logging_policy(self, *, random_state: int = 0) -> Policy:
        """The world's feature-biased logging policy (uniform for the randomized slice), drawn per user-day."""
        probabilities = self.world.logging_probabilities(self.users)
        cumulative = np.cumsum(probabilities, axis=1)
        rng = stream(random_state, EPISODE_STREAM, self.chunk_index, 1)

        def act(features: np.ndarray, day: int) -> np.ndarray:
            return np.minimum((rng.random(len(features))[:, None] > cumulative).sum(axis=1), self.n_arms - 1)

        return act

    def run(self, policy: Policy, *, random_state: int = 0,
            observe: Callable[[int, np.ndarray, np.ndarray], None] | None = None) -> Episodes:
        """Simulate the campaign under `policy` (common random numbers for a given random_state: comparisons
        between policies on the same random_state differ only through the policies). `observe(day, purchases,
        spend)` is called after each day with the users' outcomes (a paced policy reads its spend from them)."""
        world, n = self.world, len(self.users)
        rng = stream(random_state, EPISODE_STREAM, self.chunk_index, 0)
        baseline, effects = world.baseline_logit(self.users), world.arm_effects(self.users)
        faces = world.arm_costs
        habit = np.zeros(n)
        previous_arm = np.full(n, -1, dtype=np.int64)
        purchases = np.zeros((RECENT_WINDOW_DAYS, n))
        active_yesterday = np.zeros(n)
        decays = np.asarray(HISTORY_DECAYS)
        decayed = np.zeros((n, len(decays)))
        rows: dict[str, list[np.ndarray]] = {key: [] for key in ("state", "action", "reward", "cost", "day")}
        state = self.features(purchases, active_yesterday, 0, decayed, previous_arm)
        for day in range(self.horizon):
            action = np.asarray(policy(state, day), dtype=np.int64)
            active = rng.random(n) < _sigmoid(world.activity_logit(self.users, habit, previous_arm))
            mu = _sigmoid(baseline + effects[np.arange(n), action] + world.config.habit_effect * habit)
            purchase = (active & (rng.random(n) < mu)).astype(np.float64)
            rows["state"].append(state)
            rows["action"].append(action)
            rows["reward"].append(purchase)
            rows["cost"].append(faces[action] * purchase)
            rows["day"].append(np.full(n, day))
            if observe is not None:
                observe(day, purchase, rows["cost"][-1])
            habit = world.config.habit_decay * habit + purchase
            previous_arm = np.where(active, action, previous_arm)
            purchases[day % RECENT_WINDOW_DAYS] = purchase
            active_yesterday = active.astype(np.float64)
            decayed = decays[None, :] * decayed + purchase[:, None]
            state = self.features(purchases, active_yesterday, day + 1, decayed, previous_arm)
        states = np.vstack(rows["state"])
        next_states = np.vstack([*rows["state"][1:], state])
        reward, cost = np.concatenate(rows["reward"]), np.concatenate(rows["cost"])
        transitions = Transitions(states, np.concatenate(rows["action"]), reward, cost, next_states,
                                  np.concatenate(rows["day"]), np.tile(self.users.user_id, self.horizon),
                                  self.n_arms, self.horizon)
        return Episodes(transitions, reward.reshape(self.horizon, n).sum(axis=0),
                        cost.reshape(self.horizon, n).sum(axis=0))


#: decide(user ids (n,), states (n, p) in a model's state columns, day, spend so far per user (n,)) -> level codes
#: (n,) in the model's levels
Decide = Callable[[np.ndarray, np.ndarray, int, np.ndarray], np.ndarray]


def rollout(world: CampaignWorld, n_users: int, horizon: int, decide: Decide, *, encoder: ContextEncoder | None,
            state_names: Sequence[str], levels: Sequence[str], random_state: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """What a policy learned from a campaign's logs realises in its world: every one of the campaign's `n_users`
    users decided every day for `horizon` days from a fresh start, chunk by chunk (the generator's chunks, so the
    users are the campaign's). The policy sees the state as its model does: `state_names` (without `state_`), the
    user features encoded by `encoder` (build-transitions' own; None: none) and the history features, its levels
    in its own order, and each user's realised spend so far. A policy that shares a budget between users (pacing)
    shares it within a chunk (`chunk_users` users, a random sample of the campaign's). Returns per user (campaign
    order) the purchases and the spend over the campaign. Refuses a
    state column the simulator does not produce (e.g. other history decays) or a level it does not know."""
    unknown = [level for level in levels if level not in world.arm_labels]
    if unknown:
        raise InputError(f"levels: {unknown} are not arms of the synthetic world ({world.arm_labels})")
    arm_of_level = np.asarray([world.arm_labels.index(level) for level in levels], dtype=np.int64)
    size, rewards, costs = world.config.chunk_users, [], []
    for chunk, first in enumerate(range(0, n_users, size)):
        episodes = CampaignEpisodes(world, chunk, min(size, n_users - first), horizon,
                                    encoder if encoder is not None else _NoUserFeatures())
        produced = {name: j for j, name in enumerate(episodes.feature_names)}
        missing = [name for name in state_names if name not in produced]
        if missing:
            raise InputError(f"state: the simulator does not produce {missing[:5]} (history decays other than "
                             f"{list(HISTORY_DECAYS)}, or features of another encoder)")
        columns = np.asarray([produced[name] for name in state_names], dtype=np.int64)
        ids, spent = episodes.users.user_id, np.zeros(len(episodes.users))

        def act(states: np.ndarray, day: int, ids=ids, columns=columns, spent=spent) -> np.ndarray:
            return arm_of_level[np.asarray(decide(ids, states[:, columns], day, spent.copy()), dtype=np.int64)]

        def observe(day: int, purchases: np.ndarray, spend: np.ndarray, spent=spent) -> None:
            spent += spend

        result = episodes.run(act, random_state=random_state, observe=observe)
        rewards.append(result.total_reward)
        costs.append(result.total_cost)
    return np.concatenate(rewards), np.concatenate(costs)


class _NoUserFeatures:
    """An encoder of no user feature (a state of history features only)."""

    feature_names_out_ = np.zeros(0, dtype=object)

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        return np.zeros((len(frame), 0))


def write_transitions(world: CampaignWorld, n_users: int, horizon: int, out_dir: Path | str, *,
                      random_state: int = 0) -> Path:
    """Logged transitions of `n_users` users over `horizon` days under the logging policy, as parquet (one file per
    chunk of users, the state encoder fitted on the first chunk), replaced in one rename."""
    size = world.config.chunk_users
    target = Path(out_dir)
    with atomic_output(target) as temporary:
        temporary.mkdir(parents=True)
        encoder = None
        for chunk, first in enumerate(range(0, n_users, size)):
            episodes = CampaignEpisodes(world, chunk, min(size, n_users - first), horizon, encoder)
            encoder = episodes.encoder
            frame = episodes.to_frame(episodes.log(random_state=random_state))
            pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), temporary / f"part-{chunk:05d}.parquet",
                           compression="zstd")
    return target
