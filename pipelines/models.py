"""A fitted bandit policy as an MLflow pyfunc model: a DataFrame of user features in, arm and propensity out.

`FittedPolicy` bundles the context encoder, the policy and the arm labels, so scoring encodes exactly as training
did. `PolicyModel` is the pyfunc wrapper: `mlflow.pyfunc.load_model(uri).predict(frame, params={"random_state": 7})`
returns one row per input row with `arm`, `propensity` (the probability the arm was drawn with, to log for later
off-policy evaluation) and `p_<arm>` for every arm. The seed makes a day's batch reproducible; pass a new seed per
batch. The model carries the `bandits`, `campaign_core` and `pipelines` code (code_paths), so it loads and serves
(`mlflow models serve --env-manager local`) where numpy, pandas, scikit-learn, scipy and torch are installed.
"""

from __future__ import annotations

import contextlib
import logging
import pickle
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import infer_signature

import bandits
import campaign_core
import pipelines
from bandits.encoding import ContextEncoder
from bandits.policies.base import BasePolicy, sample_from
from pipelines.errors import InputError
from pipelines.user_split import UserSplit


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
        return None if split is None or split.side == "all" else replace(split, side="holdout")

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

    def decide(self, frame: pd.DataFrame, random_state: int = 0) -> pd.DataFrame:
        """One arm per row drawn from the policy, with its propensity and every arm's probability."""
        probabilities = self.probabilities(frame)
        codes = sample_from(probabilities, random_state)
        out = pd.DataFrame({"arm": np.asarray(self.arms, dtype=object)[codes],
                            "propensity": probabilities[np.arange(len(codes)), codes]}, index=frame.index)
        for k, arm in enumerate(self.arms):
            out[f"p_{arm}"] = probabilities[:, k]
        return out


class PolicyModel(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper of a `FittedPolicy` (pickled as the `policy` artifact)."""

    def load_context(self, context) -> None:
        with open(context.artifacts["policy"], "rb") as file:
            self.fitted = pickle.load(file)

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        random_state = int((params or {}).get("random_state", 0))
        return self.fitted.decide(pd.DataFrame(model_input), random_state)


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


def _model_arguments(fitted: FittedPolicy, example: pd.DataFrame, folder: Path) -> dict:
    example = example[fitted.features].head(5).reset_index(drop=True)
    for name in example.columns:  # integer columns may hold missing values at scoring time: declare them as doubles
        if pd.api.types.is_integer_dtype(example[name]):
            example[name] = example[name].astype(np.float64)
    signature = infer_signature(example, fitted.decide(example), params={"random_state": 0})
    return pyfunc_arguments(PolicyModel(), "policy", fitted, folder, example, [bandits, campaign_core, pipelines],
                            signature)


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
    try:
        model = mlflow.pyfunc.load_model(str(path_or_uri))
    except (OSError, mlflow.exceptions.MlflowException) as error:
        raise InputError(f"policy: cannot load a policy model from {path_or_uri}: {str(error).splitlines()[0]}") \
            from None
    wrapper = model.unwrap_python_model()
    if not isinstance(getattr(wrapper, "fitted", None), FittedPolicy):
        raise InputError(f"policy: {path_or_uri} is not a campaign policy model")
    return wrapper.fitted
