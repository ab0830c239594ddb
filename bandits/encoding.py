"""From a users' feature frame to the numeric contexts bandits need: standardized numbers and one-hot categories.

Real logs have missing values and string categories; policies need finite numbers. The encoder makes the choice
explicit and keeps it with the policy (it is pickled into the logged model), so scoring tomorrow encodes exactly as
training did today:
- numeric column: (x - mean) / sd from the fitting data; a missing value becomes 0 (the mean) and, when the column
  had missing values at fit time, a `<name>__missing` indicator column is added;
- categorical column (object, string, category, bool): one column per level seen at fit time (at most
  `max_levels`, the most frequent); unseen levels and missing values are all zeros.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from campaign_core import InputError


def _is_categorical(series: pd.Series) -> bool:
    return not pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series)


class ContextEncoder(TransformerMixin, BaseEstimator):
    """Encode `features` of a DataFrame into a finite float64 array (see the module docstring for the rules)."""

    def __init__(self, features: Sequence[str] | None = None, max_levels: int = 20):
        self.features = features
        self.max_levels = max_levels

    def fit(self, frame: pd.DataFrame, y=None) -> ContextEncoder:
        features = list(self.features) if self.features is not None else list(frame.columns)
        missing = [name for name in features if name not in frame.columns]
        if missing:
            raise InputError(f"features: columns not in the frame: {missing}")
        if not features:
            raise InputError("features: need at least one feature to encode")
        self.numeric_: dict[str, tuple[float, float, bool]] = {}
        self.levels_: dict[str, list] = {}
        names: list[str] = []
        for name in features:
            column = frame[name]
            if _is_categorical(column):
                counts = column.dropna().astype(str).value_counts(sort=True)
                self.levels_[name] = sorted(counts.index[:self.max_levels].tolist())
                names += [f"{name}={level}" for level in self.levels_[name]]
            else:
                values = column.to_numpy(dtype=np.float64, na_value=np.nan)
                finite = values[np.isfinite(values)]
                if finite.size == 0:
                    raise InputError(f"{name}: no finite values to encode")
                sd = float(finite.std())
                has_missing = bool(finite.size < values.size)
                self.numeric_[name] = (float(finite.mean()), sd if sd > 0 else 1.0, has_missing)
                names.append(name)
                if has_missing:
                    names.append(f"{name}__missing")
        self.features_ = features
        self.feature_names_out_ = np.asarray(names, dtype=object)
        return self

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        check_is_fitted(self, "features_")
        missing = [name for name in self.features_ if name not in frame.columns]
        if missing:
            raise InputError(f"features: columns not in the frame: {missing}")
        blocks = []
        for name in self.features_:
            column = frame[name]
            if name in self.levels_:
                text = column.astype(str).where(column.notna(), None).to_numpy()
                blocks.append(np.column_stack([text == level for level in self.levels_[name]]).astype(np.float64)
                              if self.levels_[name] else np.zeros((len(frame), 0)))
            else:
                mean, sd, has_missing = self.numeric_[name]
                values = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
                absent = ~np.isfinite(values)
                blocks.append(np.where(absent, 0.0, (values - mean) / sd)[:, None])
                if has_missing:
                    blocks.append(absent[:, None].astype(np.float64))
        return np.hstack(blocks) if blocks else np.zeros((len(frame), 0))

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        check_is_fitted(self, "features_")
        return self.feature_names_out_
