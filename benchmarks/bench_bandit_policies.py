"""Linear bandit policies (`bandits.LinUCB`, `bandits.LinTS`) against MABWiser and Vowpal Wabbit: fit + scoring.

The nightly batch job (docs/bandits.md): fit on the logs so far, then score every user (an arm and the probability it
was picked). Known-truth environment: `SyntheticBandit(n_features=20, n_arms=10, reward="linear", seed=seed)`
(mu_k(x) = sigmoid(b_k + x' theta_k), Bernoulli rewards). The logs are 10^6 training rows from a *uniform* logger
(propensity 1/10, so every learner sees unbiased data); scoring is on 10^6 fresh contexts. The same rows in every
process (built from the seed; a digest of the data is checked across processes).

Measured, each run in a fresh subprocess (`benchmarks._harness.measure_in_subprocess`), after one untimed fit +
score on 1,000 rows in the same process (imports and first-call costs are not timed):

- ours: `LinUCB(alpha).fit(feedback)` / `LinTS(alpha).fit(feedback)` (a `LoggedFeedback`), then
  `policy.sample(X_test, random_state)` -> (arm labels, propensities) for every scoring row;
- MABWiser 2.7: `MAB(arms, LearningPolicy.LinUCB(alpha=...) / LinTS(alpha=...), seed=...)`,
  `fit(decisions, rewards, contexts)`, `predict(contexts)` (arms only: MABWiser has no propensities and no
  intercept; a variant with a constant-1 column appended to the contexts is run once for reference);
- Vowpal Wabbit 9 through its Python API: `Workspace("--cb_explore_adf --epsilon 0.05 -q sa --quiet
  --random_seed S")`, each logged row learned once as a multiline ADF example (`shared |s x0:.. x19:..`, one
  `|a arm_k` line per arm, the logged arm's line labelled `0:cost:probability` with cost = -reward), then
  `predict` on the scoring rows (a pmf per row) and an arm drawn from each pmf. VW runs at about 10^4 rows/s, so
  it learns `--vw-train-rows` (default: all 10^6 logged rows, about a minute) and scores only the first
  `--vw-score-rows` (default 50,000) scoring rows; its throughput at 10^6 rows is *extrapolated* linearly from the
  measured per-row times of the two phases (stated as such in every table). The time includes building the
  example strings from the numpy arrays (that share is measured apart and reported).

Throughput = rows / (fit seconds + scoring seconds) for n rows learned and n rows scored (for VW: 1 / (learn
seconds per row + score seconds per row)). Value = the TRUE mean expected reward mu_a(x) of the arms each
library picked (known from the environment; not an estimate), on all scored rows and on the first
`--vw-score-rows` rows that every library scored (paired comparison: difference and its standard error). Where a
library returns probabilities (ours, VW) the exact policy value mean_i sum_k pi(k|x_i) mu_k(x_i) is reported too.

Performance goals: throughput at least 50x VW's and 10x MABWiser's (same algorithm), at equal or better
value ("equal": not below the peer by more than 2 standard errors of the paired difference).

    python -m benchmarks.bench_bandit_policies            # 10^6 rows (about 4 minutes on a quiet machine)
    python -m benchmarks.bench_bandit_policies --quick    # 10^5 rows, VW on 10,000 (about 30 s)
    python -m benchmarks.bench_bandit_policies --profile  # cProfile of our LinUCB / LinTS fit + score at 10^6
"""

from __future__ import annotations

import argparse
import hashlib
import time
from collections.abc import Sequence

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

N_FEATURES, N_ARMS = 20, 10
DEFAULT_ROWS, QUICK_ROWS = 1_000_000, 100_000
DEFAULT_VW_TRAIN, DEFAULT_VW_SCORE = 1_000_000, 50_000
QUICK_VW_TRAIN, QUICK_VW_SCORE = 10_000, 10_000
WARMUP_ROWS = 1_000
ALPHA_UCB, ALPHA_TS = 1.0, 1.0
VW_EPSILON = 0.05
VW_CHUNK = 10_000  # rows whose example strings are built at once
GOAL_VS_VW, GOAL_VS_MABWISER = 50.0, 10.0
OURS = ("LinUCB", "LinTS")
ARRAYS_DIR = DATA_DIR / "bandit_policies"


# ---------------------------------------------------------------------------------------------- data
def environment(seed: int):
    from bandits.datasets import SyntheticBandit

    return SyntheticBandit(n_features=N_FEATURES, n_arms=N_ARMS, reward="linear", seed=seed)


def make_data(n_train: int, n_score: int, seed: int):
    """(env, training feedback from a uniform logger, scoring contexts, their (n, K) true means), the same in any
    process."""
    env = environment(seed)
    uniform = lambda X: np.full((len(X), N_ARMS), 1.0 / N_ARMS)  # noqa: E731
    feedback, _ = env.logged_feedback(n_train, random_state=1000 * seed + 1, logger=uniform)
    X_score = env.contexts(n_score, 1000 * seed + 2)
    return env, feedback, X_score, env.expected_rewards(X_score)


def data_digest(feedback, X_score: np.ndarray) -> str:
    digest = hashlib.sha256()
    for array in (feedback.contexts, feedback.arms, feedback.rewards, X_score):
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


def _rss_now() -> int:
    from benchmarks._harness import _rss_now as rss

    return rss()


def _reset_peak() -> bool:
    """Reset this process's peak RSS (VmHWM) so the next `_peak_since_reset` covers only the timed calls (Linux)."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _peak_since_reset() -> int:
    try:
        with open("/proc/self/status") as status:
            line = next(line for line in status if line.startswith("VmHWM:"))
        return int(line.split()[1]) * 1024
    except (OSError, StopIteration, ValueError):
        return 0


def _values(mu: np.ndarray, codes: np.ndarray, n_common: int, arms_path: str | None) -> dict:
    """True value of the chosen arms (all rows, the common rows); the chosen arms saved for the paired comparison."""
    chosen = mu[np.arange(len(codes)), codes]
    if arms_path:
        np.save(arms_path, codes[:n_common].astype(np.int8))
    return {"value": float(chosen.mean()), "value_se": float(chosen.std() / np.sqrt(len(chosen))),
            "value_common": float(chosen[:n_common].mean()),
            "arm_shares": np.bincount(codes, minlength=N_ARMS).tolist()}


def _timed(fn):
    started, cpu_started = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - started, time.process_time() - cpu_started


# ---------------------------------------------------------------------------------------------- measurements
def make_ours(name: str, alpha: float, seed: int):
    from bandits import LinTS, LinUCB

    return LinUCB(alpha=alpha) if name == "LinUCB" else LinTS(alpha=alpha, random_state=seed)


def measure_ours(policy: str, n_train: int, n_score: int, seed: int, alpha: float, n_common: int,
                 arms_path: str | None = None) -> dict:
    """Ours (subprocess side): `fit(feedback)` then `sample(X_score)` -> (arms, propensities)."""
    import pandas as pd

    env, feedback, X_score, mu = make_data(n_train, n_score, seed)
    make_ours(policy, alpha, seed).fit(feedback.subset(slice(0, WARMUP_ROWS))).sample(X_score[:WARMUP_ROWS], 0)
    model = make_ours(policy, alpha, seed)
    rss_before = _rss_now()
    reset = _reset_peak()
    _, fit_s, fit_cpu = _timed(lambda: model.fit(feedback))
    (labels, propensities), score_s, score_cpu = _timed(lambda: model.sample(X_score, random_state=seed + 7))
    peak_calls = _peak_since_reset() if reset else 0
    codes = pd.Index(model.arms_).get_indexer(labels)
    # Exact policy value and a check that the logged propensities are the policy's probabilities (common rows).
    probabilities = model.action_probabilities(X_score[:n_common])
    rows = np.arange(n_common)
    return {"tool": "ours", "policy": policy, "alpha": alpha, "n_train": n_train, "n_score": n_score,
            "fit_s": fit_s, "score_s": score_s, "cpu_s": fit_cpu + score_cpu, "wall_s": fit_s + score_s,
            "rss_before_bytes": rss_before, "peak_calls_bytes": peak_calls,
            "propensities": True, "propensity_mean": float(propensities.mean()),
            "propensities_match": bool(np.allclose(probabilities[rows, codes[:n_common]], propensities[:n_common])),
            "policy_value_common": float((probabilities * mu[:n_common]).sum(axis=1).mean()),
            "data_digest": data_digest(feedback, X_score), **_values(mu, codes, n_common, arms_path)}


def measure_mabwiser(policy: str, n_train: int, n_score: int, seed: int, alpha: float, n_common: int,
                     intercept: bool = False, arms_path: str | None = None) -> dict:
    """MABWiser (subprocess side): `MAB(...).fit(decisions, rewards, contexts)`, then `predict(contexts)`."""
    from mabwiser.mab import MAB, LearningPolicy

    env, feedback, X_score, mu = make_data(n_train, n_score, seed)
    contexts, scoring = feedback.contexts, X_score
    if intercept:  # MABWiser's ridge has no intercept: append a constant-1 column
        contexts = np.hstack([contexts, np.ones((len(contexts), 1))])
        scoring = np.hstack([scoring, np.ones((len(scoring), 1))])
    learning = (LearningPolicy.LinUCB(alpha=alpha) if policy == "LinUCB" else LearningPolicy.LinTS(alpha=alpha))
    arms = list(range(N_ARMS))

    def mab():
        return MAB(arms, learning, seed=seed)

    warm = mab()  # MABWiser's fit returns None
    warm.fit(feedback.arms[:WARMUP_ROWS], feedback.rewards[:WARMUP_ROWS], contexts[:WARMUP_ROWS])
    warm.predict(scoring[:WARMUP_ROWS])
    model = mab()
    rss_before = _rss_now()
    reset = _reset_peak()
    _, fit_s, fit_cpu = _timed(lambda: model.fit(feedback.arms, feedback.rewards, contexts))
    predicted, score_s, score_cpu = _timed(lambda: model.predict(scoring))
    peak_calls = _peak_since_reset() if reset else 0
    codes = np.asarray(predicted, dtype=np.int64)
    return {"tool": "mabwiser", "policy": policy, "alpha": alpha, "intercept": intercept, "n_train": n_train,
            "n_score": n_score, "fit_s": fit_s, "score_s": score_s, "cpu_s": fit_cpu + score_cpu,
            "wall_s": fit_s + score_s, "rss_before_bytes": rss_before, "peak_calls_bytes": peak_calls,
            "propensities": False, "data_digest": data_digest(feedback, X_score),
            **_values(mu, codes, n_common, arms_path)}


def _vw_shared_lines(X: np.ndarray) -> list[str]:
    """`shared |s x0:v0 x1:v1 ...` for every row (the per-row string building VW's text API needs)."""
    names = [f"x{j}:" for j in range(X.shape[1])]
    return ["shared |s " + " ".join(name + repr(value) for name, value in zip(names, row, strict=True))
            for row in X.tolist()]


def vw_arguments(seed: int, epsilon: float) -> str:
    return f"--cb_explore_adf --epsilon {epsilon} -q sa --quiet --random_seed {seed}"


def measure_vw(n_train: int, n_score: int, seed: int, epsilon: float, n_rows: int, n_common: int,
               arms_path: str | None = None) -> dict:
    """VW (subprocess side): learn `n_train` logged rows once each, then predict a pmf for `n_score` rows and draw.

    The data is built at the full size `n_rows` (the same rows as the other libraries) and VW takes its first rows.
    """
    import vowpalwabbit

    env, feedback, X_score, mu = make_data(n_rows, n_rows, seed)
    digest = data_digest(feedback, X_score)
    X_train, arms, rewards, propensities = (feedback.contexts[:n_train], feedback.arms[:n_train],
                                            feedback.rewards[:n_train], feedback.propensities[:n_train])
    X_score, mu = X_score[:n_score], mu[:n_score]
    actions = [f"|a arm_{k}" for k in range(N_ARMS)]

    def learn(workspace, rows: range) -> None:
        for start in range(rows.start, rows.stop, VW_CHUNK):  # strings built per chunk: memory stays flat
            stop = min(start + VW_CHUNK, rows.stop)
            labels = zip(arms[start:stop].tolist(), (-rewards[start:stop]).tolist(),
                         propensities[start:stop].tolist(), strict=True)
            for line, (k, cost, probability) in zip(_vw_shared_lines(X_train[start:stop]), labels, strict=True):
                example = [line, *actions]
                example[1 + k] = f"0:{cost!r}:{probability!r} {actions[k]}"
                workspace.learn(example)

    def score(workspace, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        pmf = np.array([workspace.predict([line, *actions]) for start in range(0, len(X), VW_CHUNK)
                        for line in _vw_shared_lines(X[start:start + VW_CHUNK])], dtype=np.float64)
        pmf /= pmf.sum(axis=1, keepdims=True)
        rng = np.random.default_rng(seed + 7)
        cumulative = np.cumsum(pmf, axis=1)
        codes = np.minimum((rng.random(len(pmf))[:, None] >= cumulative).sum(axis=1), N_ARMS - 1)
        return codes, pmf[np.arange(len(codes)), codes], pmf

    warm = vowpalwabbit.Workspace(vw_arguments(seed, epsilon))
    learn(warm, range(min(WARMUP_ROWS, n_train)))
    score(warm, X_score[:WARMUP_ROWS])
    warm.finish()
    workspace = vowpalwabbit.Workspace(vw_arguments(seed, epsilon))
    rss_before = _rss_now()
    reset = _reset_peak()
    _, fit_s, fit_cpu = _timed(lambda: learn(workspace, range(n_train)))
    (codes, chosen_p, pmf), score_s, score_cpu = _timed(lambda: score(workspace, X_score))
    peak_calls = _peak_since_reset() if reset else 0
    workspace.finish()
    # The share of the time that is building strings: format the same rows again, untimed above.
    sample = min(n_train, 20_000)
    _, format_s, _ = _timed(lambda: _vw_shared_lines(X_train[:sample]))
    values = _values(mu, codes, min(n_common, n_score), arms_path)
    return {"tool": "vw", "policy": "cb_explore_adf", "arguments": vw_arguments(seed, epsilon), "epsilon": epsilon,
            "n_train": n_train, "n_score": n_score, "n_rows": n_rows, "fit_s": fit_s, "score_s": score_s,
            "cpu_s": fit_cpu + score_cpu, "wall_s": fit_s + score_s, "rss_before_bytes": rss_before,
            "peak_calls_bytes": peak_calls, "format_s_per_row": format_s / sample,
            "propensities": True, "propensity_mean": float(chosen_p.mean()),
            "policy_value_common": float((pmf[:n_common] * mu[:n_common]).sum(axis=1).mean()),
            "greedy_value_common": float(mu[np.arange(min(n_common, n_score)), pmf[:n_common].argmax(axis=1)].mean()),
            "data_digest": digest, **values}


def environment_summary(n_score: int, n_common: int, seed: int) -> dict:
    """Oracle, uniform and logger values on the scoring rows (parent side)."""
    env = environment(seed)
    X = env.contexts(n_score, 1000 * seed + 2)
    mu = env.expected_rewards(X)
    logger = env.logging_probabilities(X)
    return {"oracle": float(mu.max(axis=1).mean()), "uniform": float(mu.mean()),
            "oracle_common": float(mu[:n_common].max(axis=1).mean()), "uniform_common": float(mu[:n_common].mean()),
            "softmax_logger": float((logger * mu).sum(axis=1).mean())}


# ---------------------------------------------------------------------------------------------- series
def _series(target: str, repeat: int, warmup: int, timeout: float | None = None, **kwargs) -> dict:
    """`warmup` + `repeat` fresh processes: medians (and minimum) over the last `repeat`, largest peaks."""
    runs = [measure_in_subprocess(target, timeout=timeout, **kwargs) for _ in range(warmup + repeat)]
    warmups, runs = runs[:warmup], runs[warmup:]
    ordered = sorted(runs, key=lambda r: r["wall_s"])
    summary = dict(ordered[(len(ordered) - 1) // 2])  # the median run (fit + score): its fit and score times
    fastest = ordered[0]
    summary |= {"repeat": repeat, "warmup": warmup, "runs_wall_s": [r["wall_s"] for r in runs],
                "runs_fit_s": [r["fit_s"] for r in runs], "runs_score_s": [r["score_s"] for r in runs],
                "wall_min_s": fastest["wall_s"], "fit_min_run_s": fastest["fit_s"],
                "score_min_run_s": fastest["score_s"], "warmup_walls_s": [r["wall_s"] for r in warmups],
                "peak_rss_bytes": max(r["peak_rss_bytes"] for r in runs),
                "peak_calls_bytes": max(r["peak_calls_bytes"] for r in runs),
                "other_load_cores": [round(r["other_load_cores"], 3) for r in warmups + runs],
                "values_identical_across_runs": len({r["value"] for r in warmups + runs}) == 1,
                "data_digests": sorted({r["data_digest"] for r in warmups + runs})}
    return summary


def throughput(run: dict, fastest: bool = False) -> float:
    """Rows per second (each row learned once and scored once), linear in the per-row times of the two phases;
    of the median run, or of the fastest run (`fastest`)."""
    fit, score = (run["fit_min_run_s"], run["score_min_run_s"]) if fastest else (run["fit_s"], run["score_s"])
    return 1.0 / (fit / run["n_train"] + score / run["n_score"])


def _extrapolated(run: dict, n_rows: int) -> bool:
    return run["n_train"] != n_rows or run["n_score"] != n_rows


def _paired(arms_a: str, arms_b: str, mu: np.ndarray) -> tuple[float, float]:
    """Mean and standard error of mu[a] - mu[b] over the rows both libraries scored."""
    a, b = np.load(arms_a).astype(np.int64), np.load(arms_b).astype(np.int64)
    n = min(len(a), len(b))
    rows = np.arange(n)
    diff = mu[rows, a[:n]] - mu[rows, b[:n]]
    return float(diff.mean()), float(diff.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")


def run(*, n_rows: int, vw_train: int, vw_score: int, seed: int, repeat: int, warmup: int, skip_vw: bool,
        command: str, quick: bool) -> dict:
    ARRAYS_DIR.mkdir(parents=True, exist_ok=True)
    n_common = min(vw_score, n_rows)
    results: dict = {"n_rows": n_rows, "n_common": n_common, "seed": seed, "n_features": N_FEATURES,
                     "n_arms": N_ARMS, "environment": environment_summary(n_rows, n_common, seed)}
    alphas = {"LinUCB": ALPHA_UCB, "LinTS": ALPHA_TS}
    runs: dict[str, dict] = {}
    arms_paths: dict[str, str] = {}

    def path(key: str) -> str:
        arms_paths[key] = str(ARRAYS_DIR / f"arms-{key}.npy")
        return arms_paths[key]

    for policy in OURS:
        print(f"[bandit_policies] ours {policy}: fit {n_rows:,} + score {n_rows:,} ...", flush=True)
        runs[f"ours {policy}"] = _series("benchmarks.bench_bandit_policies:measure_ours", repeat, warmup,
                                         timeout=1800, policy=policy, n_train=n_rows, n_score=n_rows, seed=seed,
                                         alpha=alphas[policy], n_common=n_common, arms_path=path(f"ours-{policy}"))
    for policy in OURS:
        print(f"[bandit_policies] MABWiser {policy}: fit {n_rows:,} + predict {n_rows:,} ...", flush=True)
        runs[f"MABWiser {policy}"] = _series("benchmarks.bench_bandit_policies:measure_mabwiser", repeat, warmup,
                                             timeout=3600, policy=policy, n_train=n_rows, n_score=n_rows,
                                             seed=seed, alpha=alphas[policy], n_common=n_common,
                                             arms_path=path(f"mabwiser-{policy}"))
    for policy in OURS:  # reference only: MABWiser given a constant column (our models have an intercept)
        print(f"[bandit_policies] MABWiser {policy} + constant column (reference, one run) ...", flush=True)
        runs[f"MABWiser {policy} + constant column"] = _series(
            "benchmarks.bench_bandit_policies:measure_mabwiser", 1, 0, timeout=3600, policy=policy, n_train=n_rows,
            n_score=n_rows, seed=seed, alpha=alphas[policy], n_common=n_common, intercept=True,
            arms_path=path(f"mabwiser-{policy}-intercept"))
    if not skip_vw:
        print(f"[bandit_policies] VW --cb_explore_adf: learn {vw_train:,} + score {vw_score:,} (one run) ...",
              flush=True)
        runs["VW cb_explore_adf"] = _series("benchmarks.bench_bandit_policies:measure_vw", 1, 0, timeout=7200,
                                            n_train=vw_train, n_score=vw_score, seed=seed, epsilon=VW_EPSILON,
                                            n_rows=n_rows, n_common=n_common, arms_path=path("vw"))
    for r in runs.values():
        r["throughput_rows_s"] = throughput(r)
        r["throughput_fastest_rows_s"] = throughput(r, fastest=True)
        r["extrapolated"] = _extrapolated(r, n_rows)
    results["runs"] = runs
    results["same_data"] = len({d for r in runs.values() for d in r["data_digests"]}) == 1

    env = environment(seed)
    mu_common = env.expected_rewards(env.contexts(n_rows, 1000 * seed + 2)[:n_common])
    goals = []
    for policy in OURS:
        ours = runs[f"ours {policy}"]
        peers = [(f"MABWiser {policy}", GOAL_VS_MABWISER), (f"MABWiser {policy} + constant column", None)]
        if not skip_vw:
            peers.append(("VW cb_explore_adf", GOAL_VS_VW))
        for peer, goal in peers:
            theirs = runs[peer]
            ratio = ours["throughput_rows_s"] / theirs["throughput_rows_s"]
            ratio_fastest = ours["throughput_fastest_rows_s"] / theirs["throughput_fastest_rows_s"]
            diff, se = _paired(arms_paths[f"ours-{policy}"], arms_paths[_arms_key(peer)], mu_common)
            value_ok = diff >= -2 * se
            goals.append({"ours": policy, "peer": peer, "ratio": ratio, "ratio_fastest": ratio_fastest, "goal": goal,
                          "speed_met": None if goal is None else ratio >= goal,
                          "value_difference_common": diff, "value_difference_se": se, "value_equal_or_better": value_ok,
                          "met": None if goal is None else bool(ratio >= goal and value_ok),
                          "peer_extrapolated": theirs["extrapolated"]})
    results["goals"] = goals
    report(results)
    path_out = save_results("bandit_policies" + ("-quick" if quick else ""), command,
                            {"quick": quick, **results})
    print(f"results: {path_out}")
    return results


def _arms_key(peer: str) -> str:
    if peer.startswith("VW"):
        return "vw"
    policy = peer.split()[1]
    return f"mabwiser-{policy}" + ("-intercept" if "constant" in peer else "")


# ---------------------------------------------------------------------------------------------- report
def _seconds(value: float) -> str:
    return f"{value:.3f} s" if value < 10 else f"{value:.1f} s"


def _rate(value: float) -> str:
    return f"{value:,.0f}"


def report(results: dict) -> None:
    n_rows, n_common, env = results["n_rows"], results["n_common"], results["environment"]
    print(f"\nEnvironment: {N_FEATURES} features, {N_ARMS} arms, linear rewards; uniform logger. True values on the "
          f"{n_rows:,} scoring rows: oracle {env['oracle']:.4f}, uniform random {env['uniform']:.4f} (first "
          f"{n_common:,} rows: oracle {env['oracle_common']:.4f}, uniform {env['uniform_common']:.4f}).")
    rows = []
    for key, r in results["runs"].items():
        size = f"{r['n_train']:,} / {r['n_score']:,}"
        rows.append([key, size, _seconds(r["fit_s"]), _seconds(r["score_s"]), _seconds(r["wall_s"]),
                     _seconds(r["wall_min_s"]) if r["repeat"] > 1 else "(one run)",
                     _rate(r["throughput_rows_s"]) + (" (extrapolated)" if r["extrapolated"] else ""),
                     f"{r['cpu_s'] / r['wall_s']:.2f}", mib(r["rss_before_bytes"]), mib(r["peak_calls_bytes"]),
                     "yes" if r["propensities"] else "no",
                     f"{r['value']:.4f}" + (f" ({r['n_score']:,} rows)" if r["n_score"] != n_rows else ""),
                     f"{r['value_common']:.4f}",
                     f"{r['policy_value_common']:.4f}" if "policy_value_common" in r else "-",
                     " / ".join(f"{x:.2f}" for x in r["other_load_cores"])])
    print(table(["library, policy", "rows learned / scored", "fit", "score", "fit + score (median run)",
                 "fit + score (fastest run)", f"rows/s at {n_rows:,} (median run)", "cores used",
                 "RSS before the calls (data in memory)", "peak RSS during the calls",
                 "propensities", "true value (chosen arms)", f"true value, first {n_common:,} rows",
                 "exact policy value (probabilities), same rows", "other load (cores) per run"], rows))
    vw = results["runs"].get("VW cb_explore_adf")
    if vw:
        share = vw["format_s_per_row"] * (vw["n_train"] + vw["n_score"]) / vw["wall_s"]
        print(f"VW: learned {vw['n_train']:,} rows in {_seconds(vw['fit_s'])}, scored {vw['n_score']:,} in "
              f"{_seconds(vw['score_s'])}; throughput at {n_rows:,} rows extrapolated linearly from these. Building "
              f"the example strings is about {100 * share:.0f}% of its time. Greedy (argmax of the pmf) value on "
              f"the same rows: {vw['greedy_value_common']:.4f}.")
    print(table(["ours", "against", "throughput ratio (median runs)", "(fastest runs)", "goal", "speed",
                 f"value difference, first {n_common:,} rows",
                 "value equal or better", "goal met"],
                [[g["ours"], g["peer"] + (" (extrapolated)" if g["peer_extrapolated"] else ""), f"{g['ratio']:.1f}x",
                  f"{g['ratio_fastest']:.1f}x", f">= {g['goal']:.0f}x" if g["goal"] else "(reference)",
                  "-" if g["speed_met"] is None else ("met" if g["speed_met"] else "MISSED"),
                  f"{g['value_difference_common']:+.5f} +- {g['value_difference_se']:.5f}",
                  "yes" if g["value_equal_or_better"] else "NO",
                  "-" if g["met"] is None else ("met" if g["met"] else "MISSED")] for g in results["goals"]]))
    if not results["same_data"]:
        print("WARNING: the processes did not all see the same data (digests differ)")


# ---------------------------------------------------------------------------------------------- profile
def profile(n_rows: int, seed: int, top: int = 14) -> dict:
    """cProfile of our fit + sample at n_rows, in this process, plus step timers (a second fit + sample)."""
    import cProfile
    import io
    import pstats

    _, feedback, X_score, _ = make_data(n_rows, n_rows, seed)
    out = {}
    for policy, alpha in (("LinUCB", ALPHA_UCB), ("LinTS", ALPHA_TS)):
        make_ours(policy, alpha, seed).fit(feedback.subset(slice(0, WARMUP_ROWS))).sample(X_score[:WARMUP_ROWS], 0)
        model = make_ours(policy, alpha, seed)
        profiler = cProfile.Profile()
        started = time.perf_counter()
        profiler.enable()
        model.fit(feedback)
        fitted = time.perf_counter()
        model.sample(X_score, random_state=seed + 7)
        profiler.disable()
        done = time.perf_counter()
        stream = io.StringIO()
        pstats.Stats(profiler, stream=stream).sort_stats("tottime").print_stats(top)
        print(f"\n[profile] ours {policy}: fit {fitted - started:.3f} s, sample {done - fitted:.3f} s (under cProfile)")
        print(stream.getvalue())
        out[policy] = {"fit_s": fitted - started, "score_s": done - fitted, "profile": stream.getvalue()}
    return out


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_bandit_policies",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=None,
                        help=f"rows learned and rows scored (default {DEFAULT_ROWS:,}; --quick {QUICK_ROWS:,})")
    parser.add_argument("--vw-train-rows", type=int, default=None,
                        help=f"rows VW learns (default {DEFAULT_VW_TRAIN:,}; --quick {QUICK_VW_TRAIN:,})")
    parser.add_argument("--vw-score-rows", type=int, default=None,
                        help=f"rows VW scores, also the rows of the paired value comparison (default "
                             f"{DEFAULT_VW_SCORE:,}; --quick {QUICK_VW_SCORE:,})")
    parser.add_argument("--skip-vw", action="store_true", help="leave Vowpal Wabbit out")
    parser.add_argument("--profile", action="store_true", help="only: cProfile our LinUCB / LinTS fit + score")
    add_common_arguments(parser, repeat=3)
    args = parser.parse_args(argv)
    warmup = apply_common_arguments(args)
    n_rows = args.rows or (QUICK_ROWS if args.quick else DEFAULT_ROWS)
    if args.profile:
        return profile(n_rows, args.seed)
    vw_train = min(args.vw_train_rows or (QUICK_VW_TRAIN if args.quick else DEFAULT_VW_TRAIN), n_rows)
    vw_score = min(args.vw_score_rows or (QUICK_VW_SCORE if args.quick else DEFAULT_VW_SCORE), n_rows)
    return run(n_rows=n_rows, vw_train=vw_train, vw_score=vw_score, seed=args.seed,
               repeat=args.repeat if not args.quick else 1, warmup=warmup, skip_vw=args.skip_vw,
               command=command_line("benchmarks.bench_bandit_policies", argv), quick=args.quick)


if __name__ == "__main__":
    main()
