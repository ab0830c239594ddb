"""Served policies as MLflow pyfunc models: a DataFrame of requests in, one decision per row out, with the true
probability of every decision so the logs it leaves support off-policy evaluation.

`FittedPolicy` bundles the context encoder, the bandit policy and the arm labels, so scoring encodes exactly as
training did; `PolicyModel` is its pyfunc wrapper. `FittedMixedPolicy` is the constrained-RL mixture of deterministic
policies with its campaign salt; `MixedPolicyModel` wraps it. Both models live here, away from the stages, so loading
a served model imports no stage.

Where a served decision's randomness comes from (docs/bandits.md, 'Serving'):

- a request with a `user_id` column: each row's uniform is `campaign_core.salted_uniform` of
  `splitmix64(id_word(user_id)) XOR id_word(decision_key)` (`decision_words`; `id_word` as in `campaign_core.hashing`,
  the key taken as text), under the salt "decision" for a bandit policy and the model's campaign salt for a mixed
  policy. The decision key is the `decision_key` column, else the request's `decision_key` param, else today's
  date in UTC for a bandit policy; a mixed policy without a key hashes the user id alone (its campaign's draw,
  the same every day). Repeating a request for a user and key repeats the decision; different users and different
  keys draw independently;
- a `random_state` param (bandit policy): a seeded draw of the batch, numpy's `default_rng(random_state)`, one
  uniform per row in row order (for simulations and tests);
- a bandit-policy request with neither: a fresh seed from the operating system's entropy, returned in `draw_seed`.

The arm is the inverse CDF of the row's action probabilities at its uniform, and `propensity` is the probability
of that arm. The models carry the platform's code they need (code_paths), so they load and serve (`campaign serve`, or
`mlflow models serve --env-manager local`) where numpy, pandas, scikit-learn, scipy and torch are installed.
"""

from __future__ import annotations

import contextlib
import logging
import pickle
import secrets
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import ModelSignature, infer_signature
from mlflow.types import DataType
from mlflow.types.schema import AnyType, ColSpec, ParamSchema, ParamSpec, Schema

import bandits
import campaign_core
import pipelines
from bandits.encoding import ContextEncoder
from bandits.policies.base import BasePolicy, inverse_cdf
from campaign_core.hashing import id_words, salted_uniform, splitmix64
from pipelines.errors import InputError
from pipelines.user_split import UserSplit

if TYPE_CHECKING:
    from budget_rl.mixed import MixedPolicy

#: The salt of a bandit policy's hashed draws: independent of the platform's other salted draws (splits, folds).
DECISION_SALT = "decision"
#: The params a served request may pass (JSON field `params` of /invocations); absent ones are None.
REQUEST_PARAMS = ParamSchema([ParamSpec("random_state", DataType.long, None),
                              ParamSpec("decision_key", DataType.string, None)])


def today_key() -> str:
    """Today's date in UTC (YYYY-MM-DD): the decision key of a request that names none."""
    return datetime.now(UTC).date().isoformat()


def decision_words(user_ids, decision_keys) -> np.ndarray:
    """The 64-bit word a served draw hashes: splitmix64(id word of the user) XOR id word of the key's text.

    splitmix64 is a bijection, so under one key distinct users give distinct words, and one user gives a different
    word under every key; `salted_uniform` of the words is then independent across users and across keys."""
    keys = np.asarray([str(key) for key in decision_keys], dtype=object)
    return splitmix64(id_words(user_ids)) ^ id_words(keys)


def _decision_keys(frame: pd.DataFrame, decision_key: str | None) -> np.ndarray | None:
    """Each row's decision key as text: the `decision_key` column, else the request's key; None if neither."""
    if "decision_key" in frame.columns:
        if decision_key is not None:
            raise InputError("decision_key: given both as a column and as a param; pass one of them")
        column = frame["decision_key"]
        if column.isna().any():
            raise InputError(f"decision_key: {int(column.isna().sum())} row(s) without a key")
        return column.astype(str).to_numpy(dtype=object)
    if decision_key is None:
        return None
    if not isinstance(decision_key, str) or not decision_key:
        raise InputError(f"decision_key: need a non-empty string, got {decision_key!r}")
    return np.full(len(frame), decision_key, dtype=object)


def _user_ids(frame: pd.DataFrame) -> np.ndarray:
    missing = int(frame["user_id"].isna().sum())
    if missing:
        raise InputError(f"user_id: {missing} row(s) without a user id; every hashed decision needs one")
    return frame["user_id"].to_numpy()


def _seed(random_state) -> int:
    if isinstance(random_state, bool) or not isinstance(random_state, int | np.integer) or random_state < 0:
        raise InputError(f"random_state: need a non-negative integer seed, got {random_state!r}")
    return int(random_state)


@contextlib.contextmanager
def request_errors() -> Iterator[None]:
    """A bad request as MLflow's invalid-parameter error, so the scoring server answers HTTP 400 with its one-line
    message (any other exception becomes a generic 'unexpected error')."""
    try:
        yield
    except InputError as error:
        raise mlflow.exceptions.MlflowException.invalid_parameter_value(str(error)) from None


@dataclass
class FittedPolicy:
    """A policy with the encoder that turns raw feature columns into its contexts."""

    encoder: ContextEncoder
    policy: BasePolicy
    training_split: UserSplit | None = None  # the users it was fitted on, when a split was used

    @property
    def holdout(self) -> UserSplit | None:
        """The users it never saw: the other side of its training split (None: fitted on all users)."""
        split = getattr(self, "training_split", None)
        return None if split is None else split.other_side()

    @property
    def features(self) -> list[str]:
        return list(self.encoder.features_)

    @property
    def arms(self) -> list:
        return list(self.policy.arms_)

    def contexts(self, frame: pd.DataFrame) -> np.ndarray:
        missing = [name for name in self.features if name not in frame.columns]
        if missing:
            raise InputError(f"contexts: feature columns missing from the input: {missing}")
        return self.encoder.transform(frame)

    def probabilities(self, frame: pd.DataFrame) -> np.ndarray:
        """(n, K) action probabilities for the users in `frame`, columns in `arms` order."""
        return self.policy.action_probabilities(self.contexts(frame))

    def draws(self, frame: pd.DataFrame, random_state: int | None = None,
              decision_key: str | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each row's uniform in [0, 1), with the decision key hashed (text; "" for a seeded draw) and the seed of a
        seeded draw (-1 for a hashed one), by the rules of the module docstring."""
        n = len(frame)
        keys = _decision_keys(frame, decision_key)
        if random_state is not None:
            if keys is not None:
                raise InputError("random_state: a seeded draw takes no decision_key; pass one of them")
            seed = _seed(random_state)
        elif "user_id" in frame.columns:
            keys = np.full(n, today_key(), dtype=object) if keys is None else keys
            uniforms = salted_uniform(decision_words(_user_ids(frame), keys), DECISION_SALT)
            return uniforms, keys, np.full(n, -1, dtype=np.int64)
        elif keys is not None:
            raise InputError("decision_key: a keyed draw hashes the user id; the request has no user_id column")
        else:
            seed = secrets.randbits(53)  # 53 bits: exact in JSON clients that read numbers as doubles
        return np.random.default_rng(seed).random(n), np.full(n, "", dtype=object), np.full(n, seed, dtype=np.int64)

    def decide(self, frame: pd.DataFrame, random_state: int | None = None,
               decision_key: str | None = None) -> pd.DataFrame:
        """One arm per row drawn from the policy: `arm`, `propensity` (the probability of that arm, to log for
        off-policy evaluation), `p_<arm>` for every arm, and how it was drawn: `decision_key` and `draw_seed`
        (`draws`). Without `random_state` the draw hashes (user_id, decision key); see the module docstring."""
        uniforms, keys, seeds = self.draws(frame, random_state, decision_key)
        probabilities = self.probabilities(frame)
        codes = inverse_cdf(probabilities, uniforms)
        return pd.DataFrame({"arm": np.asarray(self.arms, dtype=object)[codes],
                             "propensity": probabilities[np.arange(len(codes)), codes],
                             **{f"p_{arm}": probabilities[:, k] for k, arm in enumerate(self.arms)},
                             "decision_key": keys, "draw_seed": seeds}, index=frame.index)


class PolicyModel(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper of a `FittedPolicy` (pickled as the `policy` artifact); request params `random_state` and
    `decision_key` (REQUEST_PARAMS) go to `FittedPolicy.decide`."""

    def load_context(self, context) -> None:
        with open(context.artifacts["policy"], "rb") as file:
            self.fitted = pickle.load(file)

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        params = params or {}
        with request_errors():
            return self.fitted.decide(pd.DataFrame(model_input), params.get("random_state"),
                                      params.get("decision_key"))


@dataclass(frozen=True)
class FittedMixedPolicy:
    """The constrained-RL mixed policy with its action labels, state columns and the campaign salt of its draws.

    Each user follows one component for the whole campaign, drawn by `MixedPolicy.assign` at the user's hashed
    uniform: of the user id alone (the campaign's draw, the same every day), or of `decision_words(user_id, key)`
    when the request names a decision key (a new campaign with the same policy). Drawing per day would be a
    different policy with a different value (docs/constrained_rl.md), so a key must stay the same all campaign."""

    mixed: MixedPolicy
    actions: list
    state_columns: list[str]
    salt: str

    def decide(self, frame: pd.DataFrame, decision_key: str | None = None) -> pd.DataFrame:
        """Per row: `component` and `component_weight` (the probability it was drawn with), `action`, `propensity`
        (the mixture's probability of that action in that state: the summed weights of the components that take it,
        to log for off-policy evaluation) and the `decision_key` hashed ("" for the campaign's own draw)."""
        missing = [c for c in ["user_id", "day", *self.state_columns] if c not in frame.columns]
        if missing:
            raise InputError(f"input: missing column(s) {missing[:5]}")
        users = _user_ids(frame)
        keys = _decision_keys(frame, decision_key)
        words = users if keys is None else decision_words(users, keys)
        component = self.mixed.assign(words, salt=self.salt)
        states = frame[self.state_columns].to_numpy(dtype=float)
        days = frame["day"].to_numpy()
        taken = np.zeros((len(frame), len(self.mixed.components)), dtype=np.int64)  # each component's action
        for day in np.unique(days):
            rows = days == day
            for index, policy in enumerate(self.mixed.components):
                taken[rows, index] = policy.act(states[rows], int(day))
        action = taken[np.arange(len(frame)), component]
        weights = np.asarray(self.mixed.weights, dtype=float)
        return pd.DataFrame({"component": component, "component_weight": weights[component],
                             "action": np.asarray(self.actions, dtype=object)[action],
                             "propensity": (taken == action[:, None]).astype(float) @ weights,
                             "decision_key": np.full(len(frame), "", dtype=object) if keys is None else keys},
                            index=frame.index)


class MixedPolicyModel(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper of a `FittedMixedPolicy` (pickled as the `mixed_policy` artifact); request param
    `decision_key` goes to `FittedMixedPolicy.decide`."""

    def load_context(self, context) -> None:
        with open(context.artifacts["mixed_policy"], "rb") as file:
            self.fitted = pickle.load(file)

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        with request_errors():
            return self.fitted.decide(pd.DataFrame(model_input), (params or {}).get("decision_key"))


def model_requirements() -> list[str]:
    """The pip requirements every campaign pyfunc model declares (pinned to what is installed here)."""
    import scipy
    import sklearn
    import torch

    return [f"mlflow=={mlflow.__version__}", f"numpy=={np.__version__}", f"pandas=={pd.__version__}",
            f"scikit-learn=={sklearn.__version__}", f"scipy=={scipy.__version__}",
            f"torch=={torch.__version__.split('+')[0]}"]


def pyfunc_arguments(python_model: mlflow.pyfunc.PythonModel, artifact: str, content: object, folder: Path,
                     example: pd.DataFrame, packages: list, signature=None) -> dict:
    """Arguments of `mlflow.pyfunc.save_model` / `log_model`: `content` pickled as artifact `artifact` (in the
    temporary `folder`), the requirements, and the code of `packages` (modules) carried along."""
    path = folder / f"{artifact}.pkl"
    with open(path, "wb") as file:
        pickle.dump(content, file)
    arguments = {"python_model": python_model, "artifacts": {artifact: str(path)}, "input_example": example,
                 "pip_requirements": model_requirements(),
                 "code_paths": [str(Path(package.__file__).parent) for package in packages]}
    if signature is not None:
        arguments["signature"] = signature
    return arguments


def request_signature(example: pd.DataFrame, output: pd.DataFrame, params: list[str]) -> ModelSignature:
    """The signature of a served model: the example's columns, with `user_id` (when present) and the optional
    `user_id` and `decision_key` columns of any type (integer or text ids), and the request `params` (names in
    REQUEST_PARAMS) that default to None."""
    with warnings.catch_warnings():  # MLflow's hint that integer columns cannot hold missing values: the integer
        # columns here are outputs (always filled) and user_id, which is declared as any type just below
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer", category=UserWarning)
        inferred = infer_signature(example, output)
    columns = [spec for spec in inferred.inputs.inputs if spec.name != "user_id"]
    required = "user_id" in example.columns
    columns += [ColSpec(AnyType(), "user_id", required=required), ColSpec(AnyType(), "decision_key", required=False)]
    return ModelSignature(Schema(columns), inferred.outputs,
                          ParamSchema([spec for spec in REQUEST_PARAMS.params if spec.name in params]))


def _model_arguments(fitted: FittedPolicy, example: pd.DataFrame, folder: Path) -> dict:
    example = example[fitted.features].head(5).reset_index(drop=True)
    for name in example.columns:  # integer columns may hold missing values at scoring time: declare them as doubles
        if pd.api.types.is_integer_dtype(example[name]):
            example[name] = example[name].astype(np.float64)
    signature = request_signature(example, fitted.decide(example, random_state=0), ["random_state", "decision_key"])
    return pyfunc_arguments(PolicyModel(), "policy", fitted, folder, example, [bandits, campaign_core, pipelines],
                            signature)


def mixed_policy_arguments(fitted: FittedMixedPolicy, example: pd.DataFrame, folder: Path) -> dict:
    """Arguments of `mlflow.pyfunc.save_model` / `log_model` for a mixed policy; `example` has user_id, day and the
    state columns."""
    import budget_rl  # its allocation modules are not needed to serve a bandit policy: imported here, not above

    signature = request_signature(example, fitted.decide(example), ["decision_key"])
    return pyfunc_arguments(MixedPolicyModel(), "mixed_policy", fitted, folder, example,
                            [bandits, budget_rl, campaign_core, pipelines], signature)


@contextlib.contextmanager
def quiet_pyfunc() -> Iterator[None]:
    """Silence MLflow's notice that a python_model object is cloudpickled (that is the intended format here)."""
    logger = logging.getLogger("mlflow.pyfunc")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def save_policy_model(fitted: FittedPolicy, path: Path, example: pd.DataFrame) -> None:
    """Write the model as an MLflow model folder at `path` (which must not exist yet)."""
    with tempfile.TemporaryDirectory() as folder, quiet_pyfunc():
        mlflow.pyfunc.save_model(path=str(path), **_model_arguments(fitted, example, Path(folder)))


def log_policy_model(fitted: FittedPolicy, name: str, example: pd.DataFrame) -> str:
    """Log the model to the active MLflow run; returns its model URI."""
    with tempfile.TemporaryDirectory() as folder, quiet_pyfunc():
        info = mlflow.pyfunc.log_model(name=name, **_model_arguments(fitted, example, Path(folder)))
    return info.model_uri


def load_fitted_policy(path_or_uri: str | Path) -> FittedPolicy:
    """The `FittedPolicy` inside a saved or logged policy model (a folder path or an MLflow model URI)."""
    return load_fitted(path_or_uri, (FittedPolicy,))


def load_fitted(path_or_uri: str | Path, kinds: tuple[type, ...] = (FittedPolicy, FittedMixedPolicy)
                ) -> FittedPolicy | FittedMixedPolicy:
    """The fitted policy inside a saved or logged campaign model (a bandit policy or a mixed allocation policy),
    if it is one of `kinds`; one-line InputError otherwise."""
    try:
        model = mlflow.pyfunc.load_model(str(path_or_uri))
    except (OSError, mlflow.exceptions.MlflowException) as error:
        raise InputError(f"policy: cannot load a policy model from {path_or_uri}: {str(error).splitlines()[0]}") \
            from None
    fitted = getattr(model.unwrap_python_model(), "fitted", None)
    if not isinstance(fitted, kinds):
        what = " or ".join("a campaign policy model" if kind is FittedPolicy else "a mixed allocation policy model"
                           for kind in kinds)
        raise InputError(f"policy: {path_or_uri} is not {what}")
    return fitted
