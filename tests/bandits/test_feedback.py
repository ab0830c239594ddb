"""LoggedFeedback (typed logs) and ContextEncoder (frame -> finite contexts)."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.base import clone

from bandits import ContextEncoder, LoggedFeedback

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def feedbacks(draw) -> LoggedFeedback:
    n = draw(st.integers(1, 60))
    d = draw(st.integers(1, 4))
    k = draw(st.integers(2, 5))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    labels = draw(st.sampled_from([tuple(range(10, 10 + k)), tuple(f"arm {j}" for j in range(k)),
                                   tuple(f"z{k - j}" for j in range(k))]))  # ints, strings, strings not sorted
    scale = draw(st.sampled_from([1e-300, 1.0, 1e300]))
    contexts = rng.normal(size=(n, d)) * scale
    propensities = draw(st.sampled_from([None, "random", "one"]))
    propensities = {None: None, "random": rng.uniform(1e-9, 1.0, n), "one": np.ones(n)}[propensities]
    costs = rng.exponential(size=n) if draw(st.booleans()) else None
    user_ids = rng.integers(0, 5, n) if draw(st.booleans()) else None
    return LoggedFeedback(contexts, rng.integers(0, k, n), rng.normal(size=n), propensities, labels,
                          tuple(f"f{j}" for j in range(d)), costs, user_ids)


@SETTINGS
@given(feedbacks())
def test_to_frame_from_frame_round_trip(feedback):
    frame = feedback.to_frame()
    back = LoggedFeedback.from_frame(frame, list(feedback.feature_names),
                                     propensity="propensity" if feedback.propensities is not None else None,
                                     cost="cost" if feedback.costs is not None else None,
                                     user_id="user_id" if feedback.user_ids is not None else None,
                                     arms=feedback.arm_labels)
    assert back.arm_labels == feedback.arm_labels
    assert back.feature_names == feedback.feature_names
    np.testing.assert_array_equal(back.contexts, feedback.contexts)
    np.testing.assert_array_equal(back.arms, feedback.arms)
    np.testing.assert_array_equal(back.rewards, feedback.rewards)
    for name in ("propensities", "costs", "user_ids"):
        ours, theirs = getattr(feedback, name), getattr(back, name)
        assert (ours is None) == (theirs is None), name
        if ours is not None:
            np.testing.assert_array_equal(np.asarray(theirs), np.asarray(ours))
    np.testing.assert_array_equal(back.arm_names(), feedback.arm_names())


def test_from_frame_defaults_to_sorted_labels_and_keeps_a_given_order():
    frame = pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0], "arm": ["b", "a", "c", "b"], "reward": [1.0, 0.0, 1.0, 0.0],
                          "propensity": [0.5, 0.25, 0.25, 0.5]})
    default = LoggedFeedback.from_frame(frame, ["x"])
    assert default.arm_labels == ("a", "b", "c")
    np.testing.assert_array_equal(default.arms, [1, 0, 2, 1])
    ordered = LoggedFeedback.from_frame(frame, ["x"], arms=["c", "b", "a", "never logged"])
    assert ordered.n_arms == 4
    np.testing.assert_array_equal(ordered.arms, [1, 2, 0, 1])
    np.testing.assert_array_equal(ordered.arm_names(), frame["arm"].to_numpy(dtype=object))


def test_subset_keeps_arms_features_and_every_column():
    rng = np.random.default_rng(0)
    n = 30
    feedback = LoggedFeedback(rng.normal(size=(n, 2)), rng.integers(0, 3, n), rng.random(n), rng.uniform(0.2, 1, n),
                              ("a", "b", "c"), ("u", "v"), rng.random(n), np.arange(n) % 7)
    rows = np.array([3, 1, 4, 15, 9])
    part = feedback.subset(rows)
    assert part.arm_labels == feedback.arm_labels and part.feature_names == feedback.feature_names
    for name in ("contexts", "arms", "rewards", "propensities", "costs", "user_ids"):
        np.testing.assert_array_equal(getattr(part, name), getattr(feedback, name)[rows])
    mask = feedback.rewards > 0.5
    assert feedback.subset(mask).n_rounds == mask.sum()
    assert feedback.subset(slice(0, 10)).n_rounds == 10




def test_user_ids_given_as_a_list_are_stored_as_an_array():
    rng = np.random.default_rng(1)
    n = 12
    user_ids = [f"user {i % 5}" for i in range(n)]
    feedback = LoggedFeedback(rng.normal(size=(n, 2)), rng.integers(0, 2, n), rng.random(n), np.full(n, 0.5),
                              ("a", "b"), user_ids=user_ids)
    assert isinstance(feedback.user_ids, np.ndarray)
    np.testing.assert_array_equal(feedback.user_ids, np.asarray(user_ids))
    rows = np.array([0, 7, 3])
    np.testing.assert_array_equal(feedback.subset(rows).user_ids, ["user 0", "user 2", "user 3"])
    mask = np.arange(n) % 2 == 0
    np.testing.assert_array_equal(feedback.subset(mask).user_ids, np.asarray(user_ids)[mask])
    np.testing.assert_array_equal(feedback.subset(slice(2, 4)).user_ids, ["user 2", "user 3"])
    assert feedback.to_frame()["user_id"].tolist() == user_ids
    with pytest.raises(ValueError, match=r"^user_id: expected 12 rows, got shape \(11,\)$"):
        LoggedFeedback(feedback.contexts, feedback.arms, feedback.rewards, None, ("a", "b"), user_ids=user_ids[:-1])


def test_other_columns_given_as_lists_are_arrays_too():
    feedback = LoggedFeedback([[0.0], [1.0], [2.0]], np.array([0, 1, 0]), [1.0, 0.0, 1.0], [0.5, 0.5, 1.0],
                              ["a", "b"], ["x"], [0.0, 1.5, 2.0])
    for name in ("contexts", "rewards", "propensities", "costs"):
        assert isinstance(getattr(feedback, name), np.ndarray), name
    assert feedback.arm_labels == ("a", "b") and feedback.feature_names == ("x",)
    np.testing.assert_array_equal(feedback.subset(np.array([2, 0])).costs, [2.0, 0.0])


# ----------------------------------------------------------------------------------------------- from_frame + encoder
@pytest.fixture
def shop() -> pd.DataFrame:
    """Decision logs with a categorical channel, a numeric basket value with missing values, a flag and an age."""
    return pd.DataFrame({
        "channel": ["app", "web", "app", None, "store", "app", "web", "app"],
        "basket_value": [10.0, np.nan, 30.0, 20.0, np.nan, 40.0, 50.0, 10.0],
        "age": [20, 30, 40, 50, 60, 30, 40, 50],
        "loyal": [True, False, True, True, False, False, True, True],
        "arm": ["b", "a", "b", "a", "b", "a", "b", "a"],
        "reward": [1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0],
        "propensity": [0.5] * 8,
    })


def test_from_frame_with_an_encoder_fits_it_and_encodes_categories_and_missing_values(shop):
    encoder = ContextEncoder(["channel", "basket_value", "age"])
    feedback = LoggedFeedback.from_frame(shop, encoder)
    assert hasattr(encoder, "features_")  # fitted on the frame
    assert feedback.feature_names == ("channel=app", "channel=store", "channel=web", "basket_value",
                                      "basket_value__missing", "age")
    assert np.isfinite(feedback.contexts).all()
    np.testing.assert_array_equal(feedback.contexts, encoder.transform(shop))
    contexts = pd.DataFrame(feedback.contexts, columns=list(feedback.feature_names))
    np.testing.assert_array_equal(contexts["channel=app"], [1, 0, 1, 0, 0, 1, 0, 1])
    np.testing.assert_array_equal(contexts["channel=web"], [0, 1, 0, 0, 0, 0, 1, 0])
    np.testing.assert_array_equal(contexts.loc[3, ["channel=app", "channel=store", "channel=web"]], 0.0)  # missing
    np.testing.assert_array_equal(contexts["basket_value__missing"], [0, 1, 0, 0, 1, 0, 0, 0])
    np.testing.assert_array_equal(contexts.loc[[1, 4], "basket_value"], 0.0)
    observed = shop["basket_value"].dropna()
    np.testing.assert_allclose(contexts.loc[observed.index, "basket_value"],
                               (observed - observed.mean()) / observed.std(ddof=0))
    np.testing.assert_allclose(contexts["age"], (shop["age"] - shop["age"].mean()) / shop["age"].std(ddof=0))
    assert feedback.arm_labels == ("a", "b")
    np.testing.assert_array_equal(feedback.rewards, shop["reward"])


def test_from_frame_with_a_fitted_encoder_keeps_its_fit(shop):
    encoder = ContextEncoder(["channel", "basket_value"]).fit(shop)
    later = shop.iloc[:3].assign(channel=["kiosk", "web", "app"], basket_value=[1_000.0, np.nan, 10.0])
    feedback = LoggedFeedback.from_frame(later, encoder)
    assert list(encoder.feature_names_out_) == list(feedback.feature_names)  # not refitted on the later frame
    np.testing.assert_array_equal(feedback.contexts, ContextEncoder(["channel", "basket_value"]).fit(shop)
                                  .transform(later))
    np.testing.assert_array_equal(feedback.contexts[0, :3], 0.0)  # an unseen channel


def test_from_frame_with_an_encoder_of_all_columns_leaves_out_the_log_columns(shop):
    """ContextEncoder() (features=None) encodes every column it is fitted on; from_frame fits it on the whole log
    frame, so the reward (and arm, propensity, user id) end up in the contexts that policies learn from."""
    feedback = LoggedFeedback.from_frame(shop.assign(user=np.arange(8) % 3), ContextEncoder(), user_id="user")
    leaked = [name for name in feedback.feature_names
              if name.split("=")[0] in ("arm", "reward", "propensity", "user")]
    assert leaked == []
    assert feedback.n_features == len(ContextEncoder(["channel", "basket_value", "age", "loyal"]).fit(shop)
                                      .get_feature_names_out())


# ----------------------------------------------------------------------------------------------- ContextEncoder
@SETTINGS
@given(st.integers(2, 80), st.integers(1, 4), st.integers(0, 2**32 - 1), st.sampled_from([1e-3, 1.0, 1e6]),
       st.floats(0.0, 0.5))
def test_context_encoder_standardizes_the_fitting_data(n, d, seed, scale, missing_share):
    rng = np.random.default_rng(seed)
    values = rng.normal(loc=rng.normal(size=d) * scale, scale=scale, size=(n, d))
    values[rng.random((n, d)) < missing_share] = np.nan
    values[0] = rng.normal(size=d)  # at least one finite value per column
    frame = pd.DataFrame(values, columns=[f"c{j}" for j in range(d)])
    encoder = ContextEncoder()
    encoded = encoder.fit_transform(frame)
    names = list(encoder.get_feature_names_out())
    assert np.isfinite(encoded).all()
    for j in range(d):
        column = values[:, j]
        finite = np.isfinite(column)
        z = encoded[:, names.index(f"c{j}")]
        np.testing.assert_array_equal(z[~finite], 0.0)
        if finite.all():
            assert f"c{j}__missing" not in names
        else:
            np.testing.assert_array_equal(encoded[:, names.index(f"c{j}__missing")], (~finite).astype(float))
        if np.unique(column[finite]).size > 1:
            assert abs(z[finite].mean()) < 1e-9
            assert z[finite].std() == pytest.approx(1.0, rel=1e-9)
        else:  # a constant column: sd 1 is used, so it encodes to 0 instead of dividing by zero
            np.testing.assert_array_equal(z[finite], 0.0)


def test_context_encoder_uses_the_fit_statistics_on_new_rows():
    fit = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0]})
    encoder = ContextEncoder(["x"]).fit(fit)
    mean, sd = 2.5, np.std([1.0, 2.0, 3.0, 4.0])
    np.testing.assert_allclose(encoder.transform(pd.DataFrame({"x": [2.5, 10.0, -1.0]}))[:, 0],
                               [0.0, 7.5 / sd, -3.5 / sd])
    assert encoder.numeric_["x"] == (mean, sd, False)
    # missing at transform time only: 0, and no indicator column (the fitted layout does not change)
    later = encoder.transform(pd.DataFrame({"x": [np.nan, 4.0, None]}))
    assert later.shape == (3, 1)
    np.testing.assert_allclose(later[:, 0], [0.0, 1.5 / sd, 0.0])


def test_context_encoder_missing_numbers_are_zero_with_an_indicator():
    frame = pd.DataFrame({"x": pd.array([1.0, None, 3.0, None], dtype="Float64"), "y": [1, 2, 3, 4]})
    encoder = ContextEncoder(["x", "y"]).fit(frame)
    assert list(encoder.get_feature_names_out()) == ["x", "x__missing", "y"]
    encoded = encoder.transform(frame)
    np.testing.assert_allclose(encoded[:, 0], [-1.0, 0.0, 1.0, 0.0])
    np.testing.assert_array_equal(encoded[:, 1], [0.0, 1.0, 0.0, 1.0])
    # a text value where a number is expected counts as missing, never as an error or a NaN
    odd = encoder.transform(pd.DataFrame({"x": ["3", "n/a"], "y": [1, 4]}))
    np.testing.assert_allclose(odd[:, :2], [[1.0, 0.0], [0.0, 1.0]])


def test_context_encoder_unseen_and_missing_levels_are_all_zeros():
    fit = pd.DataFrame({"channel": ["app", "web", "app", "store"], "loyal": [True, False, True, True]})
    encoder = ContextEncoder().fit(fit)
    assert list(encoder.get_feature_names_out()) == ["channel=app", "channel=store", "channel=web", "loyal=False",
                                                     "loyal=True"]
    new = pd.DataFrame({"channel": ["web", "kiosk", None, np.nan], "loyal": [False, True, None, True]})
    np.testing.assert_array_equal(encoder.transform(new), [[0, 0, 1, 1, 0],
                                                           [0, 0, 0, 0, 1],
                                                           [0, 0, 0, 0, 0],
                                                           [0, 0, 0, 0, 1]])
    categorical = new.assign(channel=pd.Categorical(new["channel"], categories=["web", "kiosk", "app"]))
    np.testing.assert_array_equal(encoder.transform(categorical)[:, :3], [[0, 0, 1], [0, 0, 0], [0, 0, 0], [0, 0, 0]])


def test_context_encoder_max_levels_keeps_the_most_frequent():
    frame = pd.DataFrame({"city": ["b"] * 5 + ["d"] * 4 + ["a"] * 2 + ["c"] + [None] * 6})
    encoder = ContextEncoder(["city"], max_levels=2).fit(frame)
    assert list(encoder.get_feature_names_out()) == ["city=b", "city=d"]  # sorted, the two most frequent
    encoded = encoder.transform(pd.DataFrame({"city": ["a", "b", "c", "d", None]}))
    np.testing.assert_array_equal(encoded, [[0, 0], [1, 0], [0, 0], [0, 1], [0, 0]])
    assert list(ContextEncoder(["city"], max_levels=3).fit(frame).get_feature_names_out()) == [
        "city=a", "city=b", "city=d"]
    assert ContextEncoder(["city"]).fit(frame).get_feature_names_out().tolist() == ["city=a", "city=b", "city=c",
                                                                                   "city=d"]


def test_context_encoder_is_a_scikit_learn_transformer(shop):
    encoder = ContextEncoder(["channel", "basket_value"], max_levels=2)
    fresh = clone(encoder)
    assert fresh is not encoder and fresh.get_params() == {"features": ["channel", "basket_value"], "max_levels": 2}
    with pytest.raises(ValueError, match="not fitted"):
        fresh.get_feature_names_out()
    with pytest.raises(ValueError, match="not fitted"):
        fresh.transform(shop)
    encoder.fit(shop)
    refit = clone(encoder)
    assert not hasattr(refit, "features_")  # clone copies the settings, not the fit
    np.testing.assert_array_equal(refit.fit(shop).transform(shop), encoder.transform(shop))
    np.testing.assert_array_equal(ContextEncoder(["channel", "basket_value"], max_levels=2).fit_transform(shop),
                                  encoder.transform(shop))
    names = encoder.get_feature_names_out()
    assert isinstance(names, np.ndarray) and names.dtype == object
    assert list(names) == ["channel=app", "channel=web", "basket_value", "basket_value__missing"]
    np.testing.assert_array_equal(encoder.get_feature_names_out(["ignored"]), names)
    assert encoder.transform(shop).shape == (len(shop), len(names))


def test_context_encoder_survives_pickling(shop):
    encoder = ContextEncoder(["channel", "basket_value", "loyal"]).fit(shop)
    again = pickle.loads(pickle.dumps(encoder))
    np.testing.assert_array_equal(again.transform(shop), encoder.transform(shop))
    np.testing.assert_array_equal(again.get_feature_names_out(), encoder.get_feature_names_out())


# ----------------------------------------------------------------------------------------------- identity
def test_feedback_equality_is_identity_and_never_raises():
    rng = np.random.default_rng(2)
    n = 10
    make = lambda: LoggedFeedback(np.zeros((n, 2)), np.arange(n) % 2, np.ones(n), np.full(n, 0.5), ("a", "b"))
    first, twin = make(), make()
    assert first == first
    assert not (first == twin) and first != twin  # same values, another object: not equal, and no array truth error
    assert first != "feedback" and first != None  # noqa: E711
    assert [twin, first].index(first) == 1
    assert first in [twin, first] and first not in [twin]
    assert len({first, twin, first}) == 2  # hashable by identity
    other = LoggedFeedback(rng.normal(size=(n, 2)), rng.integers(0, 2, n), rng.random(n), None, ("a", "b"))
    assert other != first
