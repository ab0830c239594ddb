"""Contextual bandit policies that log propensities, and off-policy evaluation with intervals.

Specified in ../shared/specs/bandits.md; implemented by issue 4. No public API yet.
"""
