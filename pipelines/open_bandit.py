"""Reading the Open Bandit Dataset small sample straight out of the obp wheel (without importing obp), and turning it
into the platform's decision log (`campaign import-open-bandit`).

obp no longer installs on Python >= 3.11, but its wheel carries the data: obp/dataset/obd/{random,bts}/{campaign}/
{campaign}.csv and the BTS production prior obp/policy/conf/prior_bts.yaml. `make` fetches the wheel with
`pip download obp==0.4.1 --no-deps -d .cache/wheels`. Data: Saito, Aihara, Matsutani and Narita, "Open Bandit
Dataset and Pipeline", NeurIPS Datasets and Benchmarks 2021; ZOZO, Inc.; license CC BY 4.0.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from pipelines.errors import InputError
from pipelines.io import atomic_output, ensure_writable

POLICIES = ("random", "bts")
CAMPAIGNS = ("all", "men", "women")
WHEEL_GLOB = "obp-*.whl"
FETCH_HINT = "fetch it with: pip download obp==0.4.1 --no-deps -d .cache/wheels"


def find_obp_wheel(wheel: str | Path | None = None) -> Path:
    """The obp wheel: the given path, $CAMPAIGN_OBP_WHEEL, or the newest obp-*.whl in ./.cache/wheels or the
    repository's .cache/wheels."""
    if wheel is None and os.environ.get("CAMPAIGN_OBP_WHEEL"):
        wheel = os.environ["CAMPAIGN_OBP_WHEEL"]
    if wheel is not None:
        path = Path(wheel)
        if not path.is_file():
            raise InputError(f"obp wheel: {path} does not exist; {FETCH_HINT}")
        return path
    for folder in (Path.cwd() / ".cache" / "wheels", Path(__file__).resolve().parents[1] / ".cache" / "wheels"):
        found = sorted(folder.glob(WHEEL_GLOB))
        if found:
            return found[-1]
    raise InputError(f"obp wheel: not found in ./.cache/wheels; {FETCH_HINT}")


def read_open_bandit(policy: str = "random", campaign: str = "all", wheel: str | Path | None = None
                     ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(logs, item_context) of one logging policy and campaign from the wheel's small sample (10,000 rounds)."""
    if policy not in POLICIES:
        raise InputError(f"policy: {policy!r} is not one of {list(POLICIES)}")
    if campaign not in CAMPAIGNS:
        raise InputError(f"campaign: {campaign!r} is not one of {list(CAMPAIGNS)}")
    folder = f"obp/dataset/obd/{policy}/{campaign}"
    with zipfile.ZipFile(find_obp_wheel(wheel)) as archive:
        logs = pd.read_csv(archive.open(f"{folder}/{campaign}.csv"), index_col=0)
        items = pd.read_csv(archive.open(f"{folder}/item_context.csv"), index_col=0)
    return logs, items


def read_bts_prior(campaign: str = "all", wheel: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(alpha, beta) of the production Bernoulli-TS prior per item for a campaign (obp's prior_bts.yaml)."""
    if campaign not in CAMPAIGNS:
        raise InputError(f"campaign: {campaign!r} is not one of {list(CAMPAIGNS)}")
    with zipfile.ZipFile(find_obp_wheel(wheel)) as archive:
        prior = yaml.safe_load(archive.read("obp/policy/conf/prior_bts.yaml"))
    return np.asarray(prior[campaign]["alpha"], dtype=float), np.asarray(prior[campaign]["beta"], dtype=float)


#: The table `campaign import-open-bandit` writes, column by column (see docs/your_data.md).
LOG_COLUMNS_DOC = {
    "user_id": "stand-in user id: the round's index in the sample (OBD has no user id, so each row is its own user)",
    "arm": "item shown (OBD `item_id`, 0..items-1)",
    "reward": "click (0/1)",
    "propensity": "the logging policy's probability of showing this item at this position (OBD `propensity_score`)",
    "position": "slot on the page, 1..3",
    "timestamp": "when the item was shown (UTC)",
    "day": "days since the sample's first day (0..6)",
    "user_feature_0..3": "hashed categorical user features",
    "affinity_<item>": "the user's past interactions with that item (OBD `user-item_affinity_<item>`)",
}

#: The job `campaign import-open-bandit` writes next to the table; examples/open_bandit/job.yaml is the same file.
JOB_FILE = """\
# The Open Bandit Dataset sample as a campaign job (docs/your_data.md). `campaign import-open-bandit --out DIR`
# writes it as DIR/job.yaml next to the log DIR/logs; run it with `campaign run DIR/job.yaml`.
seed: 0
experiment: open-bandit
profile-logs:                  # per item: rows, click rate, the IPS value of always showing it
  logs: logs
  out: out/log_profile.csv
select-features:               # which user features change which item is best
  logs: logs
  out: out/feature_scores.csv
  features: [user_feature_0, user_feature_1, user_feature_2, user_feature_3, position]
  propensity: propensity
fit-bandit:                    # a linear Thompson-sampling policy on 80% of the rounds ...
  logs: logs
  out: out/policy
  features: [user_feature_0, user_feature_1, user_feature_2, user_feature_3, position]
  policy: lin-ts
  split: train
evaluate-policy:               # ... and its value on the other 20%, by off-policy evaluation
  logs: logs
  out: out/policy_value.csv
  reward_features: [user_feature_0, user_feature_1, user_feature_2, user_feature_3, position]
  split: holdout
"""


def open_bandit_log(policy: str = "random", campaign: str = "all", wheel: str | Path | None = None) -> pd.DataFrame:
    """One logging policy's sample as the platform's decision log (columns: `LOG_COLUMNS_DOC`), one row per round.

    OBD does not publish user ids; the round's index stands in for one, so every row is its own user (the user
    split and the cross-fitting folds then split rounds).
    """
    logs, _ = read_open_bandit(policy, campaign, wheel)
    shown = pd.to_datetime(logs["timestamp"], utc=True, format="ISO8601")
    dates = shown.dt.normalize()
    table = pd.DataFrame({
        "user_id": logs.index.to_numpy(dtype=np.int64),
        "arm": logs["item_id"].to_numpy(dtype=np.int64),
        "reward": logs["click"].to_numpy(dtype=np.int64),
        "propensity": logs["propensity_score"].to_numpy(dtype=np.float64),
        "position": logs["position"].to_numpy(dtype=np.int64),
        "timestamp": shown.reset_index(drop=True),
        "day": (dates - dates.min()).dt.days.to_numpy(dtype=np.int64),
    })
    for column in sorted(c for c in logs.columns if c.startswith("user_feature_")):
        table[column] = logs[column].astype(str).to_numpy()
    affinity = {f"affinity_{c.removeprefix('user-item_affinity_')}": logs[c].to_numpy(dtype=np.float64)
                for c in logs.columns if c.startswith("user-item_affinity_")}
    return pd.concat([table, pd.DataFrame(affinity)], axis=1)


def _arrow_table(table: pd.DataFrame) -> pa.Table:
    """The log as an arrow table, its timestamps as UTC instants (converted here: pyarrow's own conversion of a
    tz-aware column goes through `Series.values`, which pandas 3.1 deprecates with a warning)."""
    stamps = pa.array(table["timestamp"].dt.tz_convert(None).to_numpy(), type=pa.timestamp("us", tz="UTC"))
    arrow = pa.Table.from_pandas(table.drop(columns="timestamp"), preserve_index=False)
    return arrow.add_column(table.columns.get_loc("timestamp"), "timestamp", stamps)


def import_open_bandit(out: str | Path, policy: str = "random", campaign: str = "all",
                       wheel: str | Path | None = None) -> tuple[Path, Path]:
    """Write `out/logs/part-00000.parquet` (`open_bandit_log`) and the job `out/job.yaml` (`JOB_FILE`) that runs
    profile-logs, select-features, fit-bandit and evaluate-policy on it; returns (logs folder, job file)."""
    out = ensure_writable(Path(out))
    table = open_bandit_log(policy, campaign, wheel)
    logs = out / "logs"
    with atomic_output(logs) as temporary:
        temporary.mkdir()
        pq.write_table(_arrow_table(table), temporary / "part-00000.parquet", compression="zstd")
    job = out / "job.yaml"
    with atomic_output(job) as temporary:
        temporary.write_text(JOB_FILE)
    return logs, job
