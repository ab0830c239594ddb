"""Known answers the abtest tests compare against: exposure probabilities by brute-force enumeration of every
assignment, networkx views of a graph, and a Monte Carlo summary."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from abtest import InteractionGraph, realized_exposure


def nx_closed_neighbourhood_clusters(graph: InteractionGraph, cluster: np.ndarray) -> np.ndarray:
    """Number of distinct clusters in each user's closed neighbourhood, read off networkx."""
    nxg = graph.to_networkx()
    return np.array([len({int(cluster[v]) for v in [u, *nxg.neighbors(u)]}) for u in range(graph.n_users)])


def enumerated_exposure(graph: InteractionGraph, cluster: np.ndarray, p: float, condition, design: str,
                        pair: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact P(exposed to treatment), P(exposed to control) by summing over every assignment of the design.

    bernoulli: every subset of clusters, weight p^k (1-p)^(K-k); user: the same with one unit per user; paired:
    one cluster of each two-cluster pair treated (1/2 each), a single-cluster pair Bernoulli(1/2).
    """
    n = graph.n_users
    cluster = np.arange(n) if design == "user" else np.asarray(cluster)
    p1, p0 = np.zeros(n), np.zeros(n)
    if design == "paired":
        members = [np.unique(cluster[pair == q]) for q in np.unique(pair)]
        choices = [[(m[0],), (m[1],)] if len(m) == 2 else [(), (m[0],)] for m in members]
        for combo in itertools.product(*choices):
            treated = [c for chosen in combo for c in chosen]
            e1, e0 = realized_exposure(graph, np.isin(cluster, treated).astype(int), condition=condition)
            p1 += 0.5 ** len(members) * e1
            p0 += 0.5 ** len(members) * e0
        return p1, p0
    ids = np.unique(cluster)
    where = np.searchsorted(ids, cluster)
    for bits in itertools.product((0, 1), repeat=len(ids)):
        bits = np.array(bits)
        weight = float(np.prod(np.where(bits == 1, p, 1 - p)))
        e1, e0 = realized_exposure(graph, bits[where], condition=condition)
        p1 += weight * e1
        p0 += weight * e0
    return p1, p0


def cluster_frame(graph: InteractionGraph, cluster: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"user_id": graph.user_ids, "cluster": np.asarray(cluster, dtype=np.int64)})


def mc_summary(values: np.ndarray) -> tuple[float, float, float]:
    """(mean, Monte Carlo standard error of the mean, standard deviation) of replicated estimates."""
    values = np.asarray(values, dtype=float)
    sd = float(values.std(ddof=1))
    return float(values.mean()), sd / np.sqrt(len(values)), sd
