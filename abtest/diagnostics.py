"""Pre-launch diagnostics of a clustered design: are the clusters usable, do they hold the interactions, are the arms
balanced, and how likely is each user to be fully exposed?"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from abtest.estimate import difference_in_means
from abtest.exposure import exposure_probabilities
from abtest.graph import InteractionGraph
from abtest.validation import aligned_assignment, infer_design
from campaign_core import InputError


@dataclass(frozen=True, eq=False)
class DesignDiagnostics:
    """Figures an analyst checks before launch.

    cut_weight_share: share of edge weight between clusters (interactions the design cannot keep in one arm).
    same_cluster_share: mean over users with neighbours of the share of their neighbours in their own cluster (under
        unweighted linear-in-means this is the share of the spillover a cluster design recovers).
    same_cluster_weight_share: the same with edge weights (the share that matters when interaction strength does).
    same_arm_share: the same for the arm actually drawn (expected value: same_cluster + rest (p^2 + (1-p)^2)).
    balance: per covariate, arm means, standardized difference and a randomization-unit-robust p-value.
    users: one row per user of the graph (graph order): `user_id`, `cluster`, `group`, `degree`, the user's own
        `same_cluster_share`, `same_cluster_weight_share` and `same_arm_share` (NaN without neighbours; the figures
        above are their means), and `exposure_p1`, `exposure_p0`, `n_units_touched` under the design and condition
        (NaN probabilities and no `n_units_touched` for a network_test assignment). `to_frame()` returns it.
    """

    n_users: int
    n_clusters: int
    cluster_sizes: np.ndarray
    cut_weight_share: float
    same_cluster_share: float
    same_cluster_weight_share: float
    same_arm_share: float
    treated_share: float
    balance: pd.DataFrame
    users: pd.DataFrame

    @property
    def exposure(self) -> pd.DataFrame:
        """`user_id` and the exposure columns of `users` (`exposure_probabilities`' table)."""
        return self.users[[column for column in self.users.columns
                           if column in ("user_id", "exposure_p1", "exposure_p0", "n_units_touched")]]

    def to_frame(self) -> pd.DataFrame:
        """One row per user (see `users`)."""
        return self.users.copy()

    def summary(self) -> dict[str, float]:
        sizes = self.cluster_sizes
        return {
            "n_users": self.n_users, "n_clusters": self.n_clusters,
            "cluster_size_median": float(np.median(sizes)), "cluster_size_p90": float(np.quantile(sizes, 0.9)),
            "cluster_size_max": int(sizes.max()), "largest_cluster_share": float(sizes.max() / sizes.sum()),
            "cut_weight_share": self.cut_weight_share, "same_cluster_share": self.same_cluster_share,
            "same_cluster_weight_share": self.same_cluster_weight_share,
            "same_arm_share": self.same_arm_share, "treated_share": self.treated_share,
            "mean_exposure_p1": float(self.users["exposure_p1"].mean()),
            "mean_exposure_p0": float(self.users["exposure_p0"].mean()),
            "max_abs_std_diff": float(self.balance["std_diff"].abs().max()) if len(self.balance) else 0.0,
        }


def design_diagnostics(graph: InteractionGraph, assignment: pd.DataFrame, *, p: float = 0.5,
                       covariates: pd.DataFrame | None = None, condition="full",
                       design: str | None = None) -> DesignDiagnostics:
    """Diagnostics of `assignment` (`user_id`, `cluster`, `group`, covering every user of `graph`).

    covariates: optional table with `user_id` and numeric columns to check for balance across arms.
    """
    design = infer_design(assignment, design)
    frame = aligned_assignment(graph, assignment)
    cluster, group = frame["cluster"].to_numpy(), frame["group"].to_numpy()
    weight_total = graph.weight.sum()
    cut = float(graph.weight[cluster[graph.src] != cluster[graph.dst]].sum() / weight_total) if weight_total else 0.0
    indptr, neighbour, weight = graph.adjacency
    row = np.repeat(np.arange(graph.n_users), np.diff(indptr))
    degree = graph.degree
    has = degree > 0
    same_cluster = np.bincount(row, cluster[neighbour] == cluster[row], minlength=graph.n_users)
    same_arm = np.bincount(row, group[neighbour] == group[row], minlength=graph.n_users)
    same_weight = np.bincount(row, weight * (cluster[neighbour] == cluster[row]), minlength=graph.n_users)
    strength = np.bincount(row, weight, minlength=graph.n_users)
    if design == "network_test":
        exposure = pd.DataFrame({"user_id": graph.user_ids, "exposure_p1": np.nan, "exposure_p0": np.nan})
    else:
        exposure = exposure_probabilities(graph, frame, p=p, condition=condition, design=design)
    shares = {name: np.divide(count, total, out=np.full(graph.n_users, np.nan), where=has)
              for name, count, total in (("same_cluster_share", same_cluster, degree),
                                         ("same_cluster_weight_share", same_weight, strength),
                                         ("same_arm_share", same_arm, degree))}
    users = pd.DataFrame({"user_id": graph.user_ids, "cluster": cluster, "group": group, "degree": degree, **shares})
    users = pd.concat([users, exposure.drop(columns="user_id")], axis=1)
    unit = frame["user_id"].to_numpy() if design == "user" else cluster
    return DesignDiagnostics(
        n_users=graph.n_users, n_clusters=int(np.unique(cluster).size),
        cluster_sizes=np.unique(cluster, return_counts=True)[1], cut_weight_share=cut,
        **{name: float(np.mean(share[has])) if has.any() else 1.0 for name, share in shares.items()},
        treated_share=float(group.mean()), balance=_balance(frame, covariates, unit), users=users)


def _balance(frame: pd.DataFrame, covariates: pd.DataFrame | None, unit: np.ndarray) -> pd.DataFrame:
    columns = ["covariate", "mean_treatment", "mean_control", "std_diff", "p_value"]
    if covariates is None:
        return pd.DataFrame(columns=columns)
    if "user_id" not in covariates.columns:
        raise InputError("covariates: missing column 'user_id'")
    position = pd.Index(covariates["user_id"]).get_indexer(frame["user_id"])
    rows = []
    for column in covariates.columns:
        if column == "user_id" or not pd.api.types.is_numeric_dtype(covariates[column]):
            continue
        values = covariates[column].to_numpy(dtype=float, na_value=np.nan)
        x = np.where(position >= 0, values[np.maximum(position, 0)], np.nan)
        keep = np.isfinite(x)
        treated = frame["group"].to_numpy()[keep] == 1
        xs = x[keep]
        if treated.all() or (~treated).all():
            continue
        pooled = np.sqrt((xs[treated].var() + xs[~treated].var()) / 2)
        effect = difference_in_means(xs, treated, unit[keep])
        rows.append((column, xs[treated].mean(), xs[~treated].mean(),
                     (xs[treated].mean() - xs[~treated].mean()) / pooled if pooled > 0 else 0.0, effect.p_value))
    return pd.DataFrame(rows, columns=columns)


def cluster_size_figure(diagnostics: DesignDiagnostics):
    """Histogram of cluster sizes (log-spaced bins) with the cut share in the title."""
    import matplotlib.pyplot as plt

    sizes = diagnostics.cluster_sizes
    figure, axis = plt.subplots(figsize=(6, 3.5))
    bins = np.unique(np.geomspace(1, max(sizes.max(), 2) + 1, 30).astype(int))
    axis.hist(sizes, bins=bins)
    axis.set_xscale("log")
    axis.set_xlabel("users per cluster")
    axis.set_ylabel("clusters")
    axis.set_title(f"{diagnostics.n_clusters} clusters; {diagnostics.cut_weight_share:.1%} of edge weight cut")
    figure.tight_layout()
    return figure
