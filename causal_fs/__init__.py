"""Causal feature selection: which user features change *which arm is best*, with significance, at any scale.

- `score_features(data, features, ...)`: HIE, HDD and their combination, the uplift filters (KL, ED, Chi, F,
  LR) and an EconML causal-forest baseline, with permutation p-values, BH q-values and bootstrap intervals, on a
  pandas or a Dask DataFrame.
- `HTEFeatureSelector`: the same as a scikit-learn selector.

Method and readings: docs/feature_selection.md, 'Definitions' and 'How it works, and the readings we chose'.
"""

from causal_fs.options import METHODS
from causal_fs.scoring import score_features
from causal_fs.selector import HTEFeatureSelector, primary_method, select_features

__all__ = ["METHODS", "HTEFeatureSelector", "primary_method", "score_features", "select_features"]
