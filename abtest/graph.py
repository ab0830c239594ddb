"""The interaction graph an experiment is designed on: users as nodes 0..n-1, undirected weighted edges.

Built from an edges table (`src`, `dst`, optional `weight` > 0, optional `kind`) and, optionally, the users table
that defines who is in the experiment. The rules for untidy input, applied in this order and each reported by a
`GraphInputWarning` with its row count:

- edges whose `kind` is not in `kinds` (when given) are left out;
- self-loops are dropped (a user does not interfere with themself);
- edges naming a user who is not in `users` (when given) are dropped, or raise with `unknown_users="error"`;
- duplicate pairs, in either direction, are collapsed into one edge whose weight is the sum of theirs
  (two invitations between the same users are twice the interaction of one); the warning counts duplicates within
  one `kind`, since a friendship and an invitation between the same users are two relations, not a duplicate.

Missing `src`/`dst` values, and weights that are missing, non-numeric, infinite or not positive, raise
`ValueError` before any work is done.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd

from campaign_core import InputError, plain


class GraphInputWarning(UserWarning):
    """The edges table needed tidying (self-loops, duplicates or unknown users were dropped or collapsed)."""


@dataclass(frozen=True, eq=False)
class InteractionGraph:
    """Users 0..n-1 (labels in `user_ids`) and undirected edges src < dst, unique, with positive weights."""

    user_ids: np.ndarray
    src: np.ndarray
    dst: np.ndarray
    weight: np.ndarray

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_edges(self) -> int:
        return len(self.src)

    @cached_property
    def adjacency(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Symmetric CSR (indptr, neighbour, weight): user i's neighbours are neighbour[indptr[i]:indptr[i+1]]."""
        both = np.concatenate([self.src, self.dst])
        other = np.concatenate([self.dst, self.src])
        weight = np.concatenate([self.weight, self.weight])
        order = np.lexsort((other, both))
        counts = np.bincount(both, minlength=self.n_users)
        indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return indptr, other[order], weight[order]

    @property
    def degree(self) -> np.ndarray:
        """Number of distinct neighbours of each user."""
        return np.diff(self.adjacency[0])

    @property
    def strength(self) -> np.ndarray:
        """Total edge weight at each user."""
        return np.bincount(np.concatenate([self.src, self.dst]), np.concatenate([self.weight, self.weight]),
                           minlength=self.n_users)

    def positions(self, user_ids, *, what: str = "user_id") -> np.ndarray:
        """Node index of each label; ValueError naming `what` if any label is not a user of this graph."""
        position = pd.Index(self.user_ids).get_indexer(np.asarray(user_ids))
        missing = int((position < 0).sum())
        if missing:
            example = np.asarray(user_ids)[position < 0][0]
            raise InputError(f"{what}: {missing} value(s) are not users of the graph (e.g. {plain(example)!r})")
        return position

    def to_frame(self) -> pd.DataFrame:
        """One row per edge: `src`, `dst` (user labels, src < dst by node index) and `weight`."""
        return pd.DataFrame({"src": self.user_ids[self.src], "dst": self.user_ids[self.dst], "weight": self.weight})

    def summary(self) -> dict[str, float]:
        degree = self.degree
        return {"n_users": self.n_users, "n_edges": self.n_edges, "total_weight": float(self.weight.sum()),
                "mean_degree": float(degree.mean()) if self.n_users else 0.0,
                "isolated_users": int(np.sum(degree == 0))}

    def to_networkx(self, *, weight: bool = True):
        import networkx as nx

        graph = nx.Graph()
        graph.add_nodes_from(range(self.n_users))
        if weight:
            graph.add_weighted_edges_from(zip(self.src.tolist(), self.dst.tolist(), self.weight.tolist(),
                                              strict=True))
        else:
            graph.add_edges_from(zip(self.src.tolist(), self.dst.tolist(), strict=True))
        return graph

    def to_igraph(self):
        import igraph as ig

        graph = ig.Graph(n=self.n_users, directed=False)
        graph.add_edges(np.column_stack([self.src, self.dst]))  # twice as fast as passing the edges to Graph()
        graph.es["weight"] = self.weight
        return graph

    def subgraph(self, nodes: np.ndarray) -> InteractionGraph:
        """The graph induced on node indices `nodes` (renumbered 0..len(nodes)-1 in the given order)."""
        local = np.full(self.n_users, -1, dtype=np.int64)
        local[nodes] = np.arange(len(nodes))
        keep = (local[self.src] >= 0) & (local[self.dst] >= 0)
        a, b = local[self.src[keep]], local[self.dst[keep]]
        return InteractionGraph(self.user_ids[nodes], np.minimum(a, b), np.maximum(a, b), self.weight[keep])


def graph_from_networkx(graph, *, weight: str | None = "weight") -> InteractionGraph:
    """An `InteractionGraph` from a networkx graph (node labels become `user_ids`; weight 1 where absent)."""
    nodes = list(graph.nodes())
    labels = np.empty(len(nodes), dtype=object)
    labels[:] = nodes  # element-wise: tuple labels (grid graphs) stay one label each
    if len(nodes) and all(isinstance(node, int | np.integer) for node in nodes):
        labels = labels.astype(np.int64)
    edges = list(graph.edges(data=True))
    frame = pd.DataFrame({"src": [u for u, _, _ in edges], "dst": [v for _, v, _ in edges],
                          "weight": [float(d.get(weight, 1.0)) if weight else 1.0 for _, _, d in edges]})
    return build_graph(frame, pd.DataFrame({"user_id": labels}))


def build_graph(edges: pd.DataFrame, users: pd.DataFrame | pd.Series | np.ndarray | None = None, *,
                kinds=None, unknown_users: str = "drop") -> InteractionGraph:
    """An `InteractionGraph` from an edges table; users (a table with `user_id`, or the ids) fix the node set.

    Without `users` the node set is every id the edges name. See the module docstring for the input rules.
    """
    if unknown_users not in ("drop", "error"):
        raise InputError(f"unknown_users: must be 'drop' or 'error', got {unknown_users!r}")
    if not isinstance(edges, pd.DataFrame):
        raise InputError(f"edges: need a DataFrame with columns src, dst, got {type(edges).__name__}")
    for column in ("src", "dst"):
        if column not in edges.columns:
            raise InputError(f"edges: missing column {column!r} (have {list(edges.columns)})")
        missing = int(edges[column].isna().sum())
        if missing:
            raise InputError(f"edges.{column}: {missing} missing value(s)")
    weight = _checked_weights(edges)
    src, dst = edges["src"].to_numpy(), edges["dst"].to_numpy()

    kind = edges["kind"].to_numpy() if "kind" in edges.columns else None
    if kinds is not None:
        if kind is None:
            raise InputError("edges: kinds= was given but the table has no 'kind' column")
        wanted = [kinds] if isinstance(kinds, str) else list(kinds)
        keep = edges["kind"].isin(wanted).to_numpy()
        if not keep.any():
            raise InputError(f"edges.kind: no edge of kind {wanted} (kinds present: "
                             f"{sorted(edges['kind'].dropna().unique().tolist())})")
        src, dst, weight, kind = src[keep], dst[keep], weight[keep], kind[keep]

    loops = src == dst
    if loops.any():
        _warn(f"edges: dropped {int(loops.sum())} self-loop(s)")
        src, dst, weight = src[~loops], dst[~loops], weight[~loops]
        kind = kind[~loops] if kind is not None else None

    if users is None:
        user_ids = pd.unique(np.concatenate([src, dst])) if len(src) else np.zeros(0, dtype=np.int64)
        user_ids = np.sort(user_ids) if len(user_ids) else user_ids
    else:
        user_ids = _user_ids(users)
    index = pd.Index(user_ids)
    a, b = index.get_indexer(src), index.get_indexer(dst)
    unknown = (a < 0) | (b < 0)
    if unknown.any():
        example = src[a < 0][0] if (a < 0).any() else dst[b < 0][0]
        message = (f"edges: {int(unknown.sum())} edge(s) name a user who is not in the users table "
                   f"(e.g. {plain(example)!r})")
        if unknown_users == "error":
            raise InputError(message)
        _warn(message + "; dropped")
        a, b, weight = a[~unknown], b[~unknown], weight[~unknown]
        kind = kind[~unknown] if kind is not None else None

    lo, hi = np.minimum(a, b).astype(np.int64), np.maximum(a, b).astype(np.int64)
    key = lo * np.int64(max(len(user_ids), 1)) + hi
    unique_keys, inverse = np.unique(key, return_inverse=True)
    duplicates = len(key) - len(unique_keys)
    if duplicates and kind is not None:
        duplicates = int(pd.DataFrame({"kind": kind, "key": key}).duplicated().sum())
    if duplicates:
        _warn(f"edges: collapsed {duplicates} duplicate edge(s) (either direction, same kind) by summing their "
              "weights")
    merged = np.bincount(inverse, weights=weight, minlength=len(unique_keys))
    n = np.int64(max(len(user_ids), 1))
    return InteractionGraph(np.asarray(user_ids), unique_keys // n, unique_keys % n, merged.astype(np.float64))


def _checked_weights(edges: pd.DataFrame) -> np.ndarray:
    if "weight" not in edges.columns:
        return np.ones(len(edges))
    if not pd.api.types.is_numeric_dtype(edges["weight"]) or pd.api.types.is_bool_dtype(edges["weight"]):
        raise InputError(f"edges.weight: must be numeric, got dtype {edges['weight'].dtype}")
    weight = edges["weight"].to_numpy(dtype=float, na_value=np.nan)
    bad = ~np.isfinite(weight) | (weight <= 0)
    if bad.any():
        raise InputError(f"edges.weight: {int(bad.sum())} weight(s) are missing, infinite or not positive "
                         f"(e.g. {weight[bad][0]})")
    return weight


def _user_ids(users) -> np.ndarray:
    if isinstance(users, pd.DataFrame):
        if "user_id" not in users.columns:
            raise InputError(f"users: missing column 'user_id' (have {list(users.columns)})")
        ids = users["user_id"]
    else:
        ids = pd.Series(np.asarray(users))
    if ids.isna().any():
        raise InputError(f"users.user_id: {int(ids.isna().sum())} missing value(s)")
    if ids.duplicated().any():
        raise InputError(f"users.user_id: {int(ids.duplicated().sum())} duplicate id(s) (e.g. "
                         f"{plain(ids[ids.duplicated()].iloc[0])!r})")
    return ids.to_numpy()


def _warn(message: str) -> None:
    warnings.warn(message, GraphInputWarning, stacklevel=3)
