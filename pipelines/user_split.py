"""The user split: which users a stage learns from and which it evaluates on, by a salted hash of the user id.

Without a user id column (`user_id: null`), the split is by row: a salted hash of the row's content, every column of
the log as read (`row_key`), the same in every stage, partition and run. Rows of one user may then land on both
sides, so a holdout estimate is optimistic when users repeat; `ROW_SPLIT_NOTE` says so wherever it is used.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from campaign_core import salted_uniform, seeded_salt

ROW_SPLIT_NOTE = ("no user id column (user_id: null): the split and the cross-fitting folds are by row, so one "
                  "user's rows may land on both sides; when users repeat, holdout estimates are optimistic")


class RowSplitWarning(UserWarning):
    """The user split is by row because the log has no user id column."""


@dataclass(frozen=True)
class UserSplit:
    """Which users a stage works on: all, or the train or holdout side of a salted hash of the user id (of the
    row's content over the `row_key` columns when `user_id` is None)."""

    side: str  # "all", "train" or "holdout"
    salt: str
    holdout_share: float
    user_id: str | None = "user_id"
    row_key: tuple[str, ...] = ()
    part: tuple[str, float, str] | None = None  # ("held back" or "rest", share, salt): a part of this side's users

    def held_back(self, share: float, salt: str, held: bool) -> UserSplit:
        """A part of this side's users by a second salted hash: the `share` held back (`held`), or the rest."""
        return replace(self, part=("held back" if held else "rest", share, salt))

    @property
    def columns(self) -> list[str]:
        """The columns the split reads: the user id, else the row key (none for side "all")."""
        if self.side == "all" and self.part is None:
            return []
        return [self.user_id] if self.user_id else list(self.row_key)

    def mask(self, chunk: pd.DataFrame) -> np.ndarray:
        """True for the chunk's rows of the users on this side (and in its part)."""
        if self.side == "all" and self.part is None:
            return np.ones(len(chunk), dtype=bool)
        keys = chunk[self.user_id].to_numpy() if self.user_id else row_keys(chunk[list(self.row_key)])
        mask = np.ones(len(chunk), dtype=bool)
        if self.side != "all":
            holdout = in_holdout(keys, self.holdout_share, self.salt)
            mask = holdout if self.side == "holdout" else ~holdout
        if self.part is not None:
            which, share, salt = self.part
            held = in_holdout(keys, share, salt)
            mask &= held if which == "held back" else ~held
        return mask

    def rows(self, chunk: pd.DataFrame) -> pd.DataFrame:
        return chunk if self.side == "all" and self.part is None else chunk[self.mask(chunk)]

    def other_side(self) -> UserSplit | None:
        """The users not on this side (None for "all": there are none)."""
        sides = {"train": "holdout", "holdout": "train"}
        return replace(self, side=sides[self.side]) if self.side in sides else None

    def describe(self) -> str:
        """The side in words, e.g. "holdout, 20% of users"."""
        unit = "users" if self.user_id else "rows"
        if self.side == "all":
            text = "all rows"
        else:
            share = self.holdout_share if self.side == "holdout" else 1 - self.holdout_share
            text = f"{self.side}, {share:.0%} of {unit}"
        if self.part is not None:
            which, share, _ = self.part
            text += f", {which} ({share if which == 'held back' else 1 - share:.0%} of them)"
        return text


def split_salt(seed: int) -> str:
    """The salt of the user split of a job with this seed."""
    return seeded_salt("user-split", seed)


def row_keys(frame: pd.DataFrame) -> np.ndarray:
    """A 64-bit key per row from its values (pandas' stable hash of each row, index ignored): equal rows get equal
    keys in any partition or process."""
    return pd.util.hash_pandas_object(frame, index=False).to_numpy()


def in_holdout(user_ids: pd.Series | np.ndarray, share: float, salt: str) -> np.ndarray:
    """True for the users in the holdout: a salted hash of the id, the same in every stage, partition and run."""
    return salted_uniform(np.asarray(user_ids), salt) < share
