"""Neural policy (`bandits.NeuralTS`) against LinUCB, LinTS and uniform random on a non-linear environment, online.

Environment: `SyntheticBandit(n_features=10, n_arms=5, reward="nonlinear", seed=seed)`, where
mu_k(x) = sigmoid(b_k + 1.5 sin(x'u_k) + (x'v_k)^2 / 2 - 1/2): no linear model ranks the arms well.

Online simulation in batches, as the nightly job runs (docs/bandits.md): each round `--batch` new users arrive
(contexts drawn from a stream seeded by (seed, round)); the policy picks an arm for each with
`sample_codes(X, random_state)` (arm and propensity); the rewards are drawn (Bernoulli(mu), with the same uniforms
for every policy: common random numbers); then `partial_fit` on that round's feedback. Round 0 is uniform random
for every policy (cold start: a policy cannot act before its first fit), so every policy starts from the same logs.
Same seeds for all policies.

Reported per policy: cumulative realized reward, cumulative expected reward (sum of mu of the chosen arms),
per-round expected reward and regret against the oracle (the best arm of every user, known from the environment),
the exact value of the final policy on 20,000 held-out contexts (mean_i sum_k pi(k|x_i) mu_k(x_i)), and the time
spent in `sample` and `partial_fit`. Each (policy, seed) runs in a fresh subprocess (time and peak RSS).

Policies: NeuralTS() (defaults: MLP (64, 32), per-arm heads, neural-linear Thompson sampling, 5 epochs over the
buffer per update), LinUCB(alpha=1), LinTS(alpha=1), uniform random.

    python -m benchmarks.bench_neural_policy            # 40 rounds x 1,000 users, seeds 0 1 2 (about 1.5 minutes)
    python -m benchmarks.bench_neural_policy --quick    # 10 rounds x 500 users, seed 0 (about 17 s)
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence

import numpy as np

from benchmarks._harness import (
    command_line,
    measure_in_subprocess,
    mib,
    save_results,
    settings,
    table,
)

POLICIES = ("NeuralTS", "LinUCB", "LinTS", "uniform")
N_FEATURES, N_ARMS = 10, 5
DEFAULT_ROUNDS, DEFAULT_BATCH, DEFAULT_SEEDS = 40, 1_000, (0, 1, 2)
QUICK_ROUNDS, QUICK_BATCH, QUICK_SEEDS = 10, 500, (0,)
HOLDOUT_ROWS = 20_000


def environment(seed: int, n_features: int = N_FEATURES, n_arms: int = N_ARMS):
    from bandits.datasets import SyntheticBandit

    return SyntheticBandit(n_features=n_features, n_arms=n_arms, reward="nonlinear", seed=seed)


def make_policy(name: str, seed: int):
    from bandits import LinTS, LinUCB, NeuralTS

    if name == "NeuralTS":
        return NeuralTS(random_state=seed)
    if name == "LinUCB":
        return LinUCB(alpha=1.0)
    if name == "LinTS":
        return LinTS(alpha=1.0, random_state=seed)
    if name == "uniform":
        return None
    raise ValueError(f"unknown policy {name!r}")


def simulate(policy: str, rounds: int, batch: int, seed: int, n_features: int = N_FEATURES,
             n_arms: int = N_ARMS) -> dict:
    """One online run (subprocess side): `rounds` rounds of `batch` users; per-round figures."""
    from bandits import LoggedFeedback

    env = environment(seed, n_features, n_arms)
    model = make_policy(policy, seed)
    expected, realized, oracle, sample_s, fit_s, propensity = [], [], [], [], [], []
    for r in range(rounds):
        X = env.contexts(batch, np.random.default_rng([seed, r, 0]))
        mu = env.expected_rewards(X)
        started = time.perf_counter()
        if model is None or r == 0:  # uniform random (round 0 for every policy: nothing learned yet)
            arms = np.random.default_rng([seed, r, 1]).integers(0, n_arms, batch)
            propensities = np.full(batch, 1.0 / n_arms)
        else:
            arms, propensities = model.sample_codes(X, random_state=np.random.default_rng([seed, r, 1]))
        sample_s.append(time.perf_counter() - started)
        rewards = env.rewards(X, arms, np.random.default_rng([seed, r, 2]))  # same uniforms for every policy
        started = time.perf_counter()
        if model is not None:
            model.partial_fit(LoggedFeedback(X, arms, rewards, propensities, env.arm_labels))
        fit_s.append(time.perf_counter() - started)
        expected.append(float(mu[np.arange(batch), arms].mean()))
        realized.append(float(rewards.sum()))
        oracle.append(float(mu.max(axis=1).mean()))
        propensity.append(float(propensities.mean()))
    X_hold = env.contexts(HOLDOUT_ROWS, np.random.default_rng([seed, 10**6, 0]))
    mu_hold = env.expected_rewards(X_hold)
    if model is None:
        final_value = float(mu_hold.mean())
    else:
        final_value = float((model.action_probabilities(X_hold) * mu_hold).sum(axis=1).mean())
    return {"policy": policy, "seed": seed, "rounds": rounds, "batch": batch, "n_features": n_features,
            "n_arms": n_arms, "expected": expected, "realized": realized, "oracle": oracle,
            "sample_s": sum(sample_s), "fit_s": sum(fit_s), "fit_s_last_round": fit_s[-1],
            "wall_s": sum(sample_s) + sum(fit_s), "mean_propensity": propensity,
            "cumulative_realized": float(sum(realized)), "cumulative_expected": float(sum(expected) * batch),
            "cumulative_oracle": float(sum(oracle) * batch),
            "final_value": final_value, "holdout_oracle": float(mu_hold.max(axis=1).mean()),
            "holdout_uniform": float(mu_hold.mean())}


def run(*, rounds: int, batch: int, seeds: Sequence[int], command: str, quick: bool) -> dict:
    runs: dict[str, list[dict]] = {p: [] for p in POLICIES}
    for seed in seeds:
        for policy in POLICIES:
            print(f"[neural_policy] {policy}, seed {seed}: {rounds} rounds x {batch:,} users ...", flush=True)
            runs[policy].append(measure_in_subprocess("benchmarks.bench_neural_policy:simulate", timeout=3600,
                                                      policy=policy, rounds=rounds, batch=batch, seed=seed))
    results = {"rounds": rounds, "batch": batch, "seeds": list(seeds), "n_features": N_FEATURES, "n_arms": N_ARMS,
               "runs": runs, "summary": summarize(runs)}
    report(results)
    path = save_results("neural_policy" + ("-quick" if quick else ""), command, {"quick": quick, **results})
    print(f"results: {path}")
    return results


def summarize(runs: dict[str, list[dict]]) -> dict:
    summary = {}
    for policy, per_seed in runs.items():
        expected = np.mean([r["expected"] for r in per_seed], axis=0)  # per round, averaged over seeds
        oracle = np.mean([r["oracle"] for r in per_seed], axis=0)
        summary[policy] = {
            "cumulative_realized": [r["cumulative_realized"] for r in per_seed],
            "cumulative_expected": [r["cumulative_expected"] for r in per_seed],
            "cumulative_regret": [r["cumulative_oracle"] - r["cumulative_expected"] for r in per_seed],
            "final_value": [r["final_value"] for r in per_seed],
            "per_round_expected": expected.tolist(), "per_round_regret": (oracle - expected).tolist(),
            "wall_s": [r["wall_s"] for r in per_seed], "fit_s": [r["fit_s"] for r in per_seed],
            "sample_s": [r["sample_s"] for r in per_seed],
            "fit_s_last_round": [r["fit_s_last_round"] for r in per_seed],
            "peak_rss_bytes": max(r["peak_rss_bytes"] for r in per_seed),
            "other_load_cores": [round(r["other_load_cores"], 2) for r in per_seed],
        }
    return summary


def _mean(values: Sequence[float]) -> float:
    return float(statistics.fmean(values))


def _pm(values: Sequence[float], fmt: str) -> str:
    """Mean over seeds, with the range when there are several."""
    if len(values) == 1:
        return format(values[0], fmt)
    return f"{format(_mean(values), fmt)} ({format(min(values), fmt)} to {format(max(values), fmt)})"


def conclusion(results: dict) -> str:
    s = results["summary"]
    neural, linucb = s["NeuralTS"], s["LinUCB"]
    gain = _mean(neural["cumulative_realized"]) / _mean(linucb["cumulative_realized"]) - 1
    regret_cut = 1 - _mean(neural["cumulative_regret"]) / _mean(linucb["cumulative_regret"])
    wins = sum(a > b for a, b in zip(neural["cumulative_realized"], linucb["cumulative_realized"], strict=True))
    time_ratio = _mean(neural["wall_s"]) / _mean(linucb["wall_s"])
    return (f"On the non-linear environment NeuralTS collects {100 * gain:+.1f}% cumulative reward against LinUCB "
            f"over the same {results['rounds']} rounds x {results['batch']:,} users ({wins} of "
            f"{len(results['seeds'])} seeds), cuts the cumulative regret by {100 * regret_cut:.0f}%, and its final "
            f"policy is worth {_mean(neural['final_value']):.3f} against {_mean(linucb['final_value']):.3f} "
            f"(oracle {_mean([r['holdout_oracle'] for r in results['runs']['NeuralTS']]):.3f}); it costs "
            f"{time_ratio:,.0f}x LinUCB's compute ({_mean(neural['wall_s']):.1f} s against "
            f"{_mean(linucb['wall_s']):.2f} s).")


def report(results: dict) -> None:
    s, rounds, batch = results["summary"], results["rounds"], results["batch"]
    first = results["runs"]["NeuralTS"]
    oracle_total = _mean([r["cumulative_oracle"] for r in first])
    print(f"\n{rounds} rounds x {batch:,} users, {N_FEATURES} features, {N_ARMS} arms, non-linear rewards, seeds "
          f"{results['seeds']}. Oracle: cumulative expected reward {oracle_total:,.0f}; final-policy value on "
          f"{HOLDOUT_ROWS:,} held-out users: oracle {_mean([r['holdout_oracle'] for r in first]):.4f}, uniform "
          f"{_mean([r['holdout_uniform'] for r in first]):.4f}. Figures: mean over seeds (range).")
    print(table(["policy", "cumulative reward (realized)", "cumulative expected reward", "cumulative regret",
                 "vs LinUCB (realized)", "final policy value (held out)", "sample + partial_fit time",
                 "partial_fit, last round", "peak RSS", "other load (cores)"],
                [[p, _pm(v["cumulative_realized"], ",.0f"), _pm(v["cumulative_expected"], ",.0f"),
                  _pm(v["cumulative_regret"], ",.0f"),
                  f"{_mean(v['cumulative_realized']) / _mean(s['LinUCB']['cumulative_realized']):.3f}x",
                  _pm(v["final_value"], ".4f"), _pm(v["wall_s"], ".2f") + " s",
                  _pm(v["fit_s_last_round"], ".3f") + " s", mib(v["peak_rss_bytes"]),
                  " / ".join(f"{x:.2f}" for x in v["other_load_cores"])] for p, v in s.items()]))
    print(table(["round", *(f"{p}: expected reward" for p in POLICIES), *(f"{p}: regret" for p in POLICIES)],
                [[str(r), *(f"{s[p]['per_round_expected'][r]:.4f}" for p in POLICIES),
                  *(f"{s[p]['per_round_regret'][r]:.4f}" for p in POLICIES)] for r in range(rounds)]))
    print(conclusion(results))


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_neural_policy",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=None, help=f"rounds (default {DEFAULT_ROUNDS}; --quick "
                                                                 f"{QUICK_ROUNDS})")
    parser.add_argument("--batch", type=int, default=None, help=f"users per round (default {DEFAULT_BATCH:,}; "
                                                                f"--quick {QUICK_BATCH})")
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help=f"environment and policy seeds (default {' '.join(map(str, DEFAULT_SEEDS))}; --quick 0)")
    parser.add_argument("--max-wait", type=float, default=None,
                        help="seconds to wait for a quiet machine before each run (default 180; 0 with --quick)")
    parser.add_argument("--quick", action="store_true", help="small sizes, one seed, no waiting")
    args = parser.parse_args(argv)
    settings["max_quiet_wait_s"] = args.max_wait if args.max_wait is not None else (0.0 if args.quick else 180.0)
    return run(rounds=args.rounds or (QUICK_ROUNDS if args.quick else DEFAULT_ROUNDS),
               batch=args.batch or (QUICK_BATCH if args.quick else DEFAULT_BATCH),
               seeds=args.seeds or (QUICK_SEEDS if args.quick else DEFAULT_SEEDS),
               command=command_line("benchmarks.bench_neural_policy", argv), quick=args.quick)


if __name__ == "__main__":
    main()
