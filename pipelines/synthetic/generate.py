"""Generate a synthetic campaign: users, decision logs, edges and the ground truth, in memory or as parquet.

On disk (all parquet, zstd; directories hold `part-NNNNN.parquet` files, one per chunk of users):

    users/              user_id, segment, feature columns
    logs/               user_id, day, arm, propensity, reward, cost, randomized, recent_purchases, feature columns
    edges/              src, dst, weight, kind ("friend" or "invite": past-period interactions)
    truth/users/        user_id, community, engagement, randomized, best_arm, tau_<arm>, p0_<arm>
    truth/logs/         row-aligned with logs/: user_id, day, habit, mu_<arm> (expected reward of every arm),
                        logging_p_<arm> (the logging policy's full distribution)
    truth/interactions.parquet   src, dst, weight: the hidden current-period interaction graph
    truth/features.parquet       feature, role, kind, can_be_missing
    truth/arms.parquet           arm, cost, base_effect, carryover
    campaign.json                seed (the `random_state`), config and row counts

Every chunk of `chunk_users` users has its own random streams, so the files depend only on (config, random_state),
not on the scheduler or the number of workers. The directory appears in one rename when complete.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.execution import map_tasks
from pipelines.io import atomic_output
from pipelines.synthetic.config import CampaignConfig
from pipelines.synthetic.graph import CampaignGraph, build_graph
from pipelines.synthetic.world import CATEGORICAL, MODIFIER, PROGNOSTIC, CampaignWorld, UserBlock

EDGE_ROWS_PER_FILE = 5_000_000
PARQUET_OPTIONS = {"compression": "zstd"}


@dataclass(frozen=True)
class CampaignPaths:
    """Where each table of a generated campaign lives."""

    root: Path

    @property
    def users(self) -> Path:
        return self.root / "users"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def edges(self) -> Path:
        return self.root / "edges"

    @property
    def truth_users(self) -> Path:
        return self.root / "truth" / "users"

    @property
    def truth_logs(self) -> Path:
        return self.root / "truth" / "logs"

    @property
    def interactions(self) -> Path:
        return self.root / "truth" / "interactions.parquet"

    @property
    def features(self) -> Path:
        return self.root / "truth" / "features.parquet"

    @property
    def arms(self) -> Path:
        return self.root / "truth" / "arms.parquet"

    @property
    def manifest(self) -> Path:
        return self.root / "campaign.json"


@dataclass(frozen=True)
class CampaignTruth:
    """What the analyst never sees: feature roles, arm parameters, per-user effects and the hidden graph."""

    world: CampaignWorld
    features: pd.DataFrame
    arms: pd.DataFrame
    users: pd.DataFrame
    interactions: pd.DataFrame
    n_log_rows: int
    n_edges: int
    paths: CampaignPaths | None = None

    def features_with_role(self, role: str) -> list[str]:
        """Names of the features with a role: "modifier", "prognostic" or "noise"."""
        return self.features.loc[self.features["role"] == role, "feature"].tolist()


@dataclass(frozen=True)
class Campaign:
    """A whole campaign in memory (for tests and notebooks on small sizes)."""

    users: pd.DataFrame
    logs: pd.DataFrame
    edges: pd.DataFrame
    truth_logs: pd.DataFrame
    truth: CampaignTruth


@dataclass
class _ChunkTruth:
    """The small per-user part of a chunk that the driver needs for the graph and the truth tables."""

    truth_users: pd.DataFrame
    engagement: np.ndarray
    similarity: np.ndarray
    n_log_rows: int


@dataclass
class _Chunk:
    users: pa.Table
    logs: pa.Table
    truth_logs: pa.Table
    truth: _ChunkTruth


def _chunk_bounds(config: CampaignConfig) -> list[tuple[int, int, int]]:
    """(chunk index, first user id, number of users) for each chunk."""
    size = config.chunk_users
    return [(i, first, min(size, config.n_users - first)) for i, first in enumerate(range(0, config.n_users, size))]


def user_table(world: CampaignWorld, users: UserBlock) -> pa.Table:
    engagement = users.engagement
    segment = np.where(engagement > 0.8, "loyal", np.where(engagement < -0.5, "occasional", "regular"))
    columns: dict[str, pa.Array] = {"user_id": pa.array(users.user_id), "segment": pa.array(segment)}
    for spec in world.features:
        values = users.columns[spec.name]
        columns[spec.name] = pa.array(values, type=pa.string()) if spec.kind == CATEGORICAL else pa.array(values)
    return pa.table(columns)


def log_table(world: CampaignWorld, rows: dict[str, np.ndarray], user_table: pa.Table, first: int) -> pa.Table:
    """The decision log of `rows` (from `CampaignWorld.simulate` or `CampaignDays.respond`): the logged columns and
    each user's feature columns from `user_table` (users numbered from `first`)."""
    labels = pa.array(world.arm_labels, type=pa.string())
    logged = pa.table({
        "user_id": rows["user_id"],
        "day": rows["day"],
        "arm": pa.DictionaryArray.from_arrays(pa.array(rows["arm"].astype(np.int32)), labels).cast(pa.string()),
        "propensity": rows["propensity"],
        "reward": rows["reward"],
        "cost": rows["cost"],
        "randomized": rows["randomized"],
        "recent_purchases": rows["recent_purchases"],
    })
    contexts = user_table.drop_columns(["user_id", "segment"]).take(pa.array(rows["user_id"] - first))
    for name in contexts.column_names:
        logged = logged.append_column(name, contexts.column(name))
    return logged


def _simulate_chunk(world: CampaignWorld, bounds: tuple[int, int, int]) -> _Chunk:
    index, first, n = bounds
    users = world.draw_users(index, first, n)
    users_table = user_table(world, users)
    rows = world.simulate(users, index)
    logged = log_table(world, rows, users_table, first)
    truth_logs = {"user_id": rows["user_id"], "day": rows["day"], "habit": rows["habit"]}
    truth_logs |= {f"mu_{label}": rows["mu"][:, k] for k, label in enumerate(world.arm_labels)}
    truth_logs |= {f"logging_p_{label}": rows["logging_p"][:, k] for k, label in enumerate(world.arm_labels)}

    effects = world.arm_effects(users)
    baseline = world.response_probability(users)
    truth_users = pd.DataFrame({
        "user_id": users.user_id,
        "engagement": users.engagement,
        "randomized": users.randomized,
        "best_arm": np.asarray(world.arm_labels, dtype=object)[np.argmax(effects, axis=1)],
    })
    for k, label in enumerate(world.arm_labels):
        truth_users[f"tau_{label}"] = effects[:, k]
    for k, label in enumerate(world.arm_labels):
        truth_users[f"p0_{label}"] = baseline[:, k]
    roles = [spec.role for spec in world.features]
    similarity_role = PROGNOSTIC if PROGNOSTIC in roles else MODIFIER
    similarity = (users.prognostic_signal if similarity_role == PROGNOSTIC else users.modifier_signal)[:, 0]
    truth = _ChunkTruth(truth_users, users.engagement, similarity, logged.num_rows)
    return _Chunk(users_table, logged, pa.table(truth_logs), truth)


def _write_chunk(world: CampaignWorld, root: Path, bounds: tuple[int, int, int]) -> _ChunkTruth:
    """Simulate one chunk and write its parts; only the small per-user truth travels back to the driver."""
    chunk = _simulate_chunk(world, bounds)
    name = f"part-{bounds[0]:05d}.parquet"
    paths = CampaignPaths(root)
    for table, folder in ((chunk.users, paths.users), (chunk.logs, paths.logs), (chunk.truth_logs, paths.truth_logs)):
        pq.write_table(table, folder / name, **PARQUET_OPTIONS)
    return chunk.truth


def edge_frame(graph: CampaignGraph) -> pd.DataFrame:
    """The observed edges (friendships and past invitations) as the edges table, users as graph positions."""
    friends = pd.DataFrame({"src": graph.friend_src, "dst": graph.friend_dst, "weight": 1.0, "kind": "friend"})
    invites = pd.DataFrame({"src": graph.invite_src, "dst": graph.invite_dst, "weight": 1.0, "kind": "invite"})
    return pd.concat([friends, invites], ignore_index=True)


def _truth_tables(world: CampaignWorld, chunks: list[_ChunkTruth],
                  paths: CampaignPaths | None) -> tuple[CampaignTruth, pd.DataFrame]:
    config = world.config
    graph = build_graph(world.random_state, np.concatenate([c.engagement for c in chunks]),
                        np.concatenate([c.similarity for c in chunks]), avg_degree=config.avg_degree,
                        community_size=config.community_size, mixing=config.mixing,
                        dormant_ties=config.dormant_ties)
    truth_users = pd.concat([c.truth_users for c in chunks], ignore_index=True)
    truth_users.insert(1, "community", graph.community)
    features = pd.DataFrame([{"feature": s.name, "role": s.role, "kind": s.kind, "can_be_missing": s.can_be_missing}
                             for s in world.features])
    arms = pd.DataFrame({"arm": world.arm_labels, "cost": world.arm_costs, "base_effect": world.arm_base,
                         "carryover": world.carryover})
    interactions = pd.DataFrame({"src": graph.interaction_src, "dst": graph.interaction_dst,
                                 "weight": graph.interaction_weight})
    n_log_rows = sum(c.n_log_rows for c in chunks)
    edges = edge_frame(graph)
    truth = CampaignTruth(world, features, arms, truth_users, interactions, n_log_rows, len(edges), paths)
    return truth, edges


def simulate_campaign(config: CampaignConfig | None = None, *, random_state: int = 0) -> Campaign:
    """The whole campaign in memory, identical to what `generate_campaign` writes for the same (config,
    random_state)."""
    config = config or CampaignConfig()
    world = CampaignWorld.from_config(config, random_state=random_state)
    chunks = [_simulate_chunk(world, bounds) for bounds in _chunk_bounds(config)]
    truth, edges = _truth_tables(world, [c.truth for c in chunks], None)
    return Campaign(
        users=pa.concat_tables([c.users for c in chunks]).to_pandas(),
        logs=pa.concat_tables([c.logs for c in chunks]).to_pandas(),
        edges=edges,
        truth_logs=pa.concat_tables([c.truth_logs for c in chunks]).to_pandas(),
        truth=truth,
    )


def generate_campaign(config: CampaignConfig | None, out_dir: Path | str, *, random_state: int = 0) -> CampaignTruth:
    """Write a campaign as partitioned parquet under `out_dir` (replaced atomically) and return its ground truth.

    Chunks run on the Dask cluster in use, if any, else one after the other; the bytes written are the same.
    """
    config = config or CampaignConfig()
    world = CampaignWorld.from_config(config, random_state=random_state)
    target = Path(out_dir)
    with atomic_output(target) as temporary:
        paths = CampaignPaths(temporary)
        for folder in (paths.users, paths.logs, paths.truth_logs):
            folder.mkdir(parents=True)
        chunks = map_tasks(partial(_write_chunk, world, temporary), _chunk_bounds(config), "simulating users")
        truth, edges = _truth_tables(world, chunks, CampaignPaths(target))
        paths.edges.mkdir()
        for i, start in enumerate(range(0, max(len(edges), 1), EDGE_ROWS_PER_FILE)):
            part = pa.Table.from_pandas(edges.iloc[start:start + EDGE_ROWS_PER_FILE], preserve_index=False)
            pq.write_table(part, paths.edges / f"part-{i:05d}.parquet", **PARQUET_OPTIONS)
        paths.truth_users.mkdir(parents=True)
        pq.write_table(pa.Table.from_pandas(truth.users, preserve_index=False),
                       paths.truth_users / "part-00000.parquet", **PARQUET_OPTIONS)
        for frame, file in ((truth.interactions, paths.interactions), (truth.features, paths.features),
                            (truth.arms, paths.arms)):
            pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), file, **PARQUET_OPTIONS)
        manifest = {"seed": random_state, "config": config.model_dump(), "n_users": config.n_users,
                    "n_log_rows": truth.n_log_rows, "n_edges": len(edges),
                    "n_hidden_interactions": len(truth.interactions)}
        paths.manifest.write_text(json.dumps(manifest, indent=2))  # key order matters: the first arm is the control
    return truth


def load_truth(root: Path | str) -> CampaignTruth:
    """Read back the ground truth of a campaign written by `generate_campaign`."""
    paths = CampaignPaths(Path(root))
    manifest = json.loads(paths.manifest.read_text())
    world = CampaignWorld.from_config(CampaignConfig(**manifest["config"]), random_state=manifest["seed"])
    return CampaignTruth(world, pd.read_parquet(paths.features), pd.read_parquet(paths.arms),
                         pd.read_parquet(paths.truth_users), pd.read_parquet(paths.interactions),
                         manifest["n_log_rows"], manifest["n_edges"], paths)
