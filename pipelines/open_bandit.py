"""Reading the Open Bandit Dataset small sample straight out of the obp wheel (without importing obp).

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
import yaml

from pipelines.errors import InputError

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
