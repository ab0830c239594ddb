"""Checks of the assignment and outcome tables, in one place, before any analysis starts."""

from __future__ import annotations

import numpy as np
import pandas as pd

from abtest.graph import InteractionGraph
from campaign_core import InputError, plain

ANALYSIS_DESIGNS = ("bernoulli", "paired", "user", "network_test")


def checked_assignment(assignment: pd.DataFrame) -> pd.DataFrame:
    """The assignment table if it has unique `user_id`, integer `cluster` and `group` in {0, 1}; else ValueError."""
    if not isinstance(assignment, pd.DataFrame):
        raise InputError(f"assignment: need a DataFrame, got {type(assignment).__name__}")
    for column in ("user_id", "cluster", "group"):
        if column not in assignment.columns:
            raise InputError(f"assignment: missing column {column!r} (have {list(assignment.columns)})")
        if assignment[column].isna().any():
            raise InputError(f"assignment.{column}: {int(assignment[column].isna().sum())} missing value(s)")
    if assignment["user_id"].duplicated().any():
        raise InputError(f"assignment.user_id: {int(assignment['user_id'].duplicated().sum())} duplicate user(s)")
    bad = ~assignment["group"].isin([0, 1])
    if bad.any():
        raise InputError(f"assignment.group: {int(bad.sum())} value(s) are not 0 (control) or 1 (treatment)")
    if not pd.api.types.is_integer_dtype(assignment["cluster"]):
        raise InputError(f"assignment.cluster: must be integer ids, got dtype {assignment['cluster'].dtype}")
    return assignment


def infer_design(assignment: pd.DataFrame, design: str | None) -> str:
    """The design named, or the one the table shows: a `design` column is a network test, a `pair` column paired,
    a cluster holding both groups a user-randomized test, otherwise cluster-Bernoulli."""
    if design is None:
        if "design" in assignment.columns:
            return "network_test"
        if "pair" in assignment.columns:
            return "paired"
        if {"cluster", "group"} <= set(assignment.columns) and len(assignment):
            mixed = assignment.groupby("cluster", sort=False)["group"].nunique().max() > 1
            return "user" if mixed else "bernoulli"
        return "bernoulli"
    if design not in ANALYSIS_DESIGNS:
        raise InputError(f"design: must be one of {ANALYSIS_DESIGNS}, got {design!r}")
    if design == "paired" and "pair" not in assignment.columns:
        raise InputError("assignment: design 'paired' needs the 'pair' column that assign(design='paired') writes")
    if design == "network_test" and "design" not in assignment.columns:
        raise InputError("assignment: design 'network_test' needs the 'design' column that "
                         "assign(design='network_test') writes")
    return design


def aligned_assignment(graph: InteractionGraph, assignment: pd.DataFrame) -> pd.DataFrame:
    """The assignment rows in the graph's user order; ValueError if a user of the graph is not assigned."""
    assignment = checked_assignment(assignment)
    position = pd.Index(assignment["user_id"]).get_indexer(graph.user_ids)
    missing = int((position < 0).sum())
    if missing:
        raise InputError(f"assignment.user_id: {missing} user(s) of the graph are not assigned "
                         f"(e.g. {plain(graph.user_ids[position < 0][0])!r})")
    return assignment.iloc[position].reset_index(drop=True)


def checked_outcomes(outcomes: pd.DataFrame, metric: str, pre_metric: str | None) -> pd.DataFrame:
    """The outcome table if `user_id` is unique and `metric` (and `pre_metric`) numeric and complete."""
    if not isinstance(outcomes, pd.DataFrame):
        raise InputError(f"outcomes: need a DataFrame, got {type(outcomes).__name__}")
    for column in ("user_id", metric) + ((pre_metric,) if pre_metric else ()):
        if column not in outcomes.columns:
            raise InputError(f"outcomes: missing column {column!r} (have {list(outcomes.columns)})")
        if column != "user_id" and (not pd.api.types.is_numeric_dtype(outcomes[column])
                                    or pd.api.types.is_bool_dtype(outcomes[column])):
            raise InputError(f"outcomes.{column}: must be numeric, got dtype {outcomes[column].dtype}")
        values = outcomes[column]
        bad = values.isna() if column == "user_id" else ~np.isfinite(values.to_numpy(dtype=float, na_value=np.nan))
        if bad.any():
            raise InputError(f"outcomes.{column}: {int(bad.sum())} missing or infinite value(s)")
    if outcomes["user_id"].duplicated().any():
        raise InputError(f"outcomes.user_id: {int(outcomes['user_id'].duplicated().sum())} duplicate user(s)")
    return outcomes
