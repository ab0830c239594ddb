"""Registered pipeline stages; importing this package registers them all (a new stage's module is imported here)."""

from pipelines.stages import (  # noqa: F401
    allocate,
    assign,
    build_transitions,
    constrained_rl,
    decide,
    evaluate_policy,
    fit_bandit,
    generate,
    profile_logs,
    promote,
    readout,
    select_features,
    simulate_outcomes,
)
