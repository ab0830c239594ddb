"""Served decisions: the logged propensity is the probability the draw was made with, draws are reproducible per
(user, decision key) and independent across users and keys; the policy models load, take request params and serve
over HTTP from a shell whose PATH does not hold the environment's scripts folder."""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from scipy.stats import chi2_contingency, chisquare

from bandits.encoding import ContextEncoder
from bandits.feedback import LoggedFeedback
from bandits.policies.base import sample_from
from bandits.policies.context_free import ThompsonSampling
from budget_rl.mixed import MixedPolicy
from campaign_core import InputError
from pipelines.models import FittedMixedPolicy, FittedPolicy, mixed_policy_arguments, quiet_pyfunc, save_policy_model
from tests.services import free_port, service_env, start, stop, tail

N = 5_000
FEATURES = ["basket_value", "channel"]
ARMS = ["a", "b", "c", "d"]
KEY = "2026-11-03"


@pytest.fixture(scope="module")
def fitted() -> FittedPolicy:
    """Thompson sampling after a few logged rewards: every user gets the probabilities P (about .53/.29/.07/.11)."""
    frame = pd.DataFrame({"basket_value": np.linspace(5.0, 80.0, 15), "channel": ["app", "web", "store"] * 5})
    encoder = ContextEncoder(features=FEATURES).fit(frame)
    arms = np.repeat([0, 1, 2, 3], [4, 3, 6, 2])
    rewards = np.array([1, 1, 0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0], dtype=float)
    feedback = LoggedFeedback(encoder.transform(frame), arms, rewards, None, tuple(ARMS),
                              tuple(encoder.feature_names_out_))
    return FittedPolicy(encoder, ThompsonSampling().fit(feedback))


def requests(n: int, **columns) -> pd.DataFrame:
    """n requests with identical contexts."""
    return pd.DataFrame({"basket_value": np.full(n, 30.0), "channel": ["app"] * n, **columns})


def probabilities(fitted: FittedPolicy) -> np.ndarray:
    row = fitted.probabilities(requests(1))[0]
    assert row.min() > 0.05 and np.ptp(row) > 0.4  # every arm is drawn often enough for the test, unevenly
    return row


def assert_frequencies_match(arms: pd.Series, expected: np.ndarray) -> None:
    counts = arms.value_counts().reindex(ARMS, fill_value=0).to_numpy()
    assert chisquare(counts, expected * len(arms)).pvalue > 0.001, (counts, expected * len(arms))


@pytest.mark.parametrize("user_ids", [np.arange(N), np.array([f"user-{i}" for i in range(N)], dtype=object)],
                         ids=["integer ids", "text ids"])
def test_hashed_draws_give_arm_frequencies_equal_to_the_reported_propensities(fitted, user_ids):
    expected = probabilities(fitted)
    decided = fitted.decide(requests(N, user_id=user_ids), decision_key=KEY)
    assert_frequencies_match(decided["arm"], expected)
    np.testing.assert_array_equal(decided["propensity"], expected[[ARMS.index(a) for a in decided["arm"]]])
    assert (decided["decision_key"] == KEY).all() and (decided["draw_seed"] == -1).all()


def test_a_request_repeats_per_user_and_key_and_draws_independently_across_keys(fitted):
    expected = probabilities(fitted)
    users = np.arange(N)
    first = fitted.decide(requests(N, user_id=users), decision_key=KEY)
    # one request per user, in another order, or another batch: the same arms (a row's draw depends on its user and
    # key alone, so the batch frequencies tested above are those of single-row requests)
    order = np.random.default_rng(3).permutation(N)[:200]
    for user in order:
        alone = fitted.decide(requests(1, user_id=[user]), decision_key=KEY)
        assert alone["arm"].iloc[0] == first["arm"].iloc[user]
    shuffled = fitted.decide(requests(len(order), user_id=users[order]), decision_key=KEY)
    assert shuffled["arm"].tolist() == first["arm"].iloc[order].tolist()
    # another key: arms independent of the first key's (and still at the reported frequencies)
    second = fitted.decide(requests(N, user_id=users), decision_key="2026-11-04")
    assert_frequencies_match(second["arm"], expected)
    assert (second["arm"] != first["arm"]).any()
    assert chi2_contingency(pd.crosstab(first["arm"], second["arm"])).pvalue > 0.001
    # one user, a fresh request id per request (the key as a column): the reported frequencies again
    per_request = fitted.decide(requests(N, user_id=np.full(N, 42), decision_key=np.arange(N)))
    assert_frequencies_match(per_request["arm"], expected)
    assert per_request["decision_key"].tolist() == [str(i) for i in range(N)]


def test_the_default_decision_key_is_todays_date_in_utc(fitted):
    before = datetime.now(UTC).date().isoformat()
    decided = fitted.decide(requests(3, user_id=[1, 2, 3]))
    after = datetime.now(UTC).date().isoformat()
    assert decided["decision_key"].iloc[0] in {before, after}
    assert decided["arm"].tolist() == fitted.decide(requests(3, user_id=[1, 2, 3]),
                                                    decision_key=decided["decision_key"].iloc[0])["arm"].tolist()


def test_a_seeded_draw_is_numpys_draw_of_the_batch(fitted):
    frame = requests(500)
    decided = fitted.decide(frame, random_state=5)
    codes = sample_from(fitted.probabilities(frame), 5)  # numpy's default_rng(5), inverse CDF row by row
    assert decided["arm"].tolist() == [ARMS[c] for c in codes]
    assert (decided["draw_seed"] == 5).all() and (decided["decision_key"] == "").all()
    assert fitted.decide(frame.assign(user_id=np.arange(500)), random_state=5)["arm"].equals(decided["arm"])


def test_without_user_ids_each_request_draws_a_fresh_recorded_seed(fitted):
    expected = probabilities(fitted)
    one, two = fitted.decide(requests(N)), fitted.decide(requests(N))
    assert one["draw_seed"].nunique() == 1 and one["draw_seed"].iloc[0] != two["draw_seed"].iloc[0]
    assert 0 <= one["draw_seed"].iloc[0] < 2**53
    assert_frequencies_match(one["arm"], expected)
    replay = fitted.decide(requests(N), random_state=int(one["draw_seed"].iloc[0]))
    assert replay["arm"].equals(one["arm"])


@pytest.mark.parametrize(("frame", "kwargs", "message"), [
    (requests(2, user_id=[1, 2], decision_key=["r1", "r2"]), {"decision_key": KEY}, "decision_key: given both"),
    (requests(2, user_id=[1, 2], decision_key=["r1", None]), {}, "decision_key: 1 row(s) without a key"),
    (requests(2, user_id=[1, None]), {}, "user_id: 1 row(s) without a user id"),
    (requests(2), {"decision_key": KEY}, "decision_key: a keyed draw hashes the user id"),
    (requests(2, user_id=[1, 2]), {"decision_key": ""}, "decision_key: need a non-empty string"),
    (requests(2), {"random_state": -1}, "random_state: need a non-negative integer seed"),
    (requests(2), {"random_state": True}, "random_state: need a non-negative integer seed"),
    (requests(2, user_id=[1, 2]), {"random_state": 1, "decision_key": KEY}, "random_state: a seeded draw takes no"),
])
def test_bad_requests_are_one_line_input_errors(fitted, frame, kwargs, message):
    with pytest.raises(InputError) as error:
        fitted.decide(frame, **kwargs)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


# ---------------------------------------------------------------------------- the mixed policy
class Constant:
    """A component that takes one action everywhere."""

    def __init__(self, action: int):
        self.action = action

    def act(self, states: np.ndarray, day: int) -> np.ndarray:
        return np.full(len(states), self.action)


class Threshold:
    """A component that takes action 1 where the first state column is positive, else action 0."""

    def act(self, states: np.ndarray, day: int) -> np.ndarray:
        return (states[:, 0] > 0).astype(np.int64)


WEIGHTS = np.array([0.5, 0.3, 0.2])


@pytest.fixture(scope="module")
def mixed() -> FittedMixedPolicy:
    policy = MixedPolicy((Constant(0), Constant(1), Threshold()), WEIGHTS, np.zeros((3, 2)))
    return FittedMixedPolicy(policy, ["control", "coupon"], ["state_x"], salt="campaign-7")


def transitions(users, days=(0,), state=1.0) -> pd.DataFrame:
    users = np.asarray(users)
    return pd.DataFrame({"user_id": np.repeat(users, len(days)), "day": np.tile(days, len(users)),
                         "state_x": np.full(len(users) * len(days), state)})


def test_mixed_policy_components_are_drawn_at_their_weights_once_per_user(mixed):
    frame = transitions(np.arange(N), days=(0, 1, 2))
    decided = mixed.decide(frame)
    per_user = decided.groupby(frame["user_id"])["component"]
    assert (per_user.nunique() == 1).all()  # the same component every day of the campaign
    components = per_user.first()
    counts = np.bincount(components, minlength=3)
    assert chisquare(counts, WEIGHTS * N).pvalue > 0.001, counts
    np.testing.assert_array_equal(decided["component_weight"], WEIGHTS[decided["component"]])
    # the served draw is the campaign's draw: MixedPolicy.assign of the user ids under the model's salt
    np.testing.assert_array_equal(components.to_numpy(), mixed.mixed.assign(np.arange(N), salt="campaign-7"))
    assert (decided["decision_key"] == "").all()


@pytest.mark.parametrize(("state", "propensity"), [(1.0, {"control": 0.5, "coupon": 0.5}),
                                                   (-1.0, {"control": 0.7, "coupon": 0.3})])
def test_mixed_policy_propensity_is_the_summed_weight_of_the_components_taking_the_action(mixed, state, propensity):
    decided = mixed.decide(transitions(np.arange(N), state=state))
    assert set(decided["action"]) == set(propensity)
    np.testing.assert_allclose(decided["propensity"], decided["action"].map(propensity), rtol=0, atol=1e-15)
    counts = decided["action"].value_counts().reindex(list(propensity)).to_numpy()
    assert chisquare(counts, np.array(list(propensity.values())) * N).pvalue > 0.001


def test_a_decision_key_redraws_the_mixed_policy_independently(mixed):
    users = np.arange(N)
    campaign = mixed.decide(transitions(users))["component"]
    keyed = mixed.decide(transitions(users), decision_key="spring-2027")
    assert (keyed["decision_key"] == "spring-2027").all()
    assert chisquare(np.bincount(keyed["component"], minlength=3), WEIGHTS * N).pvalue > 0.001
    assert chi2_contingency(pd.crosstab(campaign.to_numpy(), keyed["component"].to_numpy())).pvalue > 0.001
    again = mixed.decide(transitions(users[::-1]), decision_key="spring-2027")["component"]
    np.testing.assert_array_equal(again.to_numpy()[::-1], keyed["component"].to_numpy())


# ---------------------------------------------------------------------------- the pyfunc models
def test_policy_model_takes_optional_request_params(fitted, tmp_path):
    save_policy_model(fitted, tmp_path / "policy", requests(5))
    signature = yaml.safe_load((tmp_path / "policy" / "MLmodel").read_text())["signature"]
    params = {p["name"]: p for p in json.loads(signature["params"])}
    assert params["random_state"]["default"] is None and params["random_state"]["type"] == "long"
    assert params["decision_key"]["default"] is None and params["decision_key"]["type"] == "string"
    model = mlflow.pyfunc.load_model(str(tmp_path / "policy"))
    frame = requests(50, user_id=[f"u{i}" for i in range(50)])
    served = model.predict(frame, params={"decision_key": KEY})
    pd.testing.assert_frame_equal(served, fitted.decide(frame, decision_key=KEY), check_dtype=False)
    assert model.predict(frame)["decision_key"].iloc[0] == datetime.now(UTC).date().isoformat()
    seeded = model.predict(requests(50), params={"random_state": 9})
    assert seeded["arm"].equals(fitted.decide(requests(50), random_state=9)["arm"])
    with pytest.raises(mlflow.exceptions.MlflowException, match="decision_key: a keyed draw hashes the user id"):
        model.predict(requests(2), params={"decision_key": KEY})


def test_mixed_policy_model_takes_a_decision_key(mixed, tmp_path):
    example = transitions([11, 12, 13])
    with quiet_pyfunc():
        mlflow.pyfunc.save_model(path=str(tmp_path / "mixed"), **mixed_policy_arguments(mixed, example, tmp_path))
    model = mlflow.pyfunc.load_model(str(tmp_path / "mixed"))
    frame = transitions([f"u{i}" for i in range(40)], days=(0, 1))
    pd.testing.assert_frame_equal(model.predict(frame), mixed.decide(frame), check_dtype=False)
    pd.testing.assert_frame_equal(model.predict(frame, params={"decision_key": "spring-2027"}),
                                  mixed.decide(frame, decision_key="spring-2027"), check_dtype=False)


def invocation(port: int, body: dict) -> urllib.request.Request:
    """POST of `body` (JSON) to the local scoring server's /invocations."""
    return urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=json.dumps(body).encode(),
                                  headers={"Content-Type": "application/json"})


@pytest.mark.real_services
def test_campaign_serve_answers_invocations_without_the_environment_on_path(fitted, tmp_path):
    """`campaign serve -m FOLDER`, exactly as docs/bandits.md shows it, from a shell whose PATH lacks the
    virtual environment's bin (where `mlflow models serve` fails with `uvicorn: not found`)."""
    save_policy_model(fitted, tmp_path / "policy", requests(5))
    scripts = Path(sys.executable).parent
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                           if p and Path(p).resolve() != scripts.resolve())
    env = {k: v for k, v in service_env(PATH=path).items() if k != "VIRTUAL_ENV"}
    port = free_port()
    server = start([str(scripts / "campaign"), "serve", "-m", "policy", "-p", str(port)], tmp_path / "serve.log",
                   tmp_path, env)
    body = {"dataframe_split": {"columns": [*FEATURES, "user_id"],
                                "data": [[30.0, "app", 1], [12.5, "web", 2], [80.0, None, 3]]},
            "params": {"decision_key": KEY}}
    try:
        deadline, ready = time.monotonic() + 120, False
        while time.monotonic() < deadline and server.poll() is None and not ready:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=5) as response:
                    ready = response.status == 200
            except (urllib.error.URLError, OSError):
                time.sleep(0.5)
        assert ready, f"the model server did not start:\n{tail(tmp_path / 'serve.log')}"
        with urllib.request.urlopen(invocation(port, body), timeout=30) as response:
            answer = pd.DataFrame(json.loads(response.read())["predictions"])
        body["dataframe_split"]["columns"][-1] = "decision_key"  # a key both as a column and as a param
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(invocation(port, body), timeout=30)
        assert refused.value.code == 400
        assert "decision_key: given both as a column and as a param" in json.loads(refused.value.read())["message"]
    finally:
        stop(server)
    assert set(answer["arm"]) <= set(ARMS) and ((answer["propensity"] > 0) & (answer["propensity"] <= 1)).all()
    frame = pd.DataFrame(body["dataframe_split"]["data"], columns=[*FEATURES, "user_id"])
    expected = fitted.decide(frame, decision_key=KEY)
    assert answer["arm"].tolist() == expected["arm"].tolist()
    np.testing.assert_allclose(answer["propensity"], expected["propensity"])
    assert answer["decision_key"].tolist() == [KEY] * 3
