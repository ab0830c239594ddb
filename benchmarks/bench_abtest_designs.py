"""Designs for graph-clustered A/B tests under interference: bias, variance and coverage by simulation.

For each graph x outcome model x design x estimator, R replications (default 300) of the whole experiment: a new
assignment salt and a new noise generator per replication, the clustering fixed (Louvain, resolution 1, the graph's
seed; networkx backend at these sizes). Reported per cell: mean estimate, bias = mean - global effect (with its
Monte Carlo standard error SD / sqrt(R)), SD, RMSE, mean reported SE / SD, coverage of the 95% interval of the global
effect, and for exposure estimators the mean number of users exposed per arm.

Graphs (default about 2,000 users each; `--quick` 600; `--graphs` names them by the keys in brackets):
- [planted-0.1, planted-0.3] planted partition, mixing 0.1 and 0.3: `abtest.simulate.planted_partition(n / 100,
  100, p_in=0.1, p_out)` with p_out set so that the expected share of a user's edges leaving the community is the
  mixing;
- [watts-strogatz] Watts-Strogatz: `abtest.simulate.watts_strogatz(n, 10, 0.1)` (a rewired ring lattice: no planted
  communities);
- [lfr] LFR, mu 0.1: networkx `LFR_benchmark_graph(n, tau1=3, tau2=1.5, mu=0.1, average_degree=10, max_degree=50,
  min_community=20, max_community=100)` minus self-loops, through `graph_from_networkx`: what `abtest.simulate.lfr`
  builds, called directly because the planted communities (node attribute "community") are needed here too.
Outcomes (`abtest.simulate`): `LinearInMeans(a=1, b=0.5, g=1, noise=1)` and `ThresholdOutcome(a=1, b=0.5, g=1,
theta=0.5, noise=1)`; global effect b + g = 1.5 for users with neighbours.
Designs (`abtest.assign`, p = 0.5): user-level Bernoulli (`design="user"`), cluster Bernoulli, cluster paired.
Estimators, as `abtest.readout` runs them (randomization unit: the user for the user design, the cluster otherwise):
`difference_in_means` for every design; `exposure_estimate` Hajek and Horvitz-Thompson with exposure condition
("fractional", 0.75) for every design, and "full" only where full-neighbourhood exposure is not rare: for the
cluster designs of a graph whose median user has min(P(exposed to treatment), P(exposed to control)) >= 0.05 under
cluster Bernoulli (under the user design the median is below 0.001 on every graph here, so "full" is never run for
it). Exposure probabilities come from `exposure_probabilities` (once per graph for the user and Bernoulli designs,
per replication for the paired design, whose pairs depend on the salt).

Bias removed: per graph and outcome, 1 - |bias(cluster design)| / |bias(user design)| for the difference in means,
against the goal "a cluster design removes at least 85% of the user-level bias on graphs with community structure"
(planted partition and LFR), and against the prediction under linear-in-means (docs/abtest.md, 'The global effect
and the bias a design removes'): the removed share equals
`same_cluster_share` (the mean share of a user's neighbours in their own cluster, from `design_diagnostics`).

    python -m benchmarks.bench_abtest_designs            # 4 graphs x 2,000 users, 300 replications (a few minutes)
    python -m benchmarks.bench_abtest_designs --quick    # 600 users, 30 replications
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Sequence

import numpy as np

from benchmarks._harness import (
    add_common_arguments,
    apply_common_arguments,
    command_line,
    measure_in_subprocess,
    save_results,
    table,
)

GRAPHS = {"planted-0.1": "planted partition, mixing 0.1", "planted-0.3": "planted partition, mixing 0.3",
          "watts-strogatz": "Watts-Strogatz", "lfr": "LFR, mu 0.1"}
COMMUNITY_GRAPHS = ("planted-0.1", "planted-0.3", "lfr")  # graphs with (planted) community structure
DESIGNS = {"user Bernoulli": "user", "cluster Bernoulli": "bernoulli", "cluster paired": "paired"}
OUTCOMES = ("linear-in-means", "threshold")
FRACTIONAL = ("fractional", 0.75)
FULL_MIN_MEDIAN_P = 0.05  # "full" exposure is run where the median user's exposure probability reaches this
COMMUNITY_SIZE, P_IN = 100, 0.1
REMOVED_GOAL = 0.85
DEFAULT_USERS, QUICK_USERS = 2_000, 600
DEFAULT_REPLICATIONS, QUICK_REPLICATIONS = 300, 30


def build(name: str, n_users: int, seed: int):
    """(graph, planted community of each user or None) of the named graph."""
    import networkx as nx

    from abtest import graph_from_networkx
    from abtest.simulate import planted_partition, watts_strogatz

    if name.startswith("planted-"):
        mixing = float(name.split("-", 1)[1])
        k = max(2, n_users // COMMUNITY_SIZE)
        p_out = mixing / (1 - mixing) * P_IN * (COMMUNITY_SIZE - 1) / (COMMUNITY_SIZE * (k - 1))
        graph = planted_partition(k, COMMUNITY_SIZE, P_IN, p_out, random_state=seed)
        return graph, np.asarray(graph.user_ids) // COMMUNITY_SIZE
    if name == "watts-strogatz":
        return watts_strogatz(n_users, 10, 0.1, random_state=seed), None
    if name == "lfr":
        lfr = nx.LFR_benchmark_graph(n_users, tau1=3, tau2=1.5, mu=0.1, average_degree=10, max_degree=50,
                                     min_community=20, max_community=100, seed=seed)
        lfr.remove_edges_from(nx.selfloop_edges(lfr))
        community = {v: min(lfr.nodes[v]["community"]) for v in lfr}
        graph = graph_from_networkx(lfr)
        return graph, np.array([community[v] for v in graph.user_ids])
    raise ValueError(f"graph: unknown {name!r}")


def _summary(estimates: np.ndarray, ses: np.ndarray, covered: np.ndarray, target: float) -> dict:
    ok = np.isfinite(estimates)
    est, se = estimates[ok], ses[ok]
    n = int(ok.sum())
    sd = float(est.std(ddof=1)) if n > 1 else float("nan")
    finite_se = np.isfinite(se)
    return {"replications_ok": n, "failed": int((~ok).sum()), "mean": float(est.mean()) if n else float("nan"),
            "bias": float(est.mean() - target) if n else float("nan"),
            "bias_mc_se": sd / math.sqrt(n) if n > 1 else float("nan"), "sd": sd,
            "rmse": float(np.sqrt(np.mean((est - target) ** 2))) if n else float("nan"),
            "mean_se": float(se[finite_se].mean()) if finite_se.any() else float("nan"),
            "se_over_sd": float(se[finite_se].mean() / sd) if finite_se.any() and sd > 0 else float("nan"),
            "coverage": float(covered[ok].mean()) if n else float("nan")}


def measure_graph(graph: str, n_users: int, replications: int, seed: int, resolution: float = 1.0) -> dict:
    """Every design x outcome x estimator on one graph, `replications` times."""
    from abtest import (
        assign,
        cluster_graph,
        design_diagnostics,
        difference_in_means,
        exposure_estimate,
        exposure_probabilities,
        exposure_units,
        realized_exposure,
    )
    from abtest.simulate import LinearInMeans, ThresholdOutcome

    started = time.perf_counter()
    g, community = build(graph, n_users, seed)
    build_s = time.perf_counter() - started
    clustering = cluster_graph(g, method="louvain", resolution=resolution, random_state=seed)
    diagnostics = design_diagnostics(g, assign(clustering, salt="diagnostics"), p=0.5).summary()
    models = {"linear-in-means": LinearInMeans(a=1.0, b=0.5, g=1.0, noise=1.0),
              "threshold": ThresholdOutcome(a=1.0, b=0.5, g=1.0, theta=0.5, noise=1.0)}
    global_effect = {name: model.global_effect(g) for name, model in models.items()}

    full = exposure_probabilities(g, clustering, p=0.5, condition="full", design="bernoulli")
    full_median = float(np.median(np.minimum(full["exposure_p1"], full["exposure_p0"])))
    user_full = exposure_probabilities(g, clustering, p=0.5, condition="full", design="user")
    user_full_median = float(np.median(np.minimum(user_full["exposure_p1"], user_full["exposure_p0"])))
    conditions = {design: [FRACTIONAL] + (["full"] if design != "user" and full_median >= FULL_MIN_MEDIAN_P else [])
                  for design in DESIGNS.values()}

    records: dict[tuple, list] = {}
    exposed: dict[tuple, list] = {}
    simulation_started = time.perf_counter()
    for d_index, (label, design) in enumerate(DESIGNS.items()):
        fixed, fixed_coins = {}, None  # the paired design's pairs (so its exposures) change with the salt
        if design != "paired":
            fixed = {_condition_name(c): exposure_probabilities(g, clustering, p=0.5, condition=c, design=design)
                     for c in conditions[design]}
            fixed_coins = exposure_units(g, clustering, design=design)
        for r in range(replications):
            frame = assign(clustering, salt=f"replication-{seed}-{r}", p=0.5, design=design)
            treated = frame["group"].to_numpy()
            unit = frame["user_id"].to_numpy() if design == "user" else frame["cluster"].to_numpy()
            probabilities = fixed or {_condition_name(c): exposure_probabilities(g, frame, p=0.5, condition=c,
                                                                                 design=design)
                                      for c in conditions[design]}
            realized = {_condition_name(c): realized_exposure(g, treated, condition=c) for c in conditions[design]}
            coins = fixed_coins if fixed_coins is not None else exposure_units(g, frame, design=design)
            for o_index, (outcome, model) in enumerate(models.items()):
                y = model.outcomes(g, treated, random_state=[seed, d_index, o_index, r])
                effects = [("difference_in_means", "-", difference_in_means(y, treated == 1, unit))]
                for condition, (e1, e0) in realized.items():
                    p1 = probabilities[condition]["exposure_p1"].to_numpy()
                    p0 = probabilities[condition]["exposure_p0"].to_numpy()
                    for kind in ("hajek", "horvitz_thompson"):
                        effects.append((kind, condition, exposure_estimate(y, e1, e0, p1, p0, unit, kind=kind,
                                                                           exposure_units=coins)))
                for estimator, condition, effect in effects:
                    key = (outcome, label, estimator, condition)
                    covered = effect.ci_low <= global_effect[outcome] <= effect.ci_high
                    records.setdefault(key, []).append((effect.estimate, effect.se, covered))
                    exposed.setdefault(key, []).append((effect.n_treatment, effect.n_control))
    simulation_s = time.perf_counter() - simulation_started

    rows = []
    for (outcome, label, estimator, condition), values in records.items():
        array = np.array(values, dtype=float)
        counts = np.array(exposed[(outcome, label, estimator, condition)], dtype=float)
        rows.append({"outcome": outcome, "design": label, "estimator": estimator, "condition": condition,
                     "global_effect": global_effect[outcome],
                     **_summary(array[:, 0], array[:, 1], array[:, 2].astype(bool), global_effect[outcome]),
                     "mean_n_treatment": float(counts[:, 0].mean()), "mean_n_control": float(counts[:, 1].mean())})
    info = {"graph": graph, "label": GRAPHS[graph], "n_users": g.n_users, "n_edges": g.n_edges,
            "mean_degree": float(g.degree.mean()), "isolated": int((g.degree == 0).sum()),
            "n_clusters": clustering.n_clusters, "modularity": clustering.modularity, "resolution": resolution,
            "diagnostics": diagnostics,
            "full_median_exposure_p": full_median, "user_full_median_exposure_p": user_full_median,
            "conditions": {d: [_condition_name(c) for c in cs] for d, cs in conditions.items()},
            "build_s": build_s, "simulation_s": simulation_s}
    if community is not None:
        info["planted_communities"] = int(np.unique(community).size)
        info["planted_cross_share"] = float(np.mean(community[g.src] != community[g.dst]))
    return {"info": info, "rows": rows}


def _condition_name(condition) -> str:
    return condition if isinstance(condition, str) else f"{condition[0]} {condition[1]}"


def removed_shares(result: dict) -> list[dict]:
    """Per outcome and cluster design: the share of the user design's difference-in-means bias removed."""
    rows = {(r["outcome"], r["design"]): r for r in result["rows"] if r["estimator"] == "difference_in_means"}
    out = []
    for outcome in OUTCOMES:
        user = rows[(outcome, "user Bernoulli")]
        for design in ("cluster Bernoulli", "cluster paired"):
            cluster = rows[(outcome, design)]
            removed = 1 - abs(cluster["bias"]) / abs(user["bias"])
            mc = math.hypot(cluster["bias_mc_se"] / abs(user["bias"]),
                            abs(cluster["bias"]) * user["bias_mc_se"] / user["bias"] ** 2)
            out.append({"outcome": outcome, "design": design, "user_bias": user["bias"],
                        "cluster_bias": cluster["bias"], "removed": removed, "removed_mc_se": mc})
    return out


def run(graphs: Sequence[str], n_users: int, replications: int, seed: int, command: str, quick: bool,
        resolution: float = 1.0) -> dict:
    target = "benchmarks.bench_abtest_designs"
    payload: dict = {"quick": quick, "settings": {"n_users": n_users, "replications": replications, "seed": seed,
                                                  "resolution": resolution, "full_min_median_p": FULL_MIN_MEDIAN_P},
                     "graphs": {}}
    started = time.perf_counter()
    for graph in graphs:
        result = measure_in_subprocess(f"{target}:measure_graph", graph=graph, n_users=n_users,
                                       replications=replications, seed=seed, resolution=resolution)
        result["removed"] = removed_shares(result)
        payload["graphs"][graph] = result
        _print_graph(result)
    payload["total_s"] = time.perf_counter() - started
    _print_removed(payload["graphs"])
    name = "abtest_designs" + ("" if resolution == 1.0 else f"-resolution{resolution:g}") + ("-quick" if quick else "")
    path = save_results(name, command, payload)
    print(f"saved {path} (total {payload['total_s']:.0f} s)")
    return payload


def _fmt(value: float, digits: int = 3) -> str:
    return "nan" if not np.isfinite(value) else f"{value:.{digits}f}"


def _print_graph(result: dict) -> None:
    info, diagnostics = result["info"], result["info"]["diagnostics"]
    planted = (f", planted: {info['planted_communities']} communities, {info['planted_cross_share']:.1%} of edges "
               "across" if "planted_communities" in info else ", no planted communities")
    print(f"\n## {info['label']}: {info['n_users']:,} users, {info['n_edges']:,} edges (mean degree "
          f"{info['mean_degree']:.1f}, {info['isolated']} isolated){planted}")
    print(f"Louvain (resolution {info['resolution']:g}): {info['n_clusters']} clusters (median size "
          f"{diagnostics['cluster_size_median']:.0f}, largest {diagnostics['cluster_size_max']}), modularity "
          f"{info['modularity']:.3f}; cut edge share {diagnostics['cut_weight_share']:.3f}, same_cluster_share "
          f"{diagnostics['same_cluster_share']:.3f}; median min(P1, P0) full exposure: cluster Bernoulli "
          f"{info['full_median_exposure_p']:.4f}, user {info['user_full_median_exposure_p']:.2e}; wall "
          f"{result['process_wall_s']:.0f} s (simulation {info['simulation_s']:.0f} s), other load "
          f"{result['other_load_cores']:.2f} cores")
    rows = []
    for r in result["rows"]:
        exposed = ("" if r["estimator"] == "difference_in_means"
                   else f"{r['mean_n_treatment']:.0f} / {r['mean_n_control']:.0f}")
        rows.append([r["outcome"], r["design"], r["estimator"], r["condition"], _fmt(r["mean"]),
                     f"{_fmt(r['bias'])} ± {_fmt(r['bias_mc_se'])}", _fmt(r["sd"]), _fmt(r["rmse"]),
                     _fmt(r["se_over_sd"], 2), _fmt(r["coverage"], 2), exposed,
                     r["failed"] or ""])
    print(table(["outcome", "design", "estimator", "exposure", "mean", "bias ± MC SE", "SD", "RMSE", "mean SE / SD",
                 "95% coverage", "exposed T / C (mean)", "failed"], rows))


def _print_removed(graphs: dict) -> None:
    rows = []
    for name, result in graphs.items():
        same = result["info"]["diagnostics"]["same_cluster_share"]
        for r in result["removed"]:
            applies = name in COMMUNITY_GRAPHS
            verdict = "met" if r["removed"] >= REMOVED_GOAL else "MISSED"
            rows.append([GRAPHS[name], result["info"]["n_clusters"], r["outcome"], r["design"], _fmt(r["user_bias"]),
                         _fmt(r["cluster_bias"]), f"{r['removed']:.1%} ± {r['removed_mc_se']:.1%}",
                         f"{same:.1%}" if r["outcome"] == "linear-in-means" else f"({same:.1%})",
                         verdict if applies else f"({verdict.lower()}; no planted communities)"])
    print("\n## Share of the user-level bias removed by cluster designs (difference in means)")
    print("Prediction (linear-in-means only): removed share = same_cluster_share. Goal: >= 85% on graphs with "
          "community structure.")
    print(table(["graph", "clusters", "outcome", "design", "user-design bias", "cluster-design bias",
                 "bias removed ± MC SE", "predicted (same_cluster_share)", "goal >= 85%"], rows))


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_abtest_designs",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=None,
                        help=f"users per graph (default {DEFAULT_USERS:,}; --quick {QUICK_USERS})")
    parser.add_argument("--replications", type=int, default=None,
                        help=f"replications per design (default {DEFAULT_REPLICATIONS}; --quick {QUICK_REPLICATIONS})")
    parser.add_argument("--graphs", nargs="+", choices=list(GRAPHS), default=list(GRAPHS),
                        help="which graphs (default all)")
    parser.add_argument("--resolution", type=float, default=1.0,
                        help="Louvain resolution (default 1; lower: fewer, larger clusters, less bias, more variance)")
    add_common_arguments(parser, repeat=1)
    args = parser.parse_args(argv)
    apply_common_arguments(args)
    return run(args.graphs, args.users or (QUICK_USERS if args.quick else DEFAULT_USERS),
               args.replications or (QUICK_REPLICATIONS if args.quick else DEFAULT_REPLICATIONS), args.seed,
               command_line("benchmarks.bench_abtest_designs", argv), args.quick, args.resolution)


if __name__ == "__main__":
    main()
