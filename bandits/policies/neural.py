"""A neural contextual policy with principled exploration: Thompson sampling on a neural-linear model.

A shared torch network maps the context to an embedding, with one linear head per arm trained on the observed arm's
reward (squared error). Exploration is Thompson sampling on a Bayesian linear model over the embedding, per arm
(NeuralLinear, Riquelme, Tucker and Snoek 2018): the network learns the non-linear representation, the last-layer
posterior says how uncertain each arm's reward is. The last layer is a `LinTS`, so the action probabilities are
computed the same way (Monte Carlo with a fixed seed).

Learning keeps a buffer of the most recent `max_buffer` rounds: each `partial_fit` appends to it, continues
training the network for `epochs` passes of as many rows as the update brought, drawn from the whole buffer (so an
update costs in proportion to its new rows and old rounds are replayed), then refits the last-layer posterior on the
buffer's embeddings (the embedding changes as the network trains, so the posterior is rebuilt, not updated).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted

from bandits.feedback import LoggedFeedback, check_contexts
from bandits.policies.base import BLOCK_ROWS, BasePolicy
from bandits.policies.linear import LinearStats, LinTS
from campaign_core import InputError


class _Network(torch.nn.Module):
    def __init__(self, n_features: int, hidden: Sequence[int], n_arms: int):
        super().__init__()
        layers: list[torch.nn.Module] = []
        width = n_features
        for size in hidden:
            layers += [torch.nn.Linear(width, size), torch.nn.ReLU()]
            width = size
        self.trunk = torch.nn.Sequential(*layers)
        self.heads = torch.nn.Linear(width, n_arms)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedding = self.trunk(x)
        return embedding, self.heads(embedding)


class NeuralTS(BasePolicy):
    """Neural-linear Thompson sampling: shared MLP trunk (`hidden` sizes), per-arm heads, last-layer posterior.

    alpha scales the posterior spread (exploration), l2 is the last-layer ridge penalty; training uses Adam with
    `learning_rate` and `weight_decay`, mini-batches of `batch_size`, all seeded by `random_state`. `device` is
    "cpu" by default ("cuda" where available).
    """

    def __init__(self, hidden: Sequence[int] = (64, 32), alpha: float = 1.0, l2: float = 1.0, epochs: int = 5,
                 batch_size: int = 256, learning_rate: float = 3e-3, weight_decay: float = 1e-5,
                 n_draws: int = 100, max_buffer: int = 200_000, random_state: int = 0, device: str = "cpu",
                 arms: Sequence | None = None, weight_by_propensity: bool = False):
        self.hidden = hidden
        self.alpha = alpha
        self.l2 = l2
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.n_draws = n_draws
        self.max_buffer = max_buffer
        self.random_state = random_state
        self.device = device
        self.arms = arms
        self.weight_by_propensity = weight_by_propensity

    def _reset(self, n_features: int) -> None:
        if not self.hidden or min(self.hidden) < 1:
            raise InputError(f"hidden: need at least one layer of size >= 1, got {self.hidden}")
        for name in ("epochs", "batch_size", "max_buffer"):
            if getattr(self, name) < 1:
                raise InputError(f"{name}: must be >= 1, got {getattr(self, name)}")
        self._rng = np.random.default_rng(self.random_state)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.random_state)
            self.network_ = _Network(n_features, self.hidden, self.n_arms).to(self.device, dtype=torch.float64)
        self._optimizer = torch.optim.Adam(self.network_.parameters(), lr=self.learning_rate,
                                           weight_decay=self.weight_decay)
        self.buffer_ = (np.empty((0, n_features)), np.empty(0, dtype=np.int64), np.empty(0), np.empty(0))
        self.last_layer_ = LinTS(alpha=self.alpha, l2=self.l2, n_draws=self.n_draws, random_state=self.random_state)
        self.last_layer_.fit_statistics(LinearStats.zeros(self.n_arms, self.hidden[-1] + 1), tuple(self.arms_),
                                        [f"h{j}" for j in range(self.hidden[-1])])
        self.x_mean_, self.x_scale_ = np.zeros(n_features), np.ones(n_features)

    def _update(self, feedback: LoggedFeedback, weights: np.ndarray | None) -> None:
        w = np.ones(feedback.n_rounds) if weights is None else weights
        X, arms, rewards, row_weights = (np.concatenate([old, new])[-self.max_buffer:] for old, new in
                                         zip(self.buffer_, (feedback.contexts, feedback.arms, feedback.rewards, w),
                                             strict=True))
        self.buffer_ = (X, arms, rewards, row_weights)
        self.x_mean_ = X.mean(axis=0)
        self.x_scale_ = np.where(X.std(axis=0) > 0, X.std(axis=0), 1.0)
        self._train(X, arms, rewards, row_weights, rows_per_epoch=min(len(X), feedback.n_rounds))
        embedding = self._embed(X)
        stats = LinearStats.partial(embedding, arms, rewards, self.n_arms, weights=row_weights)
        self.last_layer_.fit_statistics(stats, tuple(self.arms_), self.last_layer_.feature_names_in_)

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(array, dtype=torch.float64, device=self.device)

    def _train(self, X: np.ndarray, arms: np.ndarray, rewards: np.ndarray, weights: np.ndarray,
               rows_per_epoch: int) -> None:
        """`epochs` passes of `rows_per_epoch` rows drawn from the buffer: an update costs in proportion to the new
        rows, not to everything seen so far (a first fit is plain epochs over all rows)."""
        inputs = self._tensor((X - self.x_mean_) / self.x_scale_)
        arm_index, target, weight = self._tensor(arms).long(), self._tensor(rewards), self._tensor(weights)
        self.network_.train()
        for _ in range(self.epochs):
            order = torch.as_tensor(self._rng.permutation(len(X))[:rows_per_epoch], device=self.device)
            for start in range(0, rows_per_epoch, self.batch_size):
                rows = order[start:start + self.batch_size]
                _, predicted = self.network_(inputs[rows])
                chosen = predicted.gather(1, arm_index[rows, None])[:, 0]
                loss = (weight[rows] * (chosen - target[rows]) ** 2).sum() / weight[rows].sum()
                self._optimizer.zero_grad()
                loss.backward()
                self._optimizer.step()
        self.network_.eval()

    def _embed(self, X: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            parts = [self.network_(self._tensor((X[s:s + BLOCK_ROWS] - self.x_mean_) / self.x_scale_))[0]
                     for s in range(0, len(X), BLOCK_ROWS)]
        return torch.cat(parts).cpu().numpy() if parts else np.empty((0, self.hidden[-1]))

    def expected_rewards(self, X) -> np.ndarray:
        """(n, K) last-layer posterior mean reward of each arm for each context row."""
        return self.last_layer_.expected_rewards(self._embed(self._check_X(X)))

    def _check_X(self, X) -> np.ndarray:
        self._cold_start(X)
        check_is_fitted(self, "network_")
        return check_contexts(X, "contexts", self.n_features_in_)

    def _probabilities(self, X: np.ndarray) -> np.ndarray:
        return self.last_layer_._probabilities(self._embed(X))

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.pop("_optimizer", None)  # rebuilt on unpickling; Adam's moments are not part of the policy
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if "network_" in state:
            self._optimizer = torch.optim.Adam(self.network_.parameters(), lr=self.learning_rate,
                                               weight_decay=self.weight_decay)
