"""The user split: which users a stage learns from and which it evaluates on, by a salted hash of the user id."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from campaign_core import salted_uniform, seeded_salt


@dataclass(frozen=True)
class UserSplit:
    """Which users a stage works on: all, or the train or holdout side of a salted hash of the user id."""

    side: str  # "all", "train" or "holdout"
    salt: str
    holdout_share: float
    user_id: str = "user_id"

    def mask(self, chunk: pd.DataFrame) -> np.ndarray:
        """True for the chunk's rows of the users on this side."""
        if self.side == "all":
            return np.ones(len(chunk), dtype=bool)
        holdout = in_holdout(chunk[self.user_id].to_numpy(), self.holdout_share, self.salt)
        return holdout if self.side == "holdout" else ~holdout

    def rows(self, chunk: pd.DataFrame) -> pd.DataFrame:
        return chunk if self.side == "all" else chunk[self.mask(chunk)]


def split_salt(seed: int) -> str:
    """The salt of the user split of a job with this seed."""
    return seeded_salt("user-split", seed)


def in_holdout(user_ids: pd.Series | np.ndarray, share: float, salt: str) -> np.ndarray:
    """True for the users in the holdout: a salted hash of the id, the same in every stage, partition and run."""
    return salted_uniform(np.asarray(user_ids), salt) < share
