"""The arguments of `score_features`, checked once on construction (a one-line ValueError naming the key)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from campaign_core import InputError

BIN_METHODS = ("hie", "hdd", "combined", "kl", "ed", "chi")  # scored from bin tables: permutation p, bootstrap CI
TEST_METHODS = ("f", "lr")  # regression tests with analytic p-values
MODEL_METHODS = ("causal_forest",)
METHODS = BIN_METHODS + TEST_METHODS + MODEL_METHODS
UPLIFT_METHODS = ("kl", "ed", "chi")
COMPAT_MODES = ("causalml",)


@dataclass(frozen=True)
class ScoringOptions:
    """Validated scoring arguments; `seed` is concrete (drawn once when `random_state` is None)."""

    features: tuple[str, ...]
    arm_col: str
    reward_col: str
    methods: tuple[str, ...]
    n_bins: int
    control: object
    propensity_col: str | None
    user_col: str | None
    n_permutations: int
    n_bootstrap: int
    compat: str | None
    seed: int
    smoothing: float
    confidence: float
    combined_weights: tuple[float, float]
    max_levels: int
    min_level_share: float
    forest_rows: int
    replicate_memory_mb: float = 256.0

    def __post_init__(self) -> None:
        unknown = [method for method in self.methods if method not in METHODS]
        if unknown or not self.methods:
            raise InputError(f"methods: unknown {unknown or 'empty list'}; choose from {list(METHODS)}")
        if isinstance(self.n_bins, bool) or not isinstance(self.n_bins, int | np.integer) or self.n_bins < 2:
            raise InputError(f"n_bins: must be an integer >= 2, got {self.n_bins!r}")
        for key in ("n_permutations", "n_bootstrap"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
                raise InputError(f"{key}: must be an integer >= 0, got {value!r}")
        if self.compat not in (None, *COMPAT_MODES):
            raise InputError(f"compat: must be None or one of {list(COMPAT_MODES)}, got {self.compat!r}")
        if not self.replicate_memory_mb > 0:
            raise InputError(f"replicate_memory_mb: must be > 0 MB, got {self.replicate_memory_mb!r}")
        if not self.smoothing >= 0:
            raise InputError(f"smoothing: must be >= 0 pseudo-rows, got {self.smoothing!r}")
        if not 0 < self.confidence < 1:
            raise InputError(f"confidence: must be in (0, 1), got {self.confidence!r}")
        if len(self.combined_weights) != 2 or min(self.combined_weights) < 0 or sum(self.combined_weights) <= 0:
            raise InputError(f"combined_weights: need two non-negative weights, got {self.combined_weights!r}")
        if not self.features:
            raise InputError("features: no candidate features given")
        duplicated = sorted({name for name in self.features if self.features.count(name) > 1})
        if duplicated:
            raise InputError(f"features: listed more than once: {duplicated}")
        reserved = [name for name in (self.arm_col, self.reward_col, self.propensity_col, self.user_col)
                    if name is not None and name in self.features]
        if reserved:
            raise InputError(f"features: {reserved} is the arm, reward, propensity or user id column, not a candidate "
                             "feature")

    @property
    def score_methods(self) -> tuple[str, ...]:
        """Methods actually computed: "combined" brings hie and hdd with it (raw scores are always reported)."""
        methods = list(self.methods)
        if "combined" in methods:
            methods += [m for m in ("hie", "hdd") if m not in methods]
        if "hie" in methods and "hdd" in methods and "combined" not in methods:
            methods.append("combined")
        return tuple(m for m in METHODS if m in methods)

    def needed_columns(self) -> list[str]:
        extra = [name for name in (self.propensity_col, self.user_col) if name]
        return [*self.features, self.arm_col, self.reward_col, *extra]
