"""The true campaign world: who the users are, how each arm changes their response, and how the logs arose.

Response model (per user i, arm k, day t), all effects on the logit scale:

    logit mu_ik(t) = base + sum_p beta_p g_p(x_i) + tau_k(x_i) + habit_effect * h_i(t)
    tau_k(x)       = arm_base_k + sum_m effect_km s_m(x)          (tau_control = 0)

- *modifier* features enter only through tau_k, with arm-specific signs: they change which arm is best;
- *prognostic* features shift every arm's logit equally: they predict the reward but never change the best arm;
- *noise* features enter nowhere.

Multi-day activity with carry-over: user i is active on day t with probability
sigmoid(activity_logit + 0.8 z_i + habit_effect h_i(t) + carryover_k[arm on the previous active day]),
where z_i is a latent engagement; the habit stock h_i(t+1) = habit_decay h_i(t) + purchase_i(t) turns a coupon that
raised today's purchase into more activity and purchases later. A redeemed coupon costs its face value.

Logging policy: a softmax targeting rule over a few features (marketers give coupons to engaged users and members),
mixed with `logging_epsilon` of uniform; users in the randomized slice get every arm with probability 1/K.

Hidden targeting (off by default): with `hidden_targeting` = h > 0 every coupon's effect gains h u_i and the logging
policy's coupon logits gain 2 h u_i, for an unlogged coupon affinity u_i ~ N(0, 1) (marketers know who hunts for
deals from data the analyst lacks). Models fitted on the logs then overstate coupon effects; only the randomized
slice shows them as they are.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse

from pipelines.synthetic.config import CampaignConfig

MODIFIER, PROGNOSTIC, NOISE = "modifier", "prognostic", "noise"
NUMERIC, CATEGORICAL, BINARY = "numeric", "categorical", "binary"

#: Habit is summarized for the decision maker as purchases over this many previous days.
RECENT_WINDOW_DAYS = 7


@dataclass(frozen=True)
class FeatureSpec:
    """One user feature: its name, its true role, how it is stored, and whether it has missing values."""

    name: str
    role: str
    kind: str
    can_be_missing: bool = False
    levels: tuple[str, ...] = ()
    level_probabilities: tuple[float, ...] = ()
    level_signal: tuple[float, ...] = ()


_CATALOG: dict[str, tuple[FeatureSpec, ...]] = {
    MODIFIER: (
        FeatureSpec("price_sensitivity", MODIFIER, NUMERIC),
        FeatureSpec("channel", MODIFIER, CATEGORICAL, levels=("app", "web", "store"),
                    level_probabilities=(0.5, 0.3, 0.2), level_signal=(1.0, 0.0, -1.0)),
        FeatureSpec("is_member", MODIFIER, BINARY),
        FeatureSpec("basket_value", MODIFIER, NUMERIC, can_be_missing=True),
    ),
    PROGNOSTIC: (
        FeatureSpec("sessions_30d", PROGNOSTIC, NUMERIC),
        FeatureSpec("age_band", PROGNOSTIC, CATEGORICAL, can_be_missing=True,
                    levels=("18-24", "25-34", "35-44", "45-54", "55+"),
                    level_probabilities=(0.15, 0.3, 0.25, 0.18, 0.12), level_signal=(-1.0, -0.4, 0.1, 0.6, 1.0)),
        FeatureSpec("tenure_days", PROGNOSTIC, NUMERIC, can_be_missing=True),
        FeatureSpec("past_purchases", PROGNOSTIC, NUMERIC),
    ),
    NOISE: (
        FeatureSpec("device", NOISE, CATEGORICAL, levels=("ios", "android", "desktop"),
                    level_probabilities=(0.45, 0.4, 0.15), level_signal=(0.0, 0.0, 0.0)),
        FeatureSpec("signup_month", NOISE, NUMERIC),
        FeatureSpec("noise_0", NOISE, NUMERIC, can_be_missing=True),
        FeatureSpec("noise_1", NOISE, NUMERIC),
    ),
}


def feature_specs(config: CampaignConfig) -> tuple[FeatureSpec, ...]:
    """The campaign's features in column order: the catalog first, then plain Gaussian features named by role."""
    specs: list[FeatureSpec] = []
    for role, count in ((MODIFIER, config.n_modifiers), (PROGNOSTIC, config.n_prognostic), (NOISE, config.n_noise)):
        named = _CATALOG[role][:count]
        specs.extend(named)
        prefix = "noise" if role == NOISE else role
        start = sum(spec.name.startswith(prefix + "_") for spec in named)
        specs.extend(FeatureSpec(f"{prefix}_{start + j}", role, NUMERIC) for j in range(count - len(named)))
    return tuple(specs)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def stream(seed: int, *key: int) -> np.random.Generator:
    """An independent random stream for one purpose (and one chunk): the same (seed, key) gives the same numbers."""
    return np.random.default_rng(np.random.SeedSequence(entropy=seed, spawn_key=key))


# Stream keys: one purpose each, so adding draws to one purpose never shifts another's numbers.
WORLD_STREAM, USERS_STREAM, ACTIVITY_STREAM, GRAPH_STREAM, HIDDEN_STREAM = 0, 1, 2, 3, 4
DORMANT_STREAM = 6  # 5 is episodes.EPISODE_STREAM, 9 experiment.EXPERIMENT_STREAM


@dataclass
class UserBlock:
    """A contiguous block of users: observed feature columns and the latent quantities that drive them."""

    user_id: np.ndarray
    columns: dict[str, np.ndarray]
    modifier_signal: np.ndarray  # (n, n_modifiers), centred and scaled to about unit spread
    prognostic_signal: np.ndarray  # (n, n_prognostic)
    engagement: np.ndarray  # latent z_i ~ N(0, 1): drives activity, sessions, purchases and sociability
    randomized: np.ndarray  # bool: user is in the uniformly randomized slice
    coupon_affinity: np.ndarray  # unlogged u_i ~ N(0, 1): used only when config.hidden_targeting > 0

    def __len__(self) -> int:
        return len(self.user_id)

    def take(self, positions: np.ndarray) -> UserBlock:
        """The users at `positions` of this block, as a block."""
        return UserBlock(self.user_id[positions], {name: values[positions] for name, values in self.columns.items()},
                         self.modifier_signal[positions], self.prognostic_signal[positions],
                         self.engagement[positions], self.randomized[positions], self.coupon_affinity[positions])


@dataclass(frozen=True)
class CampaignWorld:
    """The hidden parameters of one campaign, drawn once from (config, random_state)."""

    config: CampaignConfig
    random_state: int
    features: tuple[FeatureSpec, ...]
    arm_base: np.ndarray  # (K,) average logit effect of each arm vs control
    effects: np.ndarray  # (K, n_modifiers) logit effect of each modifier signal on each arm
    prognostic_coefs: np.ndarray  # (n_prognostic,)
    carryover: np.ndarray  # (K,) logit gain in next-day activity after receiving the arm
    logging_intercepts: np.ndarray  # (K,)
    logging_weights: np.ndarray  # (K, n_modifiers + n_prognostic) targeting weights on the signals

    @classmethod
    def from_config(cls, config: CampaignConfig, *, random_state: int = 0) -> CampaignWorld:
        """Draw the world's parameters; `random_state` seeds them and every later draw of the campaign."""
        rng = stream(random_state, WORLD_STREAM)
        n_arms, n_mod, n_prog = len(config.arms), config.n_modifiers, config.n_prognostic
        # Every modifier moves every treatment arm by a clearly non-zero amount with a random sign,
        # so each modifier changes which arm is best for some users.
        magnitude = config.effect_scale * rng.uniform(0.5, 1.0, size=(n_arms, n_mod)) / np.sqrt(n_mod)
        effects = magnitude * rng.choice([-1.0, 1.0], size=(n_arms, n_mod))
        effects[0] = 0.0
        arm_base = rng.normal(0.15, 0.1, size=n_arms)
        arm_base[0] = 0.0
        carryover = rng.uniform(0.1, 0.4, size=n_arms)
        carryover[0] = 0.0
        prognostic_coefs = config.prognostic_scale * rng.uniform(0.6, 1.0, size=n_prog)
        logging_weights = rng.normal(0.0, 0.7, size=(n_arms, n_mod + n_prog))
        logging_weights[0] = 0.0
        logging_intercepts = np.zeros(n_arms)
        logging_intercepts[0] = np.log(2.0)  # the control arm is the logging policy's most frequent choice
        return cls(config, random_state, feature_specs(config), arm_base, effects, prognostic_coefs, carryover,
                   logging_intercepts, logging_weights)

    @property
    def arm_labels(self) -> list[str]:
        return self.config.arm_labels

    @property
    def arm_costs(self) -> np.ndarray:
        return np.asarray(self.config.arm_costs, dtype=float)

    # ------------------------------------------------------------------ users
    def draw_users(self, chunk_index: int, first_user_id: int, n: int) -> UserBlock:
        """Draw the users of one chunk; the chunk's own stream makes it independent of the other chunks."""
        rng = stream(self.random_state, USERS_STREAM, chunk_index)
        engagement = rng.standard_normal(n)
        columns: dict[str, np.ndarray] = {}
        signals: dict[str, np.ndarray] = {}
        for spec in self.features:
            raw, signal = _draw_feature(spec, rng, engagement)
            if spec.can_be_missing and self.config.missing_rate > 0:
                missing = rng.random(n) < self.config.missing_rate
                raw = raw.astype(object) if spec.kind == CATEGORICAL else raw.astype(float)
                raw[missing] = None if spec.kind == CATEGORICAL else np.nan
            columns[spec.name] = raw
            signals[spec.name] = signal
        by_role = {role: [spec.name for spec in self.features if spec.role == role] for role in (MODIFIER, PROGNOSTIC)}
        randomized = rng.random(n) < self.config.randomized_share
        return UserBlock(
            user_id=np.arange(first_user_id, first_user_id + n, dtype=np.int64),
            columns=columns,
            modifier_signal=np.column_stack([signals[name] for name in by_role[MODIFIER]]),
            prognostic_signal=(np.column_stack([signals[name] for name in by_role[PROGNOSTIC]])
                               if by_role[PROGNOSTIC] else np.zeros((n, 0))),
            engagement=engagement,
            randomized=randomized,
            coupon_affinity=stream(self.random_state, HIDDEN_STREAM, chunk_index).standard_normal(n),
        )

    # ------------------------------------------------------------------ truth
    def arm_effects(self, users: UserBlock) -> np.ndarray:
        """tau_k(x_i): per-user logit effect of each arm against control, shape (n, K)."""
        effects = self.arm_base[None, :] + users.modifier_signal @ self.effects.T
        if self.config.hidden_targeting > 0:
            effects[:, 1:] += self.config.hidden_targeting * users.coupon_affinity[:, None]
        return effects

    def baseline_logit(self, users: UserBlock) -> np.ndarray:
        """Control-arm logit of each user at zero habit: base plus the prognostic part, shape (n,)."""
        return self.config.base_response_logit + users.prognostic_signal @ self.prognostic_coefs

    def response_probability(self, users: UserBlock, habit: np.ndarray | float = 0.0) -> np.ndarray:
        """mu_ik: probability that user i purchases today if given arm k, shape (n, K)."""
        logit = self.baseline_logit(users)[:, None] + self.arm_effects(users)
        return _sigmoid(logit + self.config.habit_effect * np.asarray(habit, dtype=float).reshape(-1, 1))

    def best_arm(self, users: UserBlock) -> np.ndarray:
        """Index of the arm with the highest purchase probability for each user (independent of habit)."""
        return np.argmax(self.arm_effects(users), axis=1)

    def ceiling_arm(self, users: UserBlock, habit: np.ndarray | float = 0.0) -> np.ndarray:
        """The feature ceiling's arm per user: argmax_k E[mu_ik | the logged features, the baseline and habit],
        averaged over what the logs do not hold (the signal of a missing modifier value, from its marginal: modifiers
        are drawn independently of everything else; and the unlogged coupon affinity when `hidden_targeting` > 0).

        It also sees the baseline and habit exactly, so its value bounds from above the best any policy on the logged
        features could do, and is at most the full-truth oracle's (equal when nothing is missing or hidden)."""
        modifiers = [spec for spec in self.features if spec.role == MODIFIER]
        missing = np.column_stack([_is_missing(users.columns[spec.name]) for spec in modifiers])
        common = self.baseline_logit(users) + self.config.habit_effect * np.broadcast_to(
            np.asarray(habit, dtype=float), (len(users),))
        known = np.where(missing, 0.0, users.modifier_signal)
        arms = np.empty(len(users), dtype=np.int64)
        patterns, pattern_of = np.unique(missing, axis=0, return_inverse=True)
        for index, pattern in enumerate(patterns):
            rows = np.flatnonzero(pattern_of.ravel() == index)
            nodes, weights = _hidden_grid(self, [modifiers[j] for j in np.flatnonzero(pattern)])
            # (grid, K): what the unseen signals and affinity add to each arm's logit at each node
            added = nodes[:, :-1] @ self.effects[:, pattern].T
            added[:, 1:] += self.config.hidden_targeting * nodes[:, [-1]]
            for block in np.array_split(rows, max(1, rows.size * nodes.shape[0] // 2**20)):
                logit = (common[block, None] + self.arm_base[None, :] + known[block] @ self.effects.T)
                expected = np.einsum("g,ngk->nk", weights, _sigmoid(logit[:, None, :] + added[None, :, :]))
                arms[block] = np.argmax(expected, axis=1)
        return arms

    def logging_probabilities(self, users: UserBlock) -> np.ndarray:
        """The logging policy's arm probabilities per user, shape (n, K); uniform for the randomized slice."""
        signal = np.hstack([users.modifier_signal, users.prognostic_signal])
        logits = self.logging_intercepts[None, :] + self.config.logging_bias * signal @ self.logging_weights.T
        if self.config.hidden_targeting > 0:
            logits[:, 1:] += 2.0 * self.config.hidden_targeting * users.coupon_affinity[:, None]
        logits -= logits.max(axis=1, keepdims=True)
        softmax = np.exp(logits)
        softmax /= softmax.sum(axis=1, keepdims=True)
        n_arms = len(self.arm_base)
        probabilities = (1.0 - self.config.logging_epsilon) * softmax + self.config.logging_epsilon / n_arms
        probabilities[users.randomized] = 1.0 / n_arms
        return probabilities

    def activity_logit(self, users: UserBlock, habit: np.ndarray, previous_arm: np.ndarray) -> np.ndarray:
        """Logit of being active today; previous_arm is -1 for users who got no arm yet."""
        carry = np.where(previous_arm >= 0, self.carryover[np.maximum(previous_arm, 0)], 0.0)
        return self.config.activity_logit + 0.8 * users.engagement + self.config.habit_effect * habit + carry

    # ------------------------------------------------------------------ activity
    def simulate(self, users: UserBlock, chunk_index: int) -> dict[str, np.ndarray]:
        """Run the campaign's days for a block of users under the logging policy.

        Returns one entry per decision (active user-day), in (day, user) order: the logged columns
        (user_id, day, arm index, propensity, reward, cost, randomized, recent_purchases) and the truth
        (habit, expected reward of every arm `mu` (rows, K), logging probabilities `logging_p` (rows, K)).
        """
        days = CampaignDays.start(self, users, chunk_index)
        logging_p = self.logging_probabilities(users)
        rows = []
        for _ in range(self.config.n_days):
            active = days.active()
            rows.append(days.respond(active, logging_p[active]))
        return {key: np.concatenate([day[key] for day in rows]) for key in rows[0]}


@dataclass(frozen=True)
class Contagion:
    """Interference between users: a user's logit of being active today gains `strength` times the share of their
    hidden interaction partners (weighted by interactions) who bought yesterday. A policy that makes some users buy
    more brings their partners back too, so a test that randomizes users next to each other sees less than the
    policy's effect on everyone (the spillover reaches the control group)."""

    partners: sparse.csr_matrix  # (n, n) interaction weights, each row summing to 1 (0 for users with no partner)
    strength: float

    @classmethod
    def of_interactions(cls, src: np.ndarray, dst: np.ndarray, weight: np.ndarray, n: int,
                        strength: float) -> Contagion:
        """From undirected interactions between block positions `src` and `dst`."""
        both = sparse.coo_matrix((np.concatenate([weight, weight]), (np.concatenate([src, dst]),
                                                                     np.concatenate([dst, src]))), shape=(n, n)).tocsr()
        total = np.asarray(both.sum(axis=1)).ravel()
        return cls(sparse.diags(np.where(total > 0, 1.0 / np.maximum(total, 1e-300), 0.0)) @ both, strength)

    def pull(self, bought: np.ndarray) -> np.ndarray:
        """The activity logit each user gains from yesterday's purchases `bought` (n,) of their partners."""
        return self.strength * (self.partners @ bought.astype(np.float64))


@dataclass
class CampaignDays:
    """The campaign's days for a block of users, one at a time, under any arm probabilities: `simulate` runs them
    under the logging policy; a closed loop decides each day with its own policy, from the active users' features
    and `recent_purchases`. Each day draws, in order, who is active, then the arm and the purchase of each active
    user, all from the chunk's activity stream, so the logging run is the one `campaign generate` writes."""

    world: CampaignWorld
    users: UserBlock
    rng: np.random.Generator
    baseline: np.ndarray
    effects: np.ndarray
    habit: np.ndarray
    previous_arm: np.ndarray
    purchases_by_day: np.ndarray
    contagion: Contagion | None = None
    day: int = 0

    @classmethod
    def start(cls, world: CampaignWorld, users: UserBlock, chunk_index: int, *,
              contagion: Contagion | None = None) -> CampaignDays:
        n = len(users)
        return cls(world, users, stream(world.random_state, ACTIVITY_STREAM, chunk_index), world.baseline_logit(users),
                   world.arm_effects(users), np.zeros(n), np.full(n, -1, dtype=np.int64),
                   np.zeros((RECENT_WINDOW_DAYS, n), dtype=np.int16), contagion)

    def active(self) -> np.ndarray:
        """Today's active users (positions in the block): the first draw of the day."""
        logit = self.world.activity_logit(self.users, self.habit, self.previous_arm)
        if self.contagion is not None and self.day > 0:
            logit = logit + self.contagion.pull(self.purchases_by_day[(self.day - 1) % RECENT_WINDOW_DAYS])
        return np.flatnonzero(self.rng.random(len(self.users)) < _sigmoid(logit))

    def recent_purchases(self, active: np.ndarray) -> np.ndarray:
        """Purchases of the active users over the last `RECENT_WINDOW_DAYS` days (a logged feature)."""
        return self.purchases_by_day.sum(axis=0)[active].astype(np.int32)

    def respond(self, active: np.ndarray, probabilities: np.ndarray) -> dict[str, np.ndarray]:
        """Draw each active user's arm from its row of `probabilities` (active, K) and its purchase, move the day
        on, and return the day's decisions as `simulate` does (`logging_p`: the probabilities drawn from)."""
        world, n_arms = self.world, len(self.world.arm_base)
        cumulative = np.cumsum(probabilities, axis=1)
        arm = np.minimum((self.rng.random(active.size)[:, None] > cumulative).sum(axis=1), n_arms - 1)
        mu = _sigmoid(self.baseline[active, None] + self.effects[active]
                      + world.config.habit_effect * self.habit[active, None])
        reward = (self.rng.random(active.size) < mu[np.arange(active.size), arm]).astype(np.float64)
        row = {"user_id": self.users.user_id[active], "day": np.full(active.size, self.day, dtype=np.int32),
               "arm": arm, "propensity": probabilities[np.arange(active.size), arm], "reward": reward,
               "cost": world.arm_costs[arm] * reward, "randomized": self.users.randomized[active],
               "recent_purchases": self.recent_purchases(active), "habit": self.habit[active], "mu": mu,
               "logging_p": probabilities}
        purchased = np.zeros(len(self.users))
        purchased[active] = reward
        self.habit = world.config.habit_decay * self.habit + purchased
        self.previous_arm[active] = arm
        self.purchases_by_day[self.day % RECENT_WINDOW_DAYS] = purchased
        self.day += 1
        return row


def _is_missing(values: np.ndarray) -> np.ndarray:
    """Where a drawn feature column holds no value (None in a categorical column, NaN in a numeric one)."""
    if values.dtype == object:
        return np.array([value is None for value in values], dtype=bool)
    return np.isnan(values) if np.issubdtype(values.dtype, np.floating) else np.zeros(values.size, dtype=bool)


def _signal_marginal(spec: FeatureSpec) -> tuple[np.ndarray, np.ndarray]:
    """Quadrature nodes and weights (summing to 1) of a feature's signal as `_draw_feature` draws it."""
    if spec.kind == CATEGORICAL:
        return np.asarray(spec.level_signal, dtype=float), np.asarray(spec.level_probabilities, dtype=float)
    if spec.kind == BINARY:
        return np.array([-1.0, 1.0]), np.array([0.65, 0.35])
    if spec.name == "price_sensitivity":  # Beta(2, 2), centred and scaled: mid-quantiles of 64 equal cells
        from scipy.stats import beta

        return (beta.ppf((np.arange(64) + 0.5) / 64, 2.0, 2.0) - 0.5) / 0.2236, np.full(64, 1 / 64)
    nodes, weights = np.polynomial.hermite_e.hermegauss(24)  # every other numeric signal is N(0, 1)
    return nodes, weights / weights.sum()


def _hidden_grid(world: CampaignWorld, specs: list[FeatureSpec]) -> tuple[np.ndarray, np.ndarray]:
    """The product grid of the unseen signals of `specs` and the unlogged coupon affinity: nodes (grid, len(specs)
    + 1), the affinity last (0 when `hidden_targeting` is 0), and weights (grid,) summing to 1."""
    marginals = [_signal_marginal(spec) for spec in specs]
    if world.config.hidden_targeting > 0:
        nodes, weights = np.polynomial.hermite_e.hermegauss(24)
        marginals.append((nodes, weights / weights.sum()))
    else:
        marginals.append((np.zeros(1), np.ones(1)))
    grids = np.meshgrid(*(nodes for nodes, _ in marginals), indexing="ij")
    weights = np.ones(1)
    for _, weight in marginals:
        weights = np.multiply.outer(weights, weight).ravel()
    return np.column_stack([grid.ravel() for grid in grids]), weights


def _draw_feature(spec: FeatureSpec, rng: np.random.Generator, engagement: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Draw one feature's observed values and its centred signal (what enters the response model)."""
    n = engagement.size
    if spec.kind == CATEGORICAL:
        codes = rng.choice(len(spec.levels), size=n, p=spec.level_probabilities)
        return np.asarray(spec.levels, dtype=object)[codes], np.asarray(spec.level_signal)[codes]
    if spec.kind == BINARY:
        raw = (rng.random(n) < 0.35).astype(np.int8)
        return raw, 2.0 * raw - 1.0
    match spec.name:
        case "price_sensitivity":
            raw = rng.beta(2.0, 2.0, size=n)
            return raw, (raw - 0.5) / 0.2236
        case "basket_value":
            log_value = rng.normal(3.5, 0.6, size=n)
            return np.round(np.exp(log_value), 2), (log_value - 3.5) / 0.6
        case "sessions_30d":
            raw = rng.poisson(np.exp(1.5 + 0.5 * engagement)).astype(np.float64)
            return raw, (np.log1p(raw) - 1.65) / 0.6
        case "tenure_days":
            raw = np.floor(rng.exponential(400.0, size=n))
            return raw, (np.log1p(raw) - 5.4) / 1.25
        case "past_purchases":
            raw = rng.poisson(np.exp(0.5 + 0.6 * engagement)).astype(np.float64)
            return raw, (np.log1p(raw) - 0.85) / 0.6
        case "signup_month":
            raw = rng.integers(1, 13, size=n).astype(np.float64)
            return raw, np.zeros(n)
    raw = rng.standard_normal(n)
    return raw, raw if spec.role != NOISE else np.zeros(n)
