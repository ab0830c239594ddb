"""Registered pipeline stages; importing this package registers them all (domain issues add their module here)."""

from pipelines.stages import allocate, evaluate_policy, fit_bandit, generate, profile_logs, select_features  # noqa: F401
