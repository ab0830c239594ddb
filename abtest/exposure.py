"""Exposure conditions and their probabilities under a cluster-randomized design.

A user is *exposed to treatment* when they are treated and enough of their neighbours are treated too, and
*exposed to control* likewise; the exposure-based estimators compare those users, weighted by the inverse of the
probability of the exposure. Conditions (on unweighted neighbour counts):

- "full": every neighbour in the user's arm. Under cluster-Bernoulli(p), P(exposed to treatment) = p^j with j the
  number of clusters touching the user's closed neighbourhood;
- ("fractional", q): at least a share q of the neighbours (ceil(q d) of d) in the user's arm;
- ("absolute", k): at least k neighbours in the user's arm (users with fewer than k neighbours are never exposed).

A user without neighbours is exposed whenever they are in the arm. The probabilities come from a small dynamic
program over the randomization units touching the neighbourhood: a cluster (Bernoulli designs), a size-matched pair
of clusters of which exactly one is treated ("paired"), or the user ("user").
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from numba import njit
from scipy import sparse

from abtest.cluster import Clustering
from abtest.graph import InteractionGraph
from campaign_core import InputError, plain

EXPOSURE_DESIGNS = ("bernoulli", "paired", "user")


def parse_condition(condition) -> tuple[str, float]:
    """("full", 1.0), ("fractional", q) with q in (0, 1], or ("absolute", k) with k a non-negative integer."""
    if condition == "full":
        return "fractional", 1.0
    if isinstance(condition, tuple | list) and len(condition) == 2:
        kind, value = condition
        if kind == "fractional" and isinstance(value, int | float) and 0.0 < float(value) <= 1.0:
            return "fractional", float(value)
        if kind == "absolute" and isinstance(value, int | np.integer) and int(value) >= 0:
            return "absolute", float(value)
    raise InputError(f"condition: must be 'full', ('fractional', q) with 0 < q <= 1 or ('absolute', k) with "
                     f"integer k >= 0, got {condition!r}")


def required_neighbours(degree: np.ndarray, *, condition) -> np.ndarray:
    """Neighbours each user needs in their own arm to count as exposed."""
    kind, value = parse_condition(condition)
    if kind == "absolute":
        return np.full(degree.shape, int(value), dtype=np.int64)
    return np.ceil(value * degree - 1e-9).astype(np.int64)


def exposure_probabilities(graph: InteractionGraph, assignment, *, p: float = 0.5, condition="full",
                           design: str = "bernoulli") -> pd.DataFrame:
    """P(exposed to treatment) and P(exposed to control) of each user of `graph`: `user_id`, `exposure_p1`,
    `exposure_p0`, `n_units_touched` (clusters, pairs or users meeting the closed neighbourhood).

    assignment: a `Clustering`, or a table with `user_id` and `cluster` (and `pair` for design "paired") covering
        every user of the graph.
    design: "bernoulli" (cluster-Bernoulli(p)), "paired" (one cluster of each pair treated; p = 0.5) or "user"
        (user-Bernoulli(p); clusters ignored).
    """
    if design not in EXPOSURE_DESIGNS:
        raise InputError(f"design: must be one of {EXPOSURE_DESIGNS}, got {design!r}")
    if not isinstance(p, int | float) or not 0.0 < float(p) < 1.0:
        raise InputError(f"p: the treated share must be strictly between 0 and 1, got {p!r}")
    if design == "paired" and p != 0.5:
        raise InputError(f"p: the paired design treats one cluster of each pair, so p must be 0.5, got {p}")
    needed = required_neighbours(graph.degree, condition=condition)
    cluster, unit = _cluster_and_unit(graph, assignment, design)
    indptr, neighbour, _ = graph.adjacency
    p1, p0, touched = _probabilities(indptr, neighbour, cluster, unit, needed, float(p), design == "paired")
    return pd.DataFrame({"user_id": graph.user_ids, "exposure_p1": p1, "exposure_p0": p0,
                         "n_units_touched": touched})


def exposure_units(graph: InteractionGraph, assignment, *, design: str = "bernoulli") -> sparse.csr_matrix:
    """Which randomization coins each user's exposure depends on: a users (graph order) x coins 0/1 matrix, 1 for
    the coin of the user's own unit and of each neighbour's. Coins: clusters ("bernoulli"), pairs of clusters
    ("paired"), users ("user"). `exposure_estimate` uses it for Horvitz-Thompson's variance."""
    if design not in EXPOSURE_DESIGNS:
        raise InputError(f"design: must be one of {EXPOSURE_DESIGNS}, got {design!r}")
    n = graph.n_users
    _, coin = np.unique(_cluster_and_unit(graph, assignment, design)[1], return_inverse=True)
    indptr, neighbour, _ = graph.adjacency
    rows = np.concatenate([np.arange(n), np.repeat(np.arange(n), np.diff(indptr))])
    matrix = sparse.csr_matrix((np.ones(len(rows)), (rows, np.concatenate([coin, coin[neighbour]]))),
                               shape=(n, int(coin.max(initial=-1)) + 1))
    matrix.data[:] = 1.0  # a coin met through several neighbours counts once
    return matrix


def realized_exposure(graph: InteractionGraph, group: np.ndarray, *,
                      condition="full") -> tuple[np.ndarray, np.ndarray]:
    """(exposed to treatment, exposed to control) of each user of `graph`, given each user's group (1/0, in graph
    order)."""
    group = np.asarray(group)
    indptr, neighbour, _ = graph.adjacency
    row = np.repeat(np.arange(graph.n_users), np.diff(indptr))
    treated_neighbours = np.bincount(row, weights=group[neighbour] == 1, minlength=graph.n_users)
    control_neighbours = graph.degree - treated_neighbours
    needed = required_neighbours(graph.degree, condition=condition)
    return (group == 1) & (treated_neighbours >= needed), (group == 0) & (control_neighbours >= needed)


def _cluster_and_unit(graph: InteractionGraph, assignment, design: str) -> tuple[np.ndarray, np.ndarray]:
    """Each graph user's cluster and randomization unit (the coin: cluster, pair of clusters, or the user)."""
    if design == "user":
        cluster = np.arange(graph.n_users, dtype=np.int64)
        return cluster, cluster
    frame = assignment.to_frame() if isinstance(assignment, Clustering) else assignment
    cluster = _aligned(graph, frame, "cluster")
    return cluster, _aligned(graph, frame, "pair") if design == "paired" else cluster


def _aligned(graph: InteractionGraph, frame: pd.DataFrame, column: str) -> np.ndarray:
    if not isinstance(frame, pd.DataFrame) or "user_id" not in frame.columns or column not in frame.columns:
        raise InputError(f"assignment: needs columns user_id and {column!r}")
    if "design" in frame.columns:
        raise InputError("assignment: exposure probabilities are per design; analyse each arm of a network_test "
                         "assignment on its own")
    position = pd.Index(frame["user_id"]).get_indexer(graph.user_ids)
    missing = int((position < 0).sum())
    if missing:
        raise InputError(f"assignment.user_id: {missing} user(s) of the graph have no {column} "
                         f"(e.g. {plain(graph.user_ids[position < 0][0])!r})")
    values = frame[column].to_numpy()[position]
    if not pd.api.types.is_integer_dtype(values.dtype):
        raise InputError(f"assignment.{column}: must be integer ids, got dtype {values.dtype}")
    return values.astype(np.int64)


@njit(cache=True)
def _probabilities(indptr, neighbour, cluster, unit, needed, p, paired):
    n = indptr.size - 1
    p1 = np.zeros(n)
    p0 = np.zeros(n)
    touched = np.zeros(n, dtype=np.int64)
    for i in range(n):
        start, stop = indptr[i], indptr[i + 1]
        degree = stop - start
        # Neighbours sorted by (unit, cluster): runs give the count per cluster, grouped by unit.
        key_unit = unit[neighbour[start:stop]]
        key_cluster = cluster[neighbour[start:stop]]
        order = np.argsort(key_unit * (cluster.size + 1) + key_cluster)
        key_unit = key_unit[order]
        key_cluster = key_cluster[order]
        own_count = 0
        unit_count = 1
        first_a = np.zeros(degree, dtype=np.int64)  # counts of the (at most two) clusters of each other unit
        first_b = np.zeros(degree, dtype=np.int64)
        n_units = 0
        k = 0
        while k < degree:
            u = key_unit[k]
            c = key_cluster[k]
            m = k
            while m < degree and key_unit[m] == u and key_cluster[m] == c:
                m += 1
            count = m - k
            if u == unit[i]:
                if c == cluster[i]:
                    own_count += count
            elif n_units > 0 and key_unit[k - 1] == u:
                first_b[n_units - 1] = count
            else:
                first_a[n_units] = count
                n_units += 1
            k = m
        unit_count += n_units
        touched[i] = unit_count
        if needed[i] > degree:
            continue
        for arm in range(2):
            r = p if arm == 1 else 1.0 - p
            dist = np.zeros(degree + 1)
            dist[own_count] = 1.0
            for s in range(n_units):
                new = np.zeros(degree + 1)
                for x in range(degree + 1):
                    mass = dist[x]
                    if mass == 0.0:
                        continue
                    if paired and first_b[s] > 0:
                        new[x + first_a[s]] += 0.5 * mass
                        new[x + first_b[s]] += 0.5 * mass
                    else:
                        new[x + first_a[s]] += r * mass
                        new[x] += (1.0 - r) * mass
                dist = new
            total = 0.0
            for x in range(needed[i], degree + 1):
                total += dist[x]
            if arm == 1:
                p1[i] = r * total
            else:
                p0[i] = r * total
    return p1, p0, touched


def full_exposure_probability(p: float, units_touched: np.ndarray) -> np.ndarray:
    """p^j: the closed form for full-neighbourhood exposure under unit-Bernoulli(p) (a check on the program)."""
    return np.power(p, units_touched)


__all__ = ["exposure_probabilities", "exposure_units", "full_exposure_probability", "parse_condition",
           "realized_exposure", "required_neighbours"]
