"""Budget allocation: two-stage response model + dual LP, and offline constrained RL with a mixed policy.

Specified in ../shared/specs/budget_rl.md; implemented by issues 5 and 6. No public API yet.
"""
