"""Graph-clustered A/B tests: cluster users who interact (Louvain, LinkLouvain), assign whole clusters, check the
design before launch, and read out with estimators that account for interference.

    graph = build_graph(edges, users)
    clusters = cluster_graph(graph, max_cluster_size=500, random_state=7)  # Leiden
    groups = assign(clusters, salt="spring-invite-2026", p=0.5)
    design_diagnostics(graph, groups).summary()
    readout(outcomes, groups, metric="conversions", graph=graph).to_frame()

Seeds are `random_state`; arguments after the data are keyword-only. Every result object (`Clustering`,
`DesignDiagnostics`, `Effect`, `NetworkEffectTest`, `SampleRatioCheck`, `Readout`, `LinkPrediction`,
`InteractionGraph`) has `.to_frame()`, its tidy per-row table, and `.summary()`, a dict of its headline figures.

Model, properties and usage: docs/abtest.md ('The global effect and the bias a design removes' for the
formulas the designs and estimators rely on).
"""

from abtest.assign import assign
from abtest.cluster import Clustering, SingleClusterWarning, cluster_graph, modularity
from abtest.diagnostics import DesignDiagnostics, cluster_size_figure, design_diagnostics
from abtest.estimate import Effect, NetworkEffectTest, difference_in_means, exposure_estimate, network_effect_test
from abtest.exposure import exposure_probabilities, exposure_units, realized_exposure
from abtest.graph import GraphInputWarning, InteractionGraph, build_graph, graph_from_networkx
from abtest.readout import MissingOutcomeWarning, Readout, SampleRatioCheck, readout, readout_figure

__all__ = ["Clustering", "DesignDiagnostics", "Effect", "GraphInputWarning", "InteractionGraph",
           "MissingOutcomeWarning", "NetworkEffectTest", "Readout", "SampleRatioCheck", "SingleClusterWarning",
           "assign", "build_graph", "cluster_graph", "cluster_size_figure", "design_diagnostics",
           "difference_in_means", "exposure_estimate", "exposure_probabilities", "exposure_units",
           "graph_from_networkx", "modularity", "network_effect_test", "readout", "readout_figure", "realized_exposure"]
