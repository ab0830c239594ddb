"""Stage `assign`: cluster the interaction graph, randomize clusters, and check the design before launch.

1. Graph: `abtest.build_graph` on the edges table (edges of `kinds`, or all), restricted to the users table when one
   is given (edges naming other users are dropped and the count logged).
2. Clusters: Leiden on that graph (the default: on the synthetic campaign it cuts less of the hidden interaction
   weight than Louvain and runs faster, benchmarks/RESULTS.md section 7), Louvain on that graph, LinkLouvain (a link
   predictor trained on past interactions of kind `past_kind` scores friend and friend-of-friend pairs; Louvain on
   the predicted graph), or connected components; clusters above `max_cluster_size` are re-split.
3. Assignment: a deterministic function of (cluster, salt); the salt defaults to one derived from the job seed.
4. Diagnostics to MLflow: clusters and their sizes (histogram), share of edge weight cut, share of neighbours in the
   same cluster and arm, covariate balance (users-table numeric columns), exposure probabilities.

Writes the assignment table: user_id, cluster, group (1 treatment, 0 control), exposure_p1, exposure_p0 (and pair or
design for those designs).
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import pandas as pd
from pydantic import Field

import abtest
from pipelines.config import ConfigPath, StageConfig
from pipelines.errors import InputError
from pipelines.io import write_parquet
from pipelines.stages.experiment_graph import exposure_condition, load_graph, read_edges, read_user_ids
from pipelines.stages.registry import DemoInputs, StageContext, StageResult, register_stage
from pipelines.tables import EDGES, USERS, read_table


class AssignConfig(StageConfig):
    edges: ConfigPath = Field(description="edges table (parquet): src, dst, optional weight (> 0) and kind")
    users: ConfigPath | None = Field(None, description="users table: who is in the experiment (none: every user "
                                                       "the edges name); numeric columns are balance-checked")
    out: ConfigPath = Field(description="assignment table (parquet file): user_id, cluster, group, exposure_p1, "
                                        "exposure_p0")
    kinds: list[str] | None = Field(None, description="edge kinds that make the graph (none: all)")
    method: Literal["louvain", "linklouvain", "leiden", "connected_components"] = Field(
        "leiden", description="leiden on the graph (igraph, fastest on large graphs, connected clusters); louvain "
                              "on the graph; linklouvain on predicted interactions; connected components")
    past_kind: str = Field("invite", description="linklouvain: edge kind of past interactions (training labels)")
    link_model: Literal["features", "gnn"] = Field("features", description="linklouvain: feature classifier or "
                                                                           "torch GNN link predictor")
    link_threshold: float = Field(0.1, ge=0.0, lt=1.0, description="linklouvain: least predicted probability kept "
                                                                    "(kept pairs are weighted by probability)")
    resolution: float = Field(1.0, gt=0, description="Louvain / Leiden resolution (higher: smaller clusters)")
    max_cluster_size: int | None = Field(None, ge=1, description="most users per cluster (larger are re-split)")
    design: Literal["bernoulli", "paired", "user", "network_test"] = Field(
        "bernoulli", description="cluster Bernoulli(p); size-matched cluster pairs; user Bernoulli(p); or half the "
                                 "clusters user-randomized, half cluster-randomized (the network-effect test)")
    p: float = Field(0.5, gt=0.0, lt=1.0, description="share of clusters (or users) treated")
    salt: str | None = Field(None, description="assignment salt (none: derived from the job seed)")
    exposure: str = Field("full", description="exposure condition: full, fractional:<q> or absolute:<k>")

    retired_keys: ClassVar[dict[str, str]] = {
        "truth_interactions": "synthetic campaigns are scored against their truth automatically"}

    def input_tables(self) -> dict:
        tables = {self.edges: EDGES}
        if self.users is not None:
            tables[self.users] = USERS
        return tables


def _demo(inputs: DemoInputs) -> dict:
    return {"edges": str(inputs.campaign_dir / "edges"), "users": str(inputs.campaign_dir / "users"),
            "out": str(inputs.out_dir / "assignment.parquet"), "method": "leiden", "max_cluster_size": 1000}


def _covariates(path: Path | None) -> pd.DataFrame | None:
    if path is None:
        return None
    users = read_table(path, USERS)
    numeric = [c for c, t in users.dtypes.items() if c != "user_id" and pd.api.types.is_numeric_dtype(t)]
    return users[["user_id", *numeric]].compute() if numeric else None


@register_stage("assign", AssignConfig, order=60, demo=_demo)
def assign_stage(context: StageContext, config: AssignConfig) -> StageResult:
    """Cluster the interaction graph (Louvain or LinkLouvain), randomize clusters, log pre-launch diagnostics."""
    condition = exposure_condition(config.exposure)
    seed = context.stage_seed("assign")
    salt = config.salt or f"assign-{seed}"
    edges = read_edges(config.edges)
    user_ids = read_user_ids(config.users)
    metrics: dict[str, float] = {}
    graph = cluster_input = load_graph(context, edges, user_ids, config.kinds)
    covariates = _covariates(config.users)
    if config.method == "linklouvain":
        from abtest.linkpred import FeatureLinkPredictor, GNNLinkPredictor, predicted_interaction_graph

        if "kind" not in edges.columns:
            raise InputError(f"edges: linklouvain needs a 'kind' column with past interactions ({config.past_kind!r})")
        predictor = GNNLinkPredictor(random_state=seed) if config.link_model == "gnn" else \
            FeatureLinkPredictor(random_state=seed)
        users = covariates if covariates is not None else pd.DataFrame({"user_id": graph.user_ids})
        prediction = predicted_interaction_graph(edges, users, predictor=predictor, past_kind=config.past_kind,
                                                 threshold=config.link_threshold, random_state=seed)
        cluster_input = prediction.graph
        metrics |= {"link_auc": prediction.auc, "link_candidates": prediction.n_candidates,
                    "link_kept": prediction.n_kept}
    method = "louvain" if config.method == "linklouvain" else config.method
    clusters = abtest.cluster_graph(cluster_input, method=method, resolution=config.resolution,
                                    max_cluster_size=config.max_cluster_size, random_state=seed)
    assignment = abtest.assign(clusters, salt=salt, p=config.p, design=config.design)
    diagnostics = abtest.design_diagnostics(graph, assignment, p=config.p, covariates=covariates,
                                            condition=condition)
    exposure = diagnostics.exposure  # in the graph's user order
    position = pd.Index(exposure["user_id"]).get_indexer(assignment["user_id"])
    assignment["exposure_p1"] = exposure["exposure_p1"].to_numpy()[position]
    assignment["exposure_p0"] = exposure["exposure_p0"].to_numpy()[position]
    write_parquet(assignment, config.out)

    metrics |= {key: float(value) for key, value in diagnostics.summary().items()}
    metrics |= {"modularity": clusters.modularity, "edges": graph.n_edges}
    context.log.params({"salt": salt, "seed": seed})
    context.log.metrics(metrics)
    context.log.figure(abtest.cluster_size_figure(diagnostics), "cluster_sizes")
    context.log.table(diagnostics.balance, "balance", index=False)
    sizes = pd.Series(diagnostics.cluster_sizes).describe(percentiles=[0.5, 0.9, 0.99]).to_frame("users")
    context.log.table(sizes, "cluster_size_summary")
    summary = {"clusters": f"{diagnostics.n_clusters:,}", "cut share": f"{diagnostics.cut_weight_share:.1%}",
               "same-cluster share": f"{diagnostics.same_cluster_share:.1%}",
               "treated": f"{diagnostics.treated_share:.1%}"}
    if "link_auc" in metrics:
        summary["link AUC"] = f"{metrics['link_auc']:.3f}"
    return StageResult(summary=summary, outputs={"assignment": config.out},
                       data={"assignment": assignment, "clusters": clusters, "diagnostics": diagnostics,
                             "graph_user_ids": graph.user_ids,
                             "salt": salt, "p": config.p, "design": config.design,
                             "n_clusters": int(np.unique(clusters.cluster).size)})
