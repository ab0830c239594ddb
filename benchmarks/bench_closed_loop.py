"""The closed loop on the synthetic world (issue 19, part 5): the daily job fed its own decisions for 30 days.

Each configuration runs `pipelines.synthetic.loop.closed_loop` in a fresh interpreter (its own folder and sqlite
MLflow store): each day the registry's champion decides for the day's active users (the logging policy until a
version beats it), the world answers, and the daily job runs for the date (fit-bandit LinTS warm-started from the
previous date, promote with the DR lower-bound rule).

- `loop`, one run per seed: the served policy's expected purchases per decision, from the truth, as a share of the
  feature ceiling's gain over logging (`CampaignWorld.ceiling_arm`: the best arm given the logged features, the
  baseline and habit, averaged over the signals the logs miss) and of the full-truth oracle's, on day 30 and over
  the 30 days (each day weighted by its decisions); promotions; and the gate's calibration: whether each promoted
  challenger's DR interval covered its true value on the same day's users and states. Goals: 0.85 of the ceiling's
  gain by day 30, 0.60 cumulative, 90% of promotions covered.
- `ab`: the loop with interference (`--contagion`: a user's activity logit gains that much per unit share of
  interaction partners who bought the day before) and a graph-clustered A/B test of the loop against the logging
  policy (the `assign` stage, Leiden clusters of at most 1,000 users, before day 1; `readout` after day 30),
  beside the same test randomizing users (`design: user`). The read-out lift in purchases per user over the 30 days
  is scored against the true lift: everyone served the loop's champions against everyone served the logging
  policy, from two more runs of the world's days.

    python -m benchmarks.bench_closed_loop                         # 10^5 users, 30 days, seeds 0 1 2, and the A/B test
    python -m benchmarks.bench_closed_loop --parts ab --contagion 2
"""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks._harness import command_line, measure_in_subprocess, save_results, table

START = dt.date(2026, 1, 1)
PARTS = ("loop", "ab")


def measure_loop(n_users: int, days: int, seed: int, contagion: float = 0.0, design: str | None = None) -> dict:
    """One run of the loop; with `design`, an A/B test of that design (Leiden clusters of at most 1,000 users)."""
    from pipelines.synthetic import CampaignConfig, CampaignWorld
    from pipelines.synthetic.loop import closed_loop, cumulative_share, daily_job, loop_frame, promotions

    world = CampaignWorld.from_config(CampaignConfig(n_users=n_users, n_days=days, chunk_users=n_users),
                                      random_state=seed)
    experiment = None if design is None else {"experiment": "bench-loop", "seed": seed, "method": "leiden",
                                              "max_cluster_size": 1000, "design": design}
    with tempfile.TemporaryDirectory() as folder:
        uri = f"sqlite:///{folder}/mlflow.db"
        started = time.perf_counter()
        run = closed_loop(world, n_users, days, daily_job("lin-ts", seed, "bench-loop", "bench-loop-policy"),
                          Path(folder), model_name="bench-loop-policy", start=START, tracking_uri=uri,
                          contagion=contagion, experiment=experiment)
        seconds = time.perf_counter() - started
    frame = loop_frame(run.days)
    gate = promotions(frame)
    return {"seconds": seconds, "days": frame.to_dict(orient="list"), "promotions": gate.to_dict(orient="list"),
            "cumulative_share_of_ceiling_gain": cumulative_share(frame, "ceiling"),
            "cumulative_share_of_oracle_gain": cumulative_share(frame, "oracle"),
            "experiment": None if run.experiment is None else run.experiment.to_dict(orient="list")}


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--contagion", type=float, default=2.0)
    parser.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS)
    args = parser.parse_args(argv)
    payload: dict = {"users": args.users, "days": args.days, "loop": {}, "ab": {}}
    if "loop" in args.parts:
        rows, covered, promoted = [], 0, 0
        for seed in args.seeds:
            result = measure_in_subprocess("benchmarks.bench_closed_loop:measure_loop", n_users=args.users,
                                           days=args.days, seed=seed)
            payload["loop"][seed] = result
            days, gate = result["days"], result["promotions"]
            covered, promoted = covered + sum(gate["covered"]), promoted + len(gate["covered"])
            rows.append([seed, f"{days['share_of_ceiling_gain'][-1]:.3f}", f"{days['share_of_oracle_gain'][-1]:.3f}",
                         f"{result['cumulative_share_of_ceiling_gain']:.3f}",
                         f"{result['cumulative_share_of_oracle_gain']:.3f}",
                         f"{sum(days['promoted'])}", f"{sum(gate['covered'])} of {len(gate['covered'])}",
                         f"{result['seconds']:.0f}", f"{result['peak_rss_bytes'] / 2**30:.2f}"])
        print(table(["seed", f"day {args.days}: of ceiling's gain", "of oracle's", "cumulative: of ceiling's",
                     "of oracle's", "promotions", "gate covered", "seconds", "peak GiB"], rows))
        print(f"gate coverage over {promoted} promotions: {covered / max(promoted, 1):.2f}")
    if "ab" in args.parts:
        rows = []
        for design in ("bernoulli", "user"):
            result = measure_in_subprocess("benchmarks.bench_closed_loop:measure_loop", n_users=args.users,
                                           days=args.days, seed=args.seeds[0], contagion=args.contagion,
                                           design=design)
            payload["ab"][design] = result
            found = result["experiment"]
            for k, estimator in enumerate(found["estimator"]):
                rows.append([design, estimator, f"{found['estimate'][k]:.4f}",
                             f"[{found['ci_low'][k]:.4f}, {found['ci_high'][k]:.4f}]", f"{found['true_lift'][k]:.4f}",
                             "yes" if found["covered"][k] else "no"])
        print(table(["design", "estimator", "read-out lift", "95% CI", "true lift", "covered"], rows))
    print(f"saved {save_results('closed_loop', command_line('benchmarks.bench_closed_loop', argv), payload)}")
    return payload


if __name__ == "__main__":
    main()
