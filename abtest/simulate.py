"""Simulated experiments with interference, for tests and benchmarks: graphs with known structure and outcome
models whose global effect (everyone treated vs nobody treated) is known.

Graphs come from networkx generators (planted partition, Watts-Strogatz, LFR) or any `InteractionGraph`, e.g. the
synthetic campaign's hidden interaction graph. Outcomes:

- `LinearInMeans`: y_i = a + b z_i + g s_i + e_i, s_i = share of i's neighbours treated (0 without neighbours);
  global effect b + g for users with neighbours, b for isolated users;
- `ThresholdOutcome`: y_i = a + b z_i + g 1{s_i >= theta} + e_i: the spillover switches on when a share theta of
  neighbours is treated (a non-linear response that exposure conditions model well and means do not).

The noise e_i ~ N(0, noise^2) is drawn from `random_state` (a seed or a `numpy.random.Generator`, whose stream
continues), so one seed gives one experiment.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from abtest.graph import InteractionGraph, graph_from_networkx
from campaign_core import InputError


def treated_neighbour_share(graph: InteractionGraph, treated: np.ndarray, *, weighted: bool = False) -> np.ndarray:
    """Share of each user's neighbours (or of their edge weight) that is treated; 0 for users without neighbours."""
    indptr, neighbour, weight = graph.adjacency
    row = np.repeat(np.arange(graph.n_users), np.diff(indptr))
    w = weight if weighted else np.ones_like(weight)
    total = np.bincount(row, weights=w, minlength=graph.n_users)
    hits = np.bincount(row, weights=w * (np.asarray(treated)[neighbour] == 1), minlength=graph.n_users)
    return np.divide(hits, total, out=np.zeros(graph.n_users), where=total > 0)


@dataclass(frozen=True)
class LinearInMeans:
    """y = a + b z + g s + N(0, noise^2), s the treated share of neighbours (edge weights when `weighted`)."""

    a: float = 1.0
    b: float = 0.5
    g: float = 1.0
    noise: float = 1.0
    weighted: bool = False

    def outcomes(self, graph: InteractionGraph, treated: np.ndarray, *,
                 random_state: int | np.random.Generator | None) -> np.ndarray:
        share = treated_neighbour_share(graph, treated, weighted=self.weighted)
        noise = np.random.default_rng(random_state).standard_normal(len(share))
        return self.a + self.b * np.asarray(treated) + self.g * share + self.noise * noise

    def global_effect(self, graph: InteractionGraph) -> float:
        """Mean over users of y(everyone treated) - y(nobody treated)."""
        return float(self.b + self.g * np.mean(graph.degree > 0))


@dataclass(frozen=True)
class ThresholdOutcome:
    """y = a + b z + g 1{s >= theta} + N(0, noise^2)."""

    a: float = 1.0
    b: float = 0.5
    g: float = 1.0
    theta: float = 0.5
    noise: float = 1.0

    def __post_init__(self):
        if not 0.0 < self.theta <= 1.0:
            raise InputError(f"theta: the treated share that switches the spillover on must be in (0, 1], "
                             f"got {self.theta}")

    def outcomes(self, graph: InteractionGraph, treated: np.ndarray, *,
                 random_state: int | np.random.Generator | None) -> np.ndarray:
        share = treated_neighbour_share(graph, treated)
        spill = (share >= self.theta) & (graph.degree > 0)
        noise = np.random.default_rng(random_state).standard_normal(len(share))
        return self.a + self.b * np.asarray(treated) + self.g * spill + self.noise * noise

    def global_effect(self, graph: InteractionGraph) -> float:
        return float(self.b + self.g * np.mean(graph.degree > 0))


def planted_partition(n_communities: int, size: int, p_in: float, p_out: float, *,
                      random_state: int = 0) -> InteractionGraph:
    """networkx planted-partition graph (communities of `size` users; edge probability p_in within, p_out across)."""
    import networkx as nx

    return graph_from_networkx(nx.planted_partition_graph(n_communities, size, p_in, p_out, seed=random_state))


def watts_strogatz(n: int, k: int, rewire: float, *, random_state: int = 0) -> InteractionGraph:
    """networkx connected Watts-Strogatz ring lattice (k nearest neighbours, rewiring probability `rewire`)."""
    import networkx as nx

    return graph_from_networkx(nx.connected_watts_strogatz_graph(n, k, rewire, seed=random_state))


def lfr(n: int = 1000, *, mu: float = 0.1, average_degree: float = 10, min_community: int = 20,
        max_degree: int = 50, random_state: int = 10) -> InteractionGraph:
    """networkx LFR benchmark graph (power-law degrees and community sizes, a share `mu` of edges across)."""
    import networkx as nx

    graph = nx.LFR_benchmark_graph(n, tau1=3, tau2=1.5, mu=mu, average_degree=average_degree,
                                   min_community=min_community, max_community=max(5 * min_community, 100),
                                   max_degree=max_degree, seed=random_state)
    graph.remove_edges_from(nx.selfloop_edges(graph))
    return graph_from_networkx(graph)
