"""Bad input: one clear line naming the column or key, raised before any work."""

from __future__ import annotations

import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest

from campaign_core import InputError
from causal_fs import HTEFeatureSelector, score_features
from pipelines.execution import Partitions


@pytest.fixture
def logs() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = 200
    return pd.DataFrame({"x": rng.normal(size=n), "c": rng.choice(["u", "v"], n), "arm": rng.integers(0, 2, n),
                         "reward": (rng.random(n) < 0.3).astype(float), "propensity": 0.5})


CASES = [
    (lambda d: d.assign(arm=1), {}, r"arm: needs at least 2 arms to compare, found 1"),
    (lambda d: d, {"features": ["x", "nope"]}, r"features: column 'nope' is not in the data"),
    (lambda d: d.assign(reward=np.where(d["x"] > 0, "yes", "no")), {}, r"reward: must be numeric, got dtype"),
    (lambda d: d.assign(propensity=np.where(d["x"] > 1, 1.5, 0.5)), {"propensity_col": "propensity"},
     r"propensity: \d+ of 200 rows are outside \(0, 1\]"),
    (lambda d: d.assign(propensity=0.0), {"propensity_col": "propensity"}, r"propensity: 200 of 200 rows are outside"),
    (lambda d: d.assign(x=np.nan), {}, r"x: every value is missing \(all 200 rows are NaN\)"),
    (lambda d: d, {"n_bins": 1}, r"n_bins: must be an integer >= 2, got 1"),
    (lambda d: d, {"methods": ("hie", "gini")}, r"methods: unknown \['gini'\]"),
    (lambda d: d.assign(reward=np.where(d["x"] > 1, np.inf, 0.0)), {}, r"reward: \d+ of 200 rows are NaN or infinite"),
    (lambda d: d.assign(arm=np.where(d["x"] > 1, None, "a")), {}, r"arm: \d+ of 200 rows have no arm"),
    (lambda d: d, {"control": "placebo", "methods": ("kl",)}, r"control: arm 'placebo' is not in arm"),
    (lambda d: d, {"compat": "econml"}, r"compat: must be None or one of \['causalml'\]"),
    (lambda d: d, {"features": ["x", "c"], "compat": "causalml", "methods": ("kl",)},
     r"compat: CausalML's filters bin numeric features only; 'c' is categorical"),
    (lambda d: d, {"features": ["x", "arm"]}, r"features: \['arm'\] is the arm, reward, propensity or user id column"),
    (lambda d: d, {"n_permutations": -1}, r"n_permutations: must be an integer >= 0"),
]


@pytest.mark.parametrize(("change", "kwargs", "message"), CASES)
def test_bad_input_raises_one_line(logs, change, kwargs, message):
    kwargs = {"features": ["x", "c"], **kwargs}
    with pytest.raises(InputError, match=message) as error:
        score_features(change(logs), **kwargs)
    assert "\n" not in str(error.value)


def test_bad_values_in_partitions_are_found_before_scoring(logs, monkeypatch):
    import causal_fs.scoring as scoring

    def must_not_run(*args, **kwargs):
        raise AssertionError("tables were built before the input was checked")

    monkeypatch.setattr(scoring.TablePass, "partial", must_not_run)
    bad = Partitions(dd.from_pandas(logs.assign(propensity=np.where(logs["x"] > 1, 2.0, 0.5)), npartitions=3))
    with pytest.raises(InputError, match=r"propensity: \d+ of 200 rows are outside"):
        score_features(bad, ["x"], propensity_col="propensity")


def test_selector_rejects_missing_arms_and_bad_alpha(logs):
    with pytest.raises(ValueError, match="arms: fit needs the arm of every row"):
        HTEFeatureSelector().fit(logs[["x"]], logs["reward"])
    with pytest.raises(ValueError, match="alpha: must be in"):
        HTEFeatureSelector(alpha=0).fit(logs[["x"]], logs["reward"], arms=logs["arm"])
