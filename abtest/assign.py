"""Which group each user is in: a deterministic function of (randomization unit, salt).

Designs:
- "bernoulli": each cluster is treated with probability p (the hash of (cluster, salt) cut at p);
- "paired": clusters sorted by size are paired with their neighbour in that order and one of each pair, chosen by
  the hash, is treated (complete randomization within size-matched pairs: lower variance; p must be 0.5; an odd
  cluster out is Bernoulli(0.5));
- "user": each user is treated with probability p (the user-level A/B test, kept for comparison);
- "network_test": Saveski et al.'s test for network effects: clusters are split half and half (by hash) between a
  user-randomized and a cluster-randomized arm, and randomized accordingly; column `design` says which.

Every draw is `campaign_core.salted_uniform(id, salt)` (the platform's salted splitmix64 hash, reproducible outside
Python) cut at p: cluster ids under `salt` for the cluster coins, under `salt + "/pair"`, `"/odd"` and `"/design"`
for the paired and network-test coins, user ids under `salt` for the user coins. Re-running with the same clusters
and salt gives the same groups, whatever the row order or partitioning; another salt gives an independent draw.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from abtest.cluster import Clustering
from campaign_core import InputError, salted_uniform

DESIGNS = ("bernoulli", "paired", "user", "network_test")
TREATMENT, CONTROL = 1, 0


def assign(clusters, *, salt: str, p: float = 0.5, design: str = "bernoulli") -> pd.DataFrame:
    """The assignment table: `user_id`, `cluster`, `group` (1 treatment, 0 control); for "paired" a `pair` column
    (the smaller cluster id of the pair), for "network_test" a `design` column ("user" or "cluster").

    clusters: a `Clustering`, or a table with `user_id` and `cluster`.
    """
    if design not in DESIGNS:
        raise InputError(f"design: must be one of {DESIGNS}, got {design!r}")
    if not isinstance(p, int | float) or not 0.0 < float(p) < 1.0:
        raise InputError(f"p: the treated share must be strictly between 0 and 1, got {p!r}")
    if design == "paired" and p != 0.5:
        raise InputError(f"p: the paired design treats one cluster of each pair, so p must be 0.5, got {p}")
    if not isinstance(salt, str) or not salt:
        raise InputError(f"salt: need a non-empty string, got {salt!r}")
    frame = _cluster_frame(clusters)
    cluster = frame["cluster"].to_numpy()
    if design == "bernoulli":
        group = salted_uniform(cluster, salt) < p
    elif design == "paired":
        group, frame["pair"] = _paired(cluster, salt)
    elif design == "user":
        group = salted_uniform(frame["user_id"].to_numpy(), salt) < p
    else:
        by_user = salted_uniform(cluster, salt + "/design") < 0.5
        group = np.where(by_user, salted_uniform(frame["user_id"].to_numpy(), salt) < p,
                         salted_uniform(cluster, salt) < p)
        frame["design"] = np.where(by_user, "user", "cluster")
    frame.insert(2, "group", group.astype(np.int64))
    return frame


def _paired(cluster: np.ndarray, salt: str) -> tuple[np.ndarray, np.ndarray]:
    """(treated, pair id) per user; the pair id is the smaller cluster id of the pair."""
    ids, size = np.unique(cluster, return_counts=True)
    draw = salted_uniform(ids, salt)
    order = np.lexsort((draw, size))  # by size; ties broken by the hash, so the pairing is salted too
    treated = np.zeros(len(ids), dtype=bool)
    n_pairs = len(ids) // 2
    first, second = order[0:2 * n_pairs:2], order[1:2 * n_pairs:2]
    coin = salted_uniform(ids[first], salt + "/pair") < 0.5
    treated[first[coin]] = True
    treated[second[~coin]] = True
    pair = ids.copy()
    pair[first] = pair[second] = np.minimum(ids[first], ids[second])
    if len(ids) % 2:  # the odd cluster out: a coin of its own (its sort draw is the largest among tied sizes)
        treated[order[-1]] = salted_uniform(ids[order[-1:]], salt + "/odd")[0] < 0.5
    where = np.searchsorted(ids, cluster)
    return treated[where], pair[where]


def _cluster_frame(clusters) -> pd.DataFrame:
    if isinstance(clusters, Clustering):
        return clusters.to_frame()
    if not isinstance(clusters, pd.DataFrame):
        raise InputError(f"clusters: need a Clustering or a table with user_id and cluster, got "
                         f"{type(clusters).__name__}")
    for column in ("user_id", "cluster"):
        if column not in clusters.columns:
            raise InputError(f"clusters: missing column {column!r}")
        if clusters[column].isna().any():
            raise InputError(f"clusters.{column}: {int(clusters[column].isna().sum())} missing value(s)")
    if not pd.api.types.is_integer_dtype(clusters["cluster"]):
        raise InputError(f"clusters.cluster: must be integer ids, got dtype {clusters['cluster'].dtype}")
    if clusters["user_id"].duplicated().any():
        raise InputError(f"clusters.user_id: {int(clusters['user_id'].duplicated().sum())} duplicate user(s)")
    return clusters[["user_id", "cluster"]].reset_index(drop=True).copy()

