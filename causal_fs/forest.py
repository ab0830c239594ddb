"""Model-embedded baseline: heterogeneity importances from an EconML causal forest.

`CausalForestDML(discrete_treatment=True)` with the control arm as the baseline treatment, fitted on at most
`forest_rows` rows (a seeded sample), with fixed, explicit nuisance models (gradient boosting with 100 trees,
2-fold cross-fitting) rather than EconML's cross-validated model selection, so the cost is predictable.
Categorical features are one-hot encoded on the same levels as the bins; NaN is imputed with the median and
flagged with an indicator. A feature's importance is the sum over its encoded columns (they sum to 1 overall).
Orders of magnitude slower than the filters; it exists so a ranking from a model can be set beside them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from causal_fs.binning import numeric_values
from causal_fs.options import ScoringOptions
from causal_fs.plan import Plan


def encode_features(frame: pd.DataFrame, plan: Plan) -> tuple[np.ndarray, np.ndarray]:
    """A numeric design matrix and, per column, the index of the feature it encodes."""
    columns, owners = [], []
    for f, feature in enumerate(plan.bins):
        values = frame[feature.name]
        if feature.categorical:
            for level in feature.levels:
                columns.append((values.astype(object) == level).to_numpy(dtype=np.float64))
                owners.append(f)
            continue
        x = numeric_values(values)
        missing = np.isnan(x)
        columns.append(np.where(missing, np.nanmedian(x), x))
        owners.append(f)
        if missing.any():
            columns.append(missing.astype(np.float64))
            owners.append(f)
    return np.column_stack(columns), np.asarray(owners)


def causal_forest_importance(frame: pd.DataFrame, plan: Plan, options: ScoringOptions) -> np.ndarray:
    """Per-feature heterogeneity importance (sums to 1 across features) from a seeded causal forest."""
    from econml.dml import CausalForestDML  # slow import (about 6 s): only on this path
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    if len(frame) > options.forest_rows:
        frame = frame.sample(n=options.forest_rows, random_state=options.seed % (1 << 32))
    design, owners = encode_features(frame, plan)
    arms = frame[options.arm_col].astype(object).to_numpy()
    control = plan.arms[plan.control]
    categories = [control, *(arm for arm in plan.arms if arm != control)]
    seed = options.seed % (1 << 31)
    forest = CausalForestDML(
        model_y=HistGradientBoostingRegressor(max_iter=100, random_state=seed),
        model_t=HistGradientBoostingClassifier(max_iter=100, random_state=seed),
        discrete_treatment=True, categories=categories, cv=2, n_estimators=200, random_state=seed)
    forest.fit(frame[options.reward_col].to_numpy(dtype=np.float64), arms, X=design)
    importance = np.asarray(forest.feature_importances_, dtype=np.float64).reshape(-1, design.shape[1]).mean(axis=0)
    return np.bincount(owners, weights=importance, minlength=len(plan.bins))
