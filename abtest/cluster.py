"""Clusters of users who interact: the randomization units of a graph-clustered experiment.

`cluster_graph` runs Louvain (modularity with a resolution) on the interaction graph, or on the LinkLouvain graph
of predicted interactions, or Leiden (Traag, Waltman & van Eck 2019: Louvain with a refinement step that keeps every
cluster connected; igraph's, two iterations), or takes connected components. igraph's C Louvain serves large graphs
(about 10x faster than networkx at the same modularity on 10^6 edges; Leiden about 15-30x, at equal or higher
modularity), networkx small ones; all are seeded, so the same `random_state` gives the same clusters. A cluster above
`max_cluster_size` is re-clustered on its own subgraph at the lowest resolution (from 1, in steps of x1.5) that
splits it, and so on until every part fits; a cluster that cannot be split (a clique) is cut into breadth-first
chunks. Splitting at the lowest resolution that works keeps the parts as large as allowed.
"""

from __future__ import annotations

import random
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import breadth_first_order, connected_components

from abtest.graph import InteractionGraph, build_graph
from campaign_core import InputError

METHODS = ("louvain", "linklouvain", "leiden", "connected_components")
BACKENDS = ("auto", "igraph", "networkx")
NETWORKX_MAX_EDGES = 20_000  # "auto" uses networkx up to this many edges, igraph above


class SingleClusterWarning(UserWarning):
    """Every user is in one cluster: a cluster-randomized experiment cannot randomize anything."""


@dataclass(frozen=True, eq=False)
class Clustering:
    """Each user's cluster: ids 0..k-1 numbered by decreasing size (ties by the smallest member's node index)."""

    user_ids: np.ndarray
    cluster: np.ndarray
    method: str
    resolution: float
    modularity: float  # of `cluster` on the graph it was computed on, at `resolution`
    random_state: int

    @property
    def n_clusters(self) -> int:
        return int(self.cluster.max()) + 1 if len(self.cluster) else 0

    @property
    def sizes(self) -> np.ndarray:
        return np.bincount(self.cluster, minlength=self.n_clusters)

    def to_frame(self) -> pd.DataFrame:
        """One row per user: `user_id`, `cluster`."""
        return pd.DataFrame({"user_id": self.user_ids, "cluster": self.cluster})

    def summary(self) -> dict[str, float]:
        sizes = self.sizes
        return {"n_users": len(self.user_ids), "n_clusters": self.n_clusters, "modularity": self.modularity,
                "resolution": self.resolution,
                "cluster_size_median": float(np.median(sizes)) if len(sizes) else 0.0,
                "cluster_size_max": int(sizes.max(initial=0)),
                "singleton_clusters": int(np.sum(sizes == 1))}


def cluster_graph(graph_or_edges, *, users=None, method: str = "leiden", resolution: float = 1.0,
                  max_cluster_size: int | None = None, random_state: int = 0, backend: str = "auto",
                  link_predictor=None, past_kind: str = "invite") -> Clustering:
    """Cluster users for randomization.

    graph_or_edges: an `InteractionGraph`, or an edges table (`src`, `dst`, optional `weight`, `kind`) that is
        built with `build_graph(edges, users)`.
    method: "leiden" (the default) on the given graph: igraph's Leiden with the modularity objective, clusters
        always connected, no networkx backend; at 10^6 edges 17.7-26.6x networkx's Louvain with equal or higher
        modularity, where igraph's own Louvain, the floor of "louvain", is 8-11x (benchmarks/RESULTS.md 7a).
        "louvain" on the given graph (networkx up to 20,000 edges, igraph above, with `backend="auto"`);
        "linklouvain" on the graph of predicted interactions (needs an edges table whose edges of kind `past_kind`
        are past interactions; see `abtest.linkpred`); "connected_components".
    resolution: the modularity resolution of Louvain and Leiden (higher: more, smaller clusters).
    max_cluster_size: users per cluster at most; larger clusters are re-split.
    random_state: seeds Louvain / Leiden (and, for "linklouvain", the link prediction's draws).
    link_predictor: for "linklouvain", an unfitted link predictor (default `FeatureLinkPredictor()`).
    """
    if method not in METHODS:
        raise InputError(f"method: must be one of {METHODS}, got {method!r}")
    if backend not in BACKENDS:
        raise InputError(f"backend: must be one of {BACKENDS}, got {backend!r}")
    if not np.isfinite(resolution) or resolution <= 0:
        raise InputError(f"resolution: must be positive, got {resolution}")
    if max_cluster_size is not None and int(max_cluster_size) < 1:
        raise InputError(f"max_cluster_size: must be at least 1, got {max_cluster_size}")
    if method == "leiden" and backend == "networkx":
        raise InputError("backend: leiden runs on igraph only (networkx has no Leiden of its own)")
    if method == "linklouvain":
        if not isinstance(graph_or_edges, pd.DataFrame):
            raise InputError("linklouvain: needs the edges table (observed relations and past interactions of kind "
                             f"{past_kind!r}), not a built graph")
        from abtest.linkpred import predicted_interaction_graph

        graph = predicted_interaction_graph(graph_or_edges, users, predictor=link_predictor, past_kind=past_kind,
                                            random_state=random_state).graph
    elif isinstance(graph_or_edges, InteractionGraph):
        graph = graph_or_edges
    else:
        graph = build_graph(graph_or_edges, users)

    if method == "connected_components":
        labels = _components(graph)
    else:
        labels = _modularity_clusters(graph, resolution, random_state, backend, leiden=method == "leiden")
    if max_cluster_size is not None:
        labels = _split_oversized(graph, labels, int(max_cluster_size), random_state, backend,
                                  leiden=method == "leiden")
    labels = canonical_labels(labels)
    if graph.n_users > 1 and labels.max(initial=0) == 0:
        warnings.warn(f"{method}: all {graph.n_users} users fell in one cluster; no randomization is possible",
                      SingleClusterWarning, stacklevel=2)
    return Clustering(graph.user_ids, labels, method, float(resolution),
                      modularity(graph, labels, resolution=resolution), int(random_state))


def modularity(graph: InteractionGraph, labels: np.ndarray, *, resolution: float = 1.0) -> float:
    """Newman's weighted modularity with resolution: sum_c [w_in(c) / W - resolution (s(c) / 2W)^2]."""
    total = graph.weight.sum()
    if total <= 0:
        return 0.0
    inside = labels[graph.src] == labels[graph.dst]
    k = int(labels.max()) + 1
    w_in = np.bincount(labels[graph.src[inside]], graph.weight[inside], minlength=k)
    strength = np.bincount(labels, graph.strength, minlength=k)
    return float(w_in.sum() / total - resolution * np.sum((strength / (2 * total)) ** 2))


def canonical_labels(labels: np.ndarray) -> np.ndarray:
    """Relabel clusters 0..k-1 by decreasing size, ties by smallest member index (so labels do not depend on the
    backend's numbering)."""
    labels = np.asarray(labels, dtype=np.int64)
    if labels.size == 0:
        return labels
    _, dense = np.unique(labels, return_inverse=True)
    sizes = np.bincount(dense)
    first = np.full(len(sizes), labels.size, dtype=np.int64)
    np.minimum.at(first, dense, np.arange(labels.size))
    order = np.lexsort((first, -sizes))
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return rank[dense]


def _components(graph: InteractionGraph) -> np.ndarray:
    n = graph.n_users
    matrix = coo_matrix((np.ones(graph.n_edges), (graph.src, graph.dst)), shape=(n, n))
    return connected_components(matrix, directed=False)[1].astype(np.int64)


def _modularity_clusters(graph: InteractionGraph, resolution: float, seed: int, backend: str,
                         leiden: bool = False) -> np.ndarray:
    """Louvain (or, with `leiden`, igraph's Leiden) cluster labels of `graph`'s users, seeded."""
    if graph.n_edges == 0:
        return np.arange(graph.n_users, dtype=np.int64)
    if not leiden and (backend == "networkx" or (backend == "auto" and graph.n_edges <= NETWORKX_MAX_EDGES)):
        import networkx as nx

        communities = nx.community.louvain_communities(graph.to_networkx(), weight="weight",
                                                       resolution=resolution, seed=seed)
        labels = np.empty(graph.n_users, dtype=np.int64)
        for index, members in enumerate(communities):
            labels[list(members)] = index
        return labels
    import igraph as ig

    ig.set_random_number_generator(random.Random(seed))
    try:
        if leiden:
            membership = graph.to_igraph().community_leiden(objective_function="modularity", weights="weight",
                                                            resolution=resolution, n_iterations=2).membership
        else:
            membership = graph.to_igraph().community_multilevel(weights="weight", resolution=resolution).membership
    finally:
        ig.set_random_number_generator(random)
    return np.asarray(membership, dtype=np.int64)


def _split_oversized(graph: InteractionGraph, labels: np.ndarray, max_size: int, seed: int,
                     backend: str, leiden: bool = False) -> np.ndarray:
    """Re-cluster every cluster above `max_size` users on its own subgraph until all parts fit."""
    labels = canonical_labels(labels)
    oversized = np.flatnonzero(np.bincount(labels) > max_size)
    if oversized.size == 0:
        return labels
    if backend == "auto" and graph.n_edges > NETWORKX_MAX_EDGES:
        backend = "igraph"  # the pieces of a large graph are small, but there are many: keep the fast backend
    # Each oversized cluster's internal edges, sliced once (not one pass over the whole graph per cluster).
    inside = (labels[graph.src] == labels[graph.dst]) & np.isin(labels[graph.src], oversized)
    src, dst, weight = graph.src[inside], graph.dst[inside], graph.weight[inside]
    order = np.argsort(labels[src], kind="stable")
    src, dst, weight = src[order], dst[order], weight[order]
    edge_start = np.searchsorted(labels[src], oversized, side="left")
    edge_stop = np.searchsorted(labels[src], oversized, side="right")
    members_order = np.argsort(labels, kind="stable")
    member_start = np.searchsorted(labels[members_order], oversized, side="left")
    member_stop = np.searchsorted(labels[members_order], oversized, side="right")
    local = np.full(graph.n_users, -1, dtype=np.int64)
    next_label = int(labels.max()) + 1
    for index in range(len(oversized)):
        nodes = members_order[member_start[index]:member_stop[index]]
        local[nodes] = np.arange(len(nodes))
        edges = slice(edge_start[index], edge_stop[index])
        a, b = local[src[edges]], local[dst[edges]]
        sub = InteractionGraph(graph.user_ids[nodes], np.minimum(a, b), np.maximum(a, b), weight[edges])
        parts = _split_to_fit(sub, max_size, seed, backend, leiden)
        labels[nodes] = next_label + parts
        next_label += int(parts.max()) + 1
    return labels


def _split_to_fit(sub: InteractionGraph, max_size: int, seed: int, backend: str, leiden: bool) -> np.ndarray:
    """Labels 0..k-1 of `sub`'s users, every part at most `max_size` users."""
    parts = _merge_small_parts(sub, _lowest_resolution_split(sub, seed, backend, max_size, leiden), max_size)
    labels = np.empty(sub.n_users, dtype=np.int64)
    next_label = 0
    for part in np.unique(parts):
        members = np.flatnonzero(parts == part)
        if len(members) > max_size:
            inner = _split_to_fit(sub.subgraph(members), max_size, seed, backend, leiden)
            labels[members] = next_label + inner
            next_label += int(inner.max()) + 1
        else:
            labels[members] = next_label
            next_label += 1
    return labels


def _lowest_resolution_split(sub: InteractionGraph, seed: int, backend: str, max_size: int,
                             leiden: bool) -> np.ndarray:
    resolution = 1.0
    while sub.n_edges and resolution < 1e4:
        parts = _modularity_clusters(sub, resolution, seed, backend, leiden)
        if parts.max() != parts.min():
            return parts
        resolution *= 1.5
    return _breadth_first_chunks(sub, max_size)


def _merge_small_parts(sub: InteractionGraph, parts: np.ndarray, max_size: int) -> np.ndarray:
    """Greedily merge the two parts joined by the most edge weight while their union fits in `max_size` (Louvain at
    a raised resolution over-splits; merging back keeps clusters as large as allowed)."""
    _, parts = np.unique(parts, return_inverse=True)
    k = int(parts.max()) + 1
    if k > 2000:
        return parts
    between = np.zeros((k, k))
    np.add.at(between, (parts[sub.src], parts[sub.dst]), sub.weight)
    between = between + between.T
    np.fill_diagonal(between, 0.0)
    size = np.bincount(parts, minlength=k).astype(float)
    alive = np.ones(k, dtype=bool)
    target = np.arange(k)
    while True:
        fits = (size[:, None] + size[None, :] <= max_size) & alive[:, None] & alive[None, :] & (between > 0)
        if not fits.any():
            break
        a, b = np.unravel_index(np.argmax(np.where(fits, between, -1.0)), between.shape)
        between[a] += between[b]
        between[:, a] += between[:, b]
        between[a, a] = 0.0
        between[b] = between[:, b] = 0.0
        size[a] += size[b]
        alive[b] = False
        target[target == b] = a
    return target[parts]


def _breadth_first_chunks(graph: InteractionGraph, max_size: int) -> np.ndarray:
    """Consecutive chunks of at most `max_size` users along breadth-first orders (neighbours stay together)."""
    n = graph.n_users
    matrix = coo_matrix((np.ones(graph.n_edges), (graph.src, graph.dst)), shape=(n, n)).tocsr()
    matrix = matrix + matrix.T
    seen = np.zeros(n, dtype=bool)
    order = []
    for start in range(n):
        if not seen[start]:
            visit = breadth_first_order(matrix, start, directed=False, return_predecessors=False)
            seen[visit] = True
            order.append(visit)
    position = np.empty(n, dtype=np.int64)
    position[np.concatenate(order)] = np.arange(n)
    return position // max_size
