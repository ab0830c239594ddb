"""Registered pipeline stages; importing this package registers them all (domain issues add their module here)."""

from pipelines.stages import (  # noqa: F401
    allocate,
    assign,
    evaluate_policy,
    fit_bandit,
    generate,
    profile_logs,
    readout,
    select_features,
)
