"""Extra allocation constraints beyond the total budget, validated on construction."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from campaign_core import InputError


@dataclass(frozen=True)
class AllocationConstraints:
    """Constraints an allocation must meet besides the total budget.

    segment_caps : segment label -> the most that segment's users may cost in all (currency units). The dual
        allocator handles these (one multiplier per cap); the LP does too.
    min_treated_share : the least share of users (0..1) given a level other than `untreated_level`. LP only.
    level_inventory : level index -> the most users that may get that level (e.g. coupons printed). LP only.
    untreated_level : the level index that means "nothing" (column 0 by default).
    """

    segment_caps: Mapping[str, float] = field(default_factory=dict)
    min_treated_share: float = 0.0
    level_inventory: Mapping[int, float] = field(default_factory=dict)
    untreated_level: int = 0

    def __post_init__(self) -> None:
        for label, cap in self.segment_caps.items():
            if not (isinstance(cap, int | float) and math.isfinite(cap) and cap >= 0):
                raise InputError(f"constraints.segment_caps: cap of segment {label!r} must be a number >= 0, "
                                 f"got {cap!r}")
        if not 0.0 <= self.min_treated_share <= 1.0:
            raise InputError(f"constraints.min_treated_share: must be in [0, 1], got {self.min_treated_share}")
        for level, count in self.level_inventory.items():
            if not isinstance(level, int) or level < 0:
                raise InputError(f"constraints.level_inventory: level must be a column index >= 0, got {level!r}")
            if not (isinstance(count, int | float) and math.isfinite(count) and count >= 0):
                raise InputError(f"constraints.level_inventory: inventory of level {level} must be >= 0, got {count!r}")
        if self.untreated_level < 0:
            raise InputError(f"constraints.untreated_level: must be a column index >= 0, got {self.untreated_level}")
        object.__setattr__(self, "segment_caps", MappingProxyType(dict(self.segment_caps)))
        object.__setattr__(self, "level_inventory", MappingProxyType(dict(self.level_inventory)))

    @property
    def needs_lp(self) -> list[str]:
        """The constraints only the LP formulation handles."""
        needs = []
        if self.min_treated_share > 0:
            needs.append("min_treated_share")
        if self.level_inventory:
            needs.append("level_inventory")
        return needs

    def check_levels(self, n_levels: int) -> None:
        """Raise if a level index is outside the J columns."""
        for level in [*self.level_inventory, self.untreated_level]:
            if level >= n_levels:
                raise InputError(f"constraints: level {level} does not exist (levels are 0..{n_levels - 1})")
