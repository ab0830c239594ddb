"""Budget allocation across users: response models and the two-stage (response model + dual LP) allocator."""

from budget_rl.allocation import Allocation, FractionalUser, allocate
from budget_rl.constraints import AllocationConstraints
from budget_rl.dual import spend_at_multiplier
from budget_rl.lp import InfeasibleAllocationError
from budget_rl.plots import frontier_figure

__all__ = ["Allocation", "AllocationConstraints", "FractionalUser", "InfeasibleAllocationError", "allocate",
           "frontier_figure", "spend_at_multiplier"]
