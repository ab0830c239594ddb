"""LinkLouvain against Louvain on the observed graph, when the true interaction graph is hidden.

World: the platform's synthetic campaign (`pipelines.synthetic`): friendships (observed, kind "friend"), past
invitations (observed, kind "invite") and the current period's interactions (hidden: `truth.interactions`, weighted
by the number of interactions), drawn from one affinity, so the hidden graph is partly predictable from the
friendships, past invitations and user features. Three worlds: `default` (mixing 0.1, communities of 40: friendships
already trace the communities interactions follow), `blurred` (mixing 0.3, communities of 200: friendships are
a weaker guide) and `dormant` (mixing 0.1, communities of 200, plus as many dormant ties as friendships: uniformly
random observed "friendships" that never interact, `CampaignConfig.dormant_ties=1`, the premise of LinkLouvain).

Clusterings (igraph backend, seed 0, resolution 1 and 4):
- `observed`: Louvain on every observed edge (friend + invite weights summed);
- `friends`: Louvain on friendships only;
- `observed leiden`: Leiden (`method="leiden"`) on every observed edge;
- `linklouvain t`: Louvain on `abtest.linkpred.predicted_interaction_graph` (feature predictor, threshold t);
- `predicted 0.1, leiden`: Leiden on the same predicted graph at the default threshold;
- `planted`: the generator's own communities (about n / community_size of them; no resolution). Hidden interactions
  are drawn with a same-community bonus, so this is the floor a clustering of about that many clusters can reach:
  `headroom` = 1 - bias(planted) / bias(observed Louvain, resolution 1) is the most any method can gain over the
  observed-graph Louvain at that granularity.

Scores on the hidden graph: the share of interaction weight cut, and the bias of the difference in means under a
cluster-Bernoulli(0.5) design for the weighted linear-in-means outcome y = 1 + 0.5 z + 1.0 s + N(0, 1) (global
effect 0.5 + share of users with a partner): the expected bias -mean_i[(1 - c_i) 1{i has a partner}] with c_i the
weighted share of i's partners in i's cluster, checked by simulation (R draws of assignment and noise).

    python -m benchmarks.bench_abtest_linklouvain            # 2x10^4 users per world, R = 100
    python -m benchmarks.bench_abtest_linklouvain --quick    # 4x10^3 users, R = 20
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd

from benchmarks._harness import command_line, save_results, table

WORLDS = {"default": {}, "blurred": {"mixing": 0.3, "community_size": 200},
          "dormant": {"community_size": 200, "dormant_ties": 1.0}}
THRESHOLDS = (0.0, 0.1, 0.3, 0.5)
DEFAULT_THRESHOLD = 0.1  # predicted_interaction_graph's
RESOLUTIONS = (1.0, 4.0)
EFFECT, SPILLOVER = 0.5, 1.0


def _clusterings(edges: pd.DataFrame, users: pd.DataFrame, seed: int) -> dict[str, tuple]:
    import abtest
    from abtest.linkpred import predicted_interaction_graph

    observed = abtest.build_graph(edges, users["user_id"])
    graphs = {"observed": (observed, None),
              "friends": (abtest.build_graph(edges, users["user_id"], kinds=["friend"]), None),
              "observed leiden": (observed, None)}
    for threshold in THRESHOLDS:
        started = time.perf_counter()
        prediction = predicted_interaction_graph(edges, users, threshold=threshold, random_state=seed)
        link = {"auc": prediction.auc, "kept": prediction.n_kept, "seconds": time.perf_counter() - started}
        graphs[f"linklouvain {threshold:g}"] = (prediction.graph, link)
        if threshold == DEFAULT_THRESHOLD:
            graphs[f"predicted {threshold:g}, leiden"] = (prediction.graph, link)
    return graphs


def _expected_bias(hidden, labels: np.ndarray) -> float:
    indptr, neighbour, weight = hidden.adjacency
    row = np.repeat(np.arange(hidden.n_users), np.diff(indptr))
    same = np.bincount(row, weight * (labels[neighbour] == labels[row]), minlength=hidden.n_users)
    total = np.bincount(row, weight, minlength=hidden.n_users)
    has = total > 0
    return float(-SPILLOVER * np.mean(np.where(has, 1.0 - same / np.where(has, total, 1.0), 0.0)))


def _simulated_bias(hidden, labels: np.ndarray, repeats: int, seed: int) -> tuple[float, float]:
    import abtest
    from abtest.simulate import LinearInMeans

    model = LinearInMeans(a=1.0, b=EFFECT, g=SPILLOVER, noise=1.0, weighted=True)
    frame = pd.DataFrame({"user_id": hidden.user_ids, "cluster": labels})
    rng = np.random.default_rng(seed)
    estimates = []
    for r in range(repeats):
        group = abtest.assign(frame, salt=f"bench-{r}")["group"].to_numpy()
        y = model.outcomes(hidden, group, random_state=rng)
        estimates.append(y[group == 1].mean() - y[group == 0].mean())
    errors = np.asarray(estimates) - model.global_effect(hidden)
    return float(errors.mean()), float(errors.std(ddof=1) / np.sqrt(repeats))


def run_world(name: str, n_users: int, repeats: int, seed: int = 3) -> list[dict]:
    import abtest
    from pipelines.synthetic import CampaignConfig
    from pipelines.synthetic.generate import simulate_campaign

    warnings.simplefilter("ignore")
    campaign = simulate_campaign(CampaignConfig(n_users=n_users, n_days=1, **WORLDS[name]), random_state=seed)
    users, edges = campaign.users, campaign.edges
    hidden = abtest.build_graph(campaign.truth.interactions, users["user_id"])
    rows = []

    def score(method: str, resolution: float, labels: np.ndarray, link: dict | None) -> dict:
        cut = hidden.weight[labels[hidden.src] != labels[hidden.dst]].sum() / hidden.weight.sum()
        simulated, simulated_se = _simulated_bias(hidden, labels, repeats, seed)
        return {"world": name, "method": method, "resolution": resolution,
                "clusters": int(np.unique(labels).size), "hidden_cut_share": float(cut),
                "expected_bias": _expected_bias(hidden, labels), "simulated_bias": simulated,
                "simulated_bias_se": simulated_se, "link_auc": link["auc"] if link else np.nan,
                "link_seconds": link["seconds"] if link else np.nan}

    for method, (graph, link) in _clusterings(edges, users, seed).items():
        for resolution in RESOLUTIONS:
            clusters = abtest.cluster_graph(graph, method="leiden" if method.endswith("leiden") else "louvain",
                                            resolution=resolution, random_state=0)
            rows.append(score(method, resolution,
                              clusters.cluster[pd.Index(clusters.user_ids).get_indexer(hidden.user_ids)], link))
    truth = campaign.truth.users
    community = truth["community"].to_numpy()[pd.Index(truth["user_id"]).get_indexer(hidden.user_ids)]
    rows.append(score("planted", np.nan, community, None))
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_abtest_linklouvain",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="4x10^3 users, 20 draws")
    parser.add_argument("--users", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args(argv)
    n_users = args.users or (4000 if args.quick else 20000)
    repeats = args.repeats or (20 if args.quick else 100)
    rows = [row for world in WORLDS for row in run_world(world, n_users, repeats)]
    frame = pd.DataFrame(rows)
    for world, part in frame.groupby("world", sort=False):
        observed = part[part["method"] == "observed"].set_index("resolution")["expected_bias"]
        reference = part["resolution"].map(observed).fillna(observed[1.0])  # planted: against resolution 1
        part = part.assign(bias_vs_observed=part["expected_bias"] / reference)
        print(f"\n{world} world, {n_users:,} users, {repeats} draws per clustering")
        shown = part.drop(columns="world")
        print(table(list(shown.columns), [[f"{v:.4f}" if isinstance(v, float) else v for v in row]
                                          for row in shown.itertuples(index=False)]))
        at_one = part[part["resolution"] == 1.0].set_index("method")["expected_bias"]
        floor = part.loc[part["method"] == "planted", "expected_bias"].iloc[0]
        gains = ", ".join(f"{method} {1 - at_one[method] / at_one['observed']:.1%}" for method in at_one.index
                          if method != "observed")
        print(f"headroom (planted floor vs observed Louvain, resolution 1): {1 - floor / at_one['observed']:.1%}; "
              f"less bias than observed Louvain at resolution 1: {gains} (goal: LinkLouvain >= 30%)")
    save_results("abtest_linklouvain", command_line("benchmarks.bench_abtest_linklouvain", argv),
                 {"n_users": n_users, "repeats": repeats, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
