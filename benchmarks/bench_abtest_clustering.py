"""Clustering for graph-clustered A/B tests: `abtest.cluster_graph` (Louvain, Leiden; igraph) vs networkx Louvain.

All run on the same graph, one fresh process per run, side by side:

- **ours, louvain**: `abtest.cluster_graph(graph, method="louvain", random_state=...)` with `backend="auto"`, which
  picks igraph's C Louvain above `abtest.cluster.NETWORKX_MAX_EDGES` (20,000) edges.
- **ours, leiden**: `abtest.cluster_graph(graph, method="leiden", random_state=...)`: igraph's Leiden (modularity
  objective, two iterations), Louvain plus a refinement step that keeps clusters connected.
  For both, the timed call is the whole `cluster_graph`: building the igraph graph from our `InteractionGraph`
  (included; also timed apart after the call, least of 3 calls), the clustering, relabelling clusters by size, and
  the modularity it reports. `import igraph` happens before the timer (a one-time cost, like networkx's import,
  which is also outside its timer).
- **networkx**: `nx.community.louvain_communities(G, weight="weight", seed=...)` on a prebuilt `nx.Graph`
  (`InteractionGraph.to_networkx()`, built before the timer; its build time is reported apart).

So the conversion is *included* for ours and *excluded* for networkx: the ratio favours networkx. Both partitions are
scored by the same function, `abtest.modularity` (resolution 1). Ours runs 1 warm-up + 3 measured runs (median);
networkx once per graph (15-50 s at 10^6 edges here; ECOSYSTEM_NOTES measured about 5 minutes on its planted
graphs, whose structure is not recorded: networkx's time depends strongly on the graph). Every run uses the same
seed.

Graph: a degree-corrected planted partition drawn with numpy (`dcsbm`): n users in communities of about 100
(uniform community labels), degree propensities lognormal(0, 0.5), n * d / 2 distinct edges whose first end is
drawn in proportion to the propensity and whose second end is, with probability 1 - mixing, a member of the first
end's community (in proportion to the propensity) and otherwise any user. Graphs (users, average degree d, mixing):
10^4 / 20 / 0.2 (10^5 edges); 10^5 / 20 / 0.2 (10^6 edges, strong communities, about 22% of edges across);
2 x 10^5 / 10 / 0.5 (10^6 edges, weak communities, about half the edges across: networkx's Louvain needs more
passes here). `--quick`: 2,500 / 20 / 0.2 (25,000 edges, just above the igraph threshold); `--users N ...`: N / 20
/ 0.2 each. Graphs are cached under benchmarks/.data/abtest_clustering/.

    python -m benchmarks.bench_abtest_clustering            # the three graphs (about 3 minutes)
    python -m benchmarks.bench_abtest_clustering --quick    # 25,000 edges, 1 run each (a few seconds)
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from benchmarks._harness import (
    DATA_DIR,
    add_common_arguments,
    apply_common_arguments,
    command_line,
    measure_in_subprocess,
    mib,
    save_results,
    table,
)

AVERAGE_DEGREE = 20
COMMUNITY_SIZE = 100
MIXING = 0.2
DEFAULT_GRAPHS = ((10_000, 20, 0.2), (100_000, 20, 0.2), (200_000, 10, 0.5))  # (users, average degree, mixing)
QUICK_GRAPHS = ((2_500, 20, 0.2),)
METHODS = ("louvain", "leiden")
SPEED_GOAL, MODULARITY_TOLERANCE = 15.0, 0.01
GOAL_EDGES = 1_000_000  # the graph size the speed goal applies to


def dcsbm(n_users: int, average_degree: float = AVERAGE_DEGREE, community_size: int = COMMUNITY_SIZE,
          mixing: float = MIXING, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(src, dst, community): a degree-corrected planted partition with exactly n * average_degree / 2 distinct
    edges src < dst (module docstring)."""
    rng = np.random.default_rng(seed)
    n = int(n_users)
    k = max(1, n // community_size)
    community = rng.integers(0, k, n)
    propensity = rng.lognormal(0.0, 0.5, n)
    members = np.argsort(community, kind="stable")
    starts = np.concatenate([[0], np.cumsum(np.bincount(community, minlength=k))])
    cumulative = np.concatenate([[0.0], np.cumsum(propensity[members])])

    def draw(low: np.ndarray | float, high: np.ndarray | float, size: int) -> np.ndarray:
        """Users drawn in proportion to their propensity among members[starts[c]:starts[c + 1]] (or all)."""
        at = np.searchsorted(cumulative, low + rng.random(size) * (high - low), side="right") - 1
        return members[np.clip(at, 0, n - 1)]

    target = min(int(round(n * average_degree / 2)), n * (n - 1) // 2)
    keys = np.zeros(0, dtype=np.int64)
    while keys.size < target:
        size = int(1.1 * (target - keys.size)) + 100
        src = draw(0.0, cumulative[-1], size)
        home = community[src]
        within = draw(cumulative[starts[home]], cumulative[starts[home + 1]], size)
        dst = np.where(rng.random(size) < mixing, draw(0.0, cumulative[-1], size), within)
        keep = src != dst
        a, b = np.minimum(src, dst)[keep], np.maximum(src, dst)[keep]
        keys = np.unique(np.concatenate([keys, a.astype(np.int64) * n + b]))
    keys = np.sort(rng.choice(keys, size=target, replace=False))
    return keys // n, keys % n, community


def graph_file(n_users: int, average_degree: float, mixing: float, seed: int) -> Path:
    """The cached graph (src, dst, community) of this size, density, mixing and seed; drawn and written if missing."""
    path = DATA_DIR / "abtest_clustering" / (f"dcsbm-n{n_users}-d{average_degree:g}-c{COMMUNITY_SIZE}-mix{mixing:g}"
                                             f"-seed{seed}.npz")
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        src, dst, community = dcsbm(n_users, average_degree, mixing=mixing, seed=seed)
        temporary = path.with_name(f".{path.stem}.tmp.npz")
        np.savez(temporary, src=src, dst=dst, community=community)
        temporary.replace(path)
        print(f"[abtest_clustering] drew {path.name}: {len(src):,} edges ({time.perf_counter() - started:.1f} s)",
              flush=True)
    return path


def _load(path: str):
    import pandas as pd

    from abtest import build_graph

    data = np.load(path)
    n = len(data["community"])
    graph = build_graph(pd.DataFrame({"src": data["src"], "dst": data["dst"]}), np.arange(n))
    return graph, data["community"]


def measure_ours(path: str, seed: int, method: str = "louvain", resolution: float = 1.0) -> dict:
    """Time `cluster_graph(method=...)` (igraph via "auto") on the cached graph; also time the igraph conversion."""
    import igraph  # noqa: F401  (a one-time import, outside the timer)

    from abtest import cluster_graph, modularity
    from abtest.cluster import NETWORKX_MAX_EDGES

    graph, _ = _load(path)
    started = time.perf_counter()
    clustering = cluster_graph(graph, method=method, resolution=resolution, random_state=seed)
    seconds = time.perf_counter() - started
    conversion_s = float("inf")
    for _ in range(3):  # the least of 3: a garbage-collector pass can land in any one of them
        started = time.perf_counter()
        graph.to_igraph()
        conversion_s = min(conversion_s, time.perf_counter() - started)
    return {"seconds": seconds, "conversion_s": conversion_s, "method": method,
            "backend": "networkx" if method == "louvain" and graph.n_edges <= NETWORKX_MAX_EDGES else "igraph",
            "modularity": modularity(graph, clustering.cluster, resolution=resolution),
            "reported_modularity": clustering.modularity, "n_clusters": clustering.n_clusters,
            "largest_cluster": int(clustering.sizes.max()), "n_users": graph.n_users, "n_edges": graph.n_edges}


def measure_networkx(path: str, seed: int, resolution: float = 1.0) -> dict:
    """Time networkx `louvain_communities` on a prebuilt nx.Graph of the cached graph."""
    import networkx as nx

    from abtest import modularity

    graph, _ = _load(path)
    started = time.perf_counter()
    nx_graph = graph.to_networkx()
    build_s = time.perf_counter() - started
    started = time.perf_counter()
    communities = nx.community.louvain_communities(nx_graph, weight="weight", resolution=resolution, seed=seed)
    seconds = time.perf_counter() - started
    labels = np.empty(graph.n_users, dtype=np.int64)
    for index, members in enumerate(communities):
        labels[list(members)] = index
    return {"seconds": seconds, "build_s": build_s, "modularity": modularity(graph, labels, resolution=resolution),
            "n_clusters": len(communities), "largest_cluster": int(np.bincount(labels).max()),
            "n_users": graph.n_users, "n_edges": graph.n_edges}


def planted(path: str) -> dict:
    """Modularity of the planted communities (the partition the graph was drawn from), for reference."""
    from abtest import modularity

    graph, community = _load(path)
    return {"modularity": modularity(graph, community), "n_communities": int(np.unique(community).size),
            "cross_share": float(np.mean(community[graph.src] != community[graph.dst]))}


def run(graphs: Sequence[tuple[int, float, float]], seed: int, repeat: int, warmup: int, networkx_runs: int,
        command: str, quick: bool) -> dict:
    target = "benchmarks.bench_abtest_clustering"
    payload: dict = {"quick": quick, "settings": {"community_size": COMMUNITY_SIZE, "seed": seed, "resolution": 1.0,
                                                  "repeat": repeat, "warmup": warmup,
                                                  "networkx_runs": networkx_runs},
                     "sizes": []}
    for n_users, average_degree, mixing in graphs:
        path = str(graph_file(n_users, average_degree, mixing, seed))
        reference = planted(path)
        theirs = [measure_in_subprocess(f"{target}:measure_networkx", timeout=3600, path=path, seed=seed)
                  for _ in range(networkx_runs)]
        theirs_s = statistics.median(r["seconds"] for r in theirs)
        entry = {"n_users": n_users, "average_degree": average_degree, "mixing": mixing,
                 "n_edges": theirs[0]["n_edges"], "planted": reference, "networkx_s": theirs_s,
                 "networkx_modularity": theirs[0]["modularity"], "networkx": theirs, "methods": {}}
        for method in METHODS:
            runs = [measure_in_subprocess(f"{target}:measure_ours", path=path, seed=seed, method=method)
                    for _ in range(warmup + repeat)]
            ours_s = statistics.median(r["seconds"] for r in runs[warmup:])
            entry["methods"][method] = {
                "seconds": ours_s, "ratio": theirs_s / ours_s, "modularity": runs[-1]["modularity"],
                "modularity_difference": runs[-1]["modularity"] - theirs[0]["modularity"],
                "identical_across_runs": len({round(r["modularity"], 12) for r in runs}) == 1,
                "warmup": runs[:warmup], "runs": runs[warmup:]}
        payload["sizes"].append(entry)
        _print_size(entry)
    _print_summary(payload["sizes"])
    path_out = save_results("abtest_clustering" + ("-quick" if quick else ""), command, payload)
    print(f"saved {path_out}")
    return payload


def _load_cell(runs: Sequence[dict]) -> str:
    return " / ".join(f"{r['other_load_cores']:.2f}" for r in runs)


def _goal_met(result: dict) -> bool:
    return result["ratio"] >= SPEED_GOAL and result["modularity_difference"] >= -MODULARITY_TOLERANCE


def _print_size(entry: dict) -> None:
    theirs = entry["networkx"]
    print(f"\n## {entry['n_users']:,} users, {entry['n_edges']:,} edges, average degree {entry['average_degree']:g}, "
          f"mixing {entry['mixing']:g} (planted: {entry['planted']['n_communities']} communities, modularity "
          f"{entry['planted']['modularity']:.4f}, {entry['planted']['cross_share']:.1%} of edges across)")
    rows = []
    for method, result in entry["methods"].items():
        runs = result["runs"]
        rows.append([f"ours: cluster_graph {method} ({runs[0]['backend']})", len(runs), f"{result['seconds']:.2f}",
                     f"{min(r['seconds'] for r in runs):.2f}",
                     f"{statistics.median(r['conversion_s'] for r in runs):.2f} (included)",
                     f"{result['modularity']:.4f}", runs[0]["n_clusters"], runs[0]["largest_cluster"],
                     mib(max(r["peak_rss_bytes"] for r in runs)), _load_cell(result["warmup"] + runs)])
    rows.append(["networkx louvain_communities", len(theirs), f"{entry['networkx_s']:.2f}",
                 f"{min(r['seconds'] for r in theirs):.2f}", f"{theirs[0]['build_s']:.2f} (excluded)",
                 f"{entry['networkx_modularity']:.4f}", theirs[0]["n_clusters"], theirs[0]["largest_cluster"],
                 mib(max(r["peak_rss_bytes"] for r in theirs)), _load_cell(theirs)])
    print(table(["method", "runs", "wall s (median)", "wall s (min)", "graph conversion s", "modularity",
                 "clusters", "largest", "peak RSS", "other load (cores) per run, warm-up first"], rows))


def _print_summary(entries: Sequence[dict]) -> None:
    rows = []
    for entry in entries:
        at_goal_size = entry["n_edges"] >= GOAL_EDGES
        for method, result in entry["methods"].items():
            met = _goal_met(result)
            rows.append([f"{entry['n_edges']:,} (d {entry['average_degree']:g}, mixing {entry['mixing']:g})", method,
                         f"{result['seconds']:.2f}", f"{entry['networkx_s']:.1f}", f"{result['ratio']:.1f}x",
                         f"{result['modularity']:.4f}", f"{entry['networkx_modularity']:.4f}",
                         f"{result['modularity_difference']:+.4f}",
                         f"{result['runs'][0]['n_clusters']} / {entry['networkx'][0]['n_clusters']}",
                         "yes" if result["identical_across_runs"] else "NO",
                         ("met" if met else "MISSED") if at_goal_size else f"({'met' if met else 'missed'} here)"])
    print("\n## Summary (goal at 10^6 edges: >= 15x faster at modularity no more than 0.01 below networkx's)")
    print(table(["graph: edges", "ours", "ours s", "networkx s", "networkx / ours", "modularity ours",
                 "modularity networkx", "difference", "clusters ours / networkx", "ours identical across runs",
                 "goal"], rows))


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_abtest_clustering",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, nargs="+", default=None,
                        help="users per graph, average degree 20, mixing 0.2 (default: the three graphs of the "
                             "module docstring; --quick 2,500)")
    parser.add_argument("--networkx-runs", type=int, default=1, help="networkx runs per graph (default 1)")
    add_common_arguments(parser, repeat=3)
    args = parser.parse_args(argv)
    warmup = apply_common_arguments(args)
    graphs = [(n, AVERAGE_DEGREE, MIXING) for n in args.users] if args.users else \
        (QUICK_GRAPHS if args.quick else DEFAULT_GRAPHS)
    return run(graphs, args.seed, 1 if args.quick else args.repeat, warmup, args.networkx_runs,
               command_line("benchmarks.bench_abtest_clustering", argv), args.quick)


if __name__ == "__main__":
    main()
