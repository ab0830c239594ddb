"""LinkLouvain's link prediction: which pairs of users will interact during the experiment.

The observed relations (friendships, contacts) are a poor stand-in for who actually invites whom: most friendships
carry no interaction and some interactions run between friends of friends. LinkLouvain (Ant Group, DASFAA 2021)
learns from past interactions (who invited whom in an earlier campaign, edges of kind `past_kind`) which pairs are
likely to interact, scores candidate pairs (existing relations and friend-of-friend pairs), drops low-confidence
pairs and weights each kept pair by its predicted probability; Louvain on that graph then keeps the likely
interactions inside clusters.

Two predictors share one interface, `fit(graph, a, b, user_features)` on positive pairs and
`predict_proba(graph, a, b, user_features)` giving P(interaction) per pair:

- `FeatureLinkPredictor`: a classifier (gradient boosting by default) on `pair_features`: common neighbours,
  Adamic-Adar, Jaccard, degrees, whether the pair is related, and user-feature similarity;
- `GNNLinkPredictor`: a two-layer GraphSAGE encoder (mean aggregation over relations, torch) whose embeddings of the
  two users, together with the same pair features, feed an MLP decoder.

No leakage: the graph the features and messages come from is the relation graph only (edges whose kind is not
`past_kind`); the past interactions are labels, never inputs. Negatives are pairs that did not interact in the past:
half drawn from the candidate pairs (hard negatives: related users who did not interact), half uniformly random.
Probabilities are therefore relative to that sampling (one positive for `negatives_per_positive` negatives), not
population rates; the threshold is on that scale.

Cost: candidate generation is O(sum of squared degrees) (every friend-of-friend path is counted once), pair features
O(sum of the two users' degrees) per pair. On the synthetic campaign with 10^5 users, 10^6 friendships and 3.5 10^5
past invitations, `predicted_interaction_graph` with the feature model takes about 20 s on one CPU core (2.25 10^6
candidates scored, 1.5 GB peak memory); on the demo's 10^6 users (5x10^6 friendships, 1.8x10^6 past invitations)
76 s and 6.8 GB peak for 1.7x10^7 candidates (7.1x10^6 kept at threshold 0.1). The GNN is slower (full-batch
epochs over the whole graph) and has not been timed at that size.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from scipy import sparse
from sklearn.base import BaseEstimator, clone
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score
from sklearn.utils.validation import check_is_fitted

from abtest.graph import InteractionGraph, build_graph
from campaign_core import InputError, salted_uniform, seeded_salt

GRAPH_FEATURES = ("common_neighbours", "adamic_adar", "jaccard", "log_degree_min", "log_degree_max", "is_edge")
CANDIDATE_NEGATIVE_SHARE = 0.5  # share of sampled negatives drawn from candidate pairs (the rest: random pairs)
MIN_PAST_INTERACTIONS = 10
_COUNT_CAP = 64  # common-neighbour counts above this are alike when finding a row's cutoff
_WORK_PER_CHUNK = 8_000_000  # sparse entries handled per chunk (bounds memory at about 100 MB a chunk)


# ------------------------------------------------------------------ candidates and pair features
def candidate_pairs(graph: InteractionGraph, *, max_per_node: int = 20,
                    random_state: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of node indices a < b worth scoring: every edge of `graph`, plus friend-of-friend pairs.

    Interactions mostly run along relations, and otherwise between users with friends in common, so these are the
    pairs a link predictor has to rank. Each user starts at most `max_per_node` friend-of-friend pairs (pairs two
    hops apart that are not already edges): those with the most common neighbours, ties broken by a draw that is a
    function of (random_state, pair) only (`campaign_core.salted_uniform` of the pair's key under
    `seeded_salt("link-candidates", random_state)`). A pair started by either of its users is kept; the result is
    sorted and unique.
    """
    _check_max_per_node(max_per_node)
    n = graph.n_users
    lo, hi = np.minimum(graph.src, graph.dst).astype(np.int64), np.maximum(graph.src, graph.dst).astype(np.int64)
    keys = [lo * n + hi]
    if max_per_node > 0 and graph.n_edges:
        adjacency = _binary_adjacency(graph)
        degree = np.diff(adjacency.indptr)
        work = adjacency @ degree.astype(np.float64)  # friend-of-friend paths starting at each user
        tie_salt = seeded_salt("link-candidates", random_state)
        for start, stop in _chunks(work, _WORK_PER_CHUNK):
            keys.append(_top_two_hop(adjacency, start, stop, int(max_per_node), tie_salt))
    keys = _sorted_unique(np.concatenate(keys))
    return keys // max(n, 1), keys % max(n, 1)


def _top_two_hop(adjacency: sparse.csr_matrix, start: int, stop: int, k: int, tie_salt: str) -> np.ndarray:
    """Keys lo * n + hi of the (at most) k friend-of-friend pairs with most common neighbours that rows
    start..stop-1 start."""
    n, rows = adjacency.shape[0], stop - start
    block = adjacency[start:stop]
    paths = block @ adjacency  # common-neighbour counts of every pair two hops apart
    known = block + sparse.eye(rows, n, k=start, dtype=block.dtype, format="csr")
    paths = (paths - paths.multiply(known)).tocsr()  # drop pairs that are already edges, and the user themself
    paths.eliminate_zeros()
    local = np.repeat(np.arange(rows, dtype=np.int32), np.diff(paths.indptr))
    common = paths.data
    # Only pairs with at least as many common neighbours as the row's k-th best can be kept: find that count per row
    # from a histogram of (capped) counts, and sort just those pairs.
    capped = np.minimum(common, _COUNT_CAP - 1).astype(np.int32)
    histogram = np.bincount(local.astype(np.int64) * _COUNT_CAP + capped, minlength=rows * _COUNT_CAP)
    at_least = np.cumsum(histogram.reshape(rows, _COUNT_CAP)[:, ::-1], axis=1)[:, ::-1] >= k
    cutoff = np.where(at_least.any(axis=1), _COUNT_CAP - 1 - np.argmax(at_least[:, ::-1], axis=1), 0)
    contender = capped >= cutoff[local]
    row = start + local[contender].astype(np.int64)
    col, common = paths.indices[contender].astype(np.int64), common[contender]
    key = np.minimum(row, col) * n + np.maximum(row, col)
    order = np.lexsort((-salted_uniform(key, tie_salt), -common, row))
    row_sorted = row[order]
    first = np.searchsorted(row_sorted, row_sorted, side="left")
    rank = np.arange(len(order)) - first
    return key[order[rank < k]]


def pair_features(graph: InteractionGraph, a, b, user_features: np.ndarray | None = None) -> np.ndarray:
    """Features of each pair (a[i], b[i]) of node indices, symmetric in a and b: an (m, f) float array.

    Columns (`pair_feature_names`): common neighbours, Adamic-Adar (common neighbours weighted by 1 / log degree,
    so a shared friend who knows everyone counts little), Jaccard (common / all neighbours), log(1 + degree) of the
    less and the more connected user, whether the pair is an edge of `graph`; then, for user features x (n, p),
    |x_a - x_b| (how alike the two users are) and x_a * x_b (both high, both low), NaN where a value is missing.
    """
    a, b = _checked_pairs(graph, a, b, "pairs")
    n, m = graph.n_users, len(a)
    x = None if user_features is None else _checked_user_features(user_features, n)
    out = np.empty((m, len(GRAPH_FEATURES) + (0 if x is None else 2 * x.shape[1])))
    adjacency = _binary_adjacency(graph)
    degree = np.diff(adjacency.indptr).astype(np.float64)
    inverse_log = np.divide(1.0, np.log(np.maximum(degree, 1.0)), out=np.zeros(n), where=degree > 1)
    common, adamic_adar, jaccard = out[:, 0], out[:, 1], out[:, 2]
    for start, stop in _chunks(degree[a] + degree[b], _WORK_PER_CHUNK):
        shared = adjacency[a[start:stop]].multiply(adjacency[b[start:stop]]).tocsr()
        common[start:stop] = np.diff(shared.indptr)  # products of ones: one stored entry per common neighbour
        adamic_adar[start:stop] = shared @ inverse_log
    union = degree[a] + degree[b] - common
    np.divide(common, union, out=jaccard, where=union > 0)
    jaccard[union <= 0] = 0.0
    degree_a, degree_b = degree[a], degree[b]
    np.log1p(np.minimum(degree_a, degree_b), out=out[:, 3])
    np.log1p(np.maximum(degree_a, degree_b), out=out[:, 4])
    edge_keys = np.sort(np.minimum(graph.src, graph.dst).astype(np.int64) * n + np.maximum(graph.src, graph.dst))
    out[:, 5] = _is_member(np.minimum(a, b) * n + np.maximum(a, b), edge_keys)
    if x is not None:
        p = x.shape[1]
        for j in range(p):  # column by column: no (m, p) temporaries
            x_a, x_b = x[a, j], x[b, j]
            np.abs(x_a - x_b, out=out[:, len(GRAPH_FEATURES) + j])
            np.multiply(x_a, x_b, out=out[:, len(GRAPH_FEATURES) + p + j])
    return out


def pair_feature_names(user_feature_names=None) -> list[str]:
    """Column names of `pair_features` (user features named x0, x1, ... unless names are given)."""
    names = list(GRAPH_FEATURES)
    if user_feature_names is not None:
        names += [f"absdiff_{u}" for u in user_feature_names] + [f"product_{u}" for u in user_feature_names]
    return names


# ------------------------------------------------------------------ predictors
class FeatureLinkPredictor(BaseEstimator):
    """P(interaction) of a pair from `pair_features`, fitted with a classifier on past interactions.

    classifier: an unfitted scikit-learn classifier with `predict_proba` (cloned, never modified); default a
        histogram gradient boosting classifier, which needs no scaling and takes missing user features (NaN) as they
        are (other classifiers may need an imputer in a pipeline).
    negatives_per_positive: non-interacting pairs sampled per positive when `fit` samples them itself.
    random_state: seeds the negative sampling and the default classifier.
    """

    def __init__(self, classifier=None, *, negatives_per_positive: float = 2.0, random_state: int | None = 0):
        self.classifier = classifier
        self.negatives_per_positive = negatives_per_positive
        self.random_state = random_state

    def fit(self, graph: InteractionGraph, a, b, user_features: np.ndarray | None = None, *,
            negatives: tuple[np.ndarray, np.ndarray] | None = None) -> FeatureLinkPredictor:
        """Learn from positive pairs (a[i], b[i]) (users who interacted) against non-interacting pairs.

        graph: the relation graph the features come from (it must not contain the positives as interactions).
        negatives: pairs (a, b) known not to interact; default `negatives_per_positive` per positive, sampled from
            `candidate_pairs(graph)` that are not positives and from random pairs.
        """
        X, y = _training_set(graph, a, b, user_features, negatives, self.negatives_per_positive, self.random_state)
        if self.classifier is None:
            # Half scikit-learn's default boosting rounds at twice the rate: on the synthetic campaign it ranks
            # candidate pairs as well (AUC within 0.002) in about half the time.
            self.classifier_ = HistGradientBoostingClassifier(max_iter=50, learning_rate=0.2,
                                                              random_state=self.random_state)
        else:
            self.classifier_ = clone(self.classifier)
        self.classifier_.fit(X, y)
        self.n_features_in_ = X.shape[1]
        self.n_positives_, self.n_negatives_ = int(y.sum()), int(len(y) - y.sum())
        return self

    def predict_proba(self, graph: InteractionGraph, a, b, user_features: np.ndarray | None = None) -> np.ndarray:
        """P(interaction) of each pair (a[i], b[i]): a 1-d array (not scikit-learn's two columns)."""
        check_is_fitted(self, "classifier_")
        X = pair_features(graph, a, b, user_features)
        _check_feature_count(X, self.n_features_in_)
        return self.classifier_.predict_proba(X)[:, 1]


class GNNLinkPredictor(BaseEstimator):
    """P(interaction) of a pair from GraphSAGE embeddings of the two users (torch), plus the pair features.

    The encoder is two GraphSAGE layers with mean aggregation over the relation graph: a user's embedding mixes
    their own features (user features and log degree) with the average of their neighbours', then of their
    neighbours' neighbours', so users in the same social circle get similar embeddings even without a common
    friend. The decoder is an MLP on (h_a * h_b, |h_a - h_b|, pair features), trained full-batch with binary
    cross-entropy on the positives and negatives. Inductive: `predict_proba` embeds the graph it is given.

    The network can memorize pairs (user features nearly identify users), so training stops early: a seeded share
    `validation_fraction` of the training pairs is set aside and the weights of the epoch with the least loss on it
    are kept (stopping after `patience` epochs without improvement).

    hidden: width of the embeddings and of the decoder's hidden layer.
    epochs, lr, weight_decay: most full-batch Adam steps, learning rate and L2 penalty.
    validation_fraction, patience: early stopping (validation_fraction=0 trains all `epochs` on every pair).
    negatives_per_positive: non-interacting pairs sampled per positive when `fit` samples them itself.
    random_state: seeds the weights (the CPU generator, seeded inside a fork, so the global state is left alone), the
        early-stopping split and the negative sampling; the same seed gives the same probabilities on CPU.
    device: torch device ("cpu", "cuda", ...).
    """

    def __init__(self, *, hidden: int = 32, epochs: int = 200, lr: float = 0.01, weight_decay: float = 1e-3,
                 validation_fraction: float = 0.1, patience: int = 20, negatives_per_positive: float = 2.0,
                 random_state: int | None = 0, device: str = "cpu"):
        self.hidden = hidden
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.negatives_per_positive = negatives_per_positive
        self.random_state = random_state
        self.device = device

    def fit(self, graph: InteractionGraph, a, b, user_features: np.ndarray | None = None, *,
            negatives: tuple[np.ndarray, np.ndarray] | None = None) -> GNNLinkPredictor:
        """Learn from positive pairs (a[i], b[i]) against non-interacting pairs (see `FeatureLinkPredictor.fit`)."""
        for name in ("hidden", "epochs", "patience"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                raise InputError(f"{name}: must be a positive integer, got {value!r}")
        if not (np.isfinite(self.lr) and self.lr > 0):
            raise InputError(f"lr: must be positive, got {self.lr}")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise InputError(f"validation_fraction: must lie in [0, 1), got {self.validation_fraction}")
        pairs, X, y = _training_set(graph, a, b, user_features, negatives, self.negatives_per_positive,
                                    self.random_state, return_pairs=True)
        nodes = _node_inputs(graph, user_features)
        self.node_mean_, self.node_scale_ = _standardizer(nodes)
        X = _signed_log(X)
        self.pair_mean_, self.pair_scale_ = _standardizer(X)
        self.n_features_in_ = X.shape[1]
        device = torch.device(self.device)
        # The weights are drawn on the CPU (then moved) and training draws nothing: seeding the CPU generator inside
        # a fork fixes the model and leaves the caller's random state as it was.
        with torch.random.fork_rng(devices=[]):
            torch.random.default_generator.manual_seed(0 if self.random_state is None else int(self.random_state))
            self.module_ = _SageLinkModel(nodes.shape[1], X.shape[1], int(self.hidden)).to(device)
            x_nodes, mean_adjacency = self._graph_tensors(graph, nodes)
            x_pairs = self._tensor(_standardized(X, self.pair_mean_, self.pair_scale_))
            index_a, index_b = (torch.as_tensor(p, device=device) for p in pairs)
            target = torch.as_tensor(y, dtype=torch.float32, device=device)
            shuffled = np.random.default_rng(self.random_state).permutation(len(y))
            n_validation = int(round(self.validation_fraction * len(y)))
            fit_rows = torch.as_tensor(np.sort(shuffled[n_validation:]), device=device)
            check_rows = torch.as_tensor(np.sort(shuffled[:n_validation]), device=device)
            optimizer = torch.optim.Adam(self.module_.parameters(), lr=self.lr, weight_decay=self.weight_decay)
            loss_function = torch.nn.BCEWithLogitsLoss()
            self.module_.train()
            losses, validation_losses = [], []
            best, best_state, waited = np.inf, None, 0
            for _ in range(int(self.epochs)):
                optimizer.zero_grad()
                embedding = self.module_.encode(x_nodes, mean_adjacency)
                logit = self.module_.decode(embedding, index_a, index_b, x_pairs)
                loss = loss_function(logit[fit_rows], target[fit_rows])
                if n_validation:  # the loss of the weights before this step, on pairs it never trains on
                    validation_losses.append(float(loss_function(logit[check_rows].detach(), target[check_rows])))
                    if validation_losses[-1] < best:
                        best, waited = validation_losses[-1], 0
                        best_state = {k: v.detach().clone() for k, v in self.module_.state_dict().items()}
                    else:
                        waited += 1
                        if waited >= self.patience:
                            break
                loss.backward()
                optimizer.step()
                losses.append(float(loss.detach()))
            if best_state is not None:
                self.module_.load_state_dict(best_state)
        self.module_.eval()
        self.loss_curve_ = np.asarray(losses)
        self.validation_loss_curve_ = np.asarray(validation_losses)
        self.n_epochs_ = int(np.argmin(validation_losses)) if validation_losses else len(losses)
        self.n_positives_, self.n_negatives_ = int(y.sum()), int(len(y) - y.sum())
        return self

    def predict_proba(self, graph: InteractionGraph, a, b, user_features: np.ndarray | None = None) -> np.ndarray:
        """P(interaction) of each pair (a[i], b[i]): a 1-d array."""
        check_is_fitted(self, "module_")
        a, b = _checked_pairs(graph, a, b, "pairs")
        X = _signed_log(pair_features(graph, a, b, user_features))
        _check_feature_count(X, self.n_features_in_)
        nodes = _node_inputs(graph, user_features)
        if nodes.shape[1] != len(self.node_mean_):
            raise InputError(f"user_features: fitted with {len(self.node_mean_) - 1} user feature(s), "
                             f"got {nodes.shape[1] - 1}")
        X = _standardized(X, self.pair_mean_, self.pair_scale_)
        probability = np.empty(len(a))
        with torch.no_grad():
            x_nodes, mean_adjacency = self._graph_tensors(graph, nodes)
            embedding = self.module_.encode(x_nodes, mean_adjacency)
            step = 1 << 18
            for start in range(0, len(a), step):
                part = slice(start, start + step)
                index_a = torch.as_tensor(a[part], device=embedding.device)
                index_b = torch.as_tensor(b[part], device=embedding.device)
                logit = self.module_.decode(embedding, index_a, index_b, self._tensor(X[part]))
                probability[part] = torch.sigmoid(logit).double().cpu().numpy()
        return probability

    def _tensor(self, values: np.ndarray):
        return torch.as_tensor(np.ascontiguousarray(values, dtype=np.float32), device=torch.device(self.device))

    def _graph_tensors(self, graph: InteractionGraph, nodes: np.ndarray):
        """Standardized node inputs and the row-normalized adjacency (mean over neighbours) as torch tensors."""
        x = self._tensor(_standardized(nodes, self.node_mean_, self.node_scale_))
        csr = _binary_adjacency(graph)
        degree = np.maximum(np.diff(csr.indptr), 1)
        adjacency = csr.tocoo()
        values = (1.0 / degree[adjacency.row]).astype(np.float32)
        index = torch.as_tensor(np.vstack([adjacency.row, adjacency.col]).astype(np.int64))
        mean_adjacency = torch.sparse_coo_tensor(index, torch.as_tensor(values), (graph.n_users, graph.n_users),
                                                 check_invariants=False)  # valid by construction
        return x, mean_adjacency.coalesce().to(torch.device(self.device))


class _SageLinkModel(torch.nn.Module):
    """Two GraphSAGE mean-aggregation layers (encoder) and an MLP on pairs of embeddings (decoder)."""

    def __init__(self, n_node_inputs: int, n_pair_features: int, hidden: int):
        super().__init__()
        self.self1 = torch.nn.Linear(n_node_inputs, hidden)
        self.neighbours1 = torch.nn.Linear(n_node_inputs, hidden, bias=False)
        self.self2 = torch.nn.Linear(hidden, hidden)
        self.neighbours2 = torch.nn.Linear(hidden, hidden, bias=False)
        self.decoder = torch.nn.Sequential(torch.nn.Linear(2 * hidden + n_pair_features, hidden), torch.nn.ReLU(),
                                           torch.nn.Linear(hidden, 1))

    def encode(self, x, mean_adjacency):
        h = torch.relu(self.self1(x) + self.neighbours1(torch.sparse.mm(mean_adjacency, x)))
        return self.self2(h) + self.neighbours2(torch.sparse.mm(mean_adjacency, h))

    def decode(self, embedding, a, b, pair_x):
        h_a, h_b = embedding[a], embedding[b]
        return self.decoder(torch.cat([h_a * h_b, (h_a - h_b).abs(), pair_x], dim=1)).squeeze(1)


# ------------------------------------------------------------------ LinkLouvain's graph
@dataclass(frozen=True, eq=False)
class LinkPrediction:
    """The predicted interaction graph and how well the predictor did.

    graph: kept pairs weighted by predicted probability, on the relation graph's users (same `user_ids`).
    auc: ROC AUC on held-out past interactions against as many held-out sampled non-interacting pairs.
    threshold: least probability kept (past interactions are kept whatever their probability).
    n_candidates: pairs scored (candidate pairs and past interactions); n_kept: edges of `graph`.
    predictor: the fitted predictor that scored the pairs (trained on the past interactions not held out).
    """

    graph: InteractionGraph
    auc: float
    threshold: float
    n_candidates: int
    n_kept: int
    predictor: object

    def to_frame(self) -> pd.DataFrame:
        """One row per kept pair: `src`, `dst` (user labels) and `probability` (the edge weight)."""
        frame = self.graph.to_frame()
        return frame.rename(columns={"weight": "probability"})

    def summary(self) -> dict[str, float]:
        return {"auc": self.auc, "threshold": self.threshold, "n_candidates": self.n_candidates,
                "n_kept": self.n_kept, "n_users": self.graph.n_users}


def predicted_interaction_graph(edges: pd.DataFrame, users=None, *, predictor=None, past_kind: str = "invite",
                                threshold: float = 0.1, max_per_node: int = 20, holdout: float = 0.2,
                                random_state: int = 0) -> LinkPrediction:
    """LinkLouvain's graph: pairs likely to interact, weighted by predicted probability.

    edges: src, dst, optional weight, and kind; edges of kind `past_kind` are past interactions (the labels), all
        other kinds are relations (the graph that features and messages come from).
    users: who is in the experiment: None (every user the edges name, past interactions included), the ids, or a
        table with user_id whose numeric columns (other than user_id) are user features; past interactions naming
        other users are dropped with a `GraphInputWarning`.
    predictor: an unfitted link predictor (default `FeatureLinkPredictor()`); cloned, never modified.
    threshold: least predicted probability kept; past-interaction pairs are always kept (an observed interaction
        is evidence that the pair interacts). Default 0.1: on the synthetic campaign
        (benchmarks/bench_abtest_linklouvain.py) it cuts as little hidden interaction weight as keeping every
        candidate (bias 23.5% below observed-graph Louvain against 23.3%) with 57% fewer edges, while 0.2-0.5 cut
        more (20-21%): a low probability is a weak edge, and Louvain uses it as one.
    max_per_node: friend-of-friend pairs each user starts in `candidate_pairs`.
    holdout: share of past interactions held out (seeded by `random_state`) to measure the AUC. The predictor fitted on
        the rest is the one that scores the candidates (not refitted on all: with thousands of past interactions a
        refit gains little and doubles the cost, and the AUC reported is that of the model used).
    random_state: draws the held-out share, the negatives and the tie-breaks among friend-of-friend candidates.
    """
    threshold = _checked_share("threshold", threshold, closed_low=True)
    holdout = _checked_share("holdout", holdout, closed_low=False)
    _check_max_per_node(max_per_node)
    if not isinstance(edges, pd.DataFrame):
        raise InputError(f"edges: need a DataFrame with columns src, dst, kind, got {type(edges).__name__}")
    if "kind" not in edges.columns:
        raise InputError(f"edges: missing column 'kind' (past interactions are the edges of kind {past_kind!r}); "
                         f"have {list(edges.columns)}")
    past_rows = (edges["kind"] == past_kind).to_numpy()
    if not past_rows.any():
        raise InputError(f"edges.kind: no edge of kind {past_kind!r} (past interactions) among kinds "
                         f"{sorted(edges['kind'].dropna().astype(str).unique().tolist())}")
    if users is None:
        named = pd.unique(np.concatenate([edges["src"].to_numpy(), edges["dst"].to_numpy()]))
        user_ids = np.sort(named[~pd.isna(named)])
    else:
        user_ids = users
    relation = build_graph(edges.loc[~past_rows], user_ids)
    past = build_graph(edges.loc[past_rows], relation.user_ids)
    if past.n_edges < MIN_PAST_INTERACTIONS:
        raise InputError(f"edges: {past.n_edges} past interaction(s) of kind {past_kind!r} between users of the "
                         f"graph; need at least {MIN_PAST_INTERACTIONS} to train a link predictor")
    features = _user_feature_matrix(users) if isinstance(users, pd.DataFrame) else None
    predictor = FeatureLinkPredictor() if predictor is None else predictor
    ratio = float(getattr(predictor, "negatives_per_positive", 2.0))
    rng = np.random.default_rng(random_state)

    candidates = candidate_pairs(relation, max_per_node=max_per_node, random_state=random_state)
    n_past = past.n_edges
    n_test = min(max(int(round(holdout * n_past)), 1), n_past - 1)
    order = rng.permutation(n_past)
    test, train = order[:n_test], order[n_test:]
    # Held-out negatives first, then the training ones: disjoint, and neither contains a past interaction.
    negative_a, negative_b = _sample_negatives(relation.n_users, candidates, past.src, past.dst,
                                               n_test + int(math.ceil(ratio * len(train))), rng)
    if len(negative_a) <= n_test:
        raise InputError("edges: too few user pairs without a past interaction to sample negatives from")
    fitted = _clone(predictor).fit(relation, past.src[train], past.dst[train], features,
                                   negatives=(negative_a[n_test:], negative_b[n_test:]))
    scores = fitted.predict_proba(relation, np.concatenate([past.src[test], negative_a[:n_test]]),
                                  np.concatenate([past.dst[test], negative_b[:n_test]]), features)
    auc = float(roc_auc_score(np.r_[np.ones(n_test), np.zeros(n_test)], scores))

    n = relation.n_users
    past_keys = past.src * n + past.dst
    keys = _sorted_unique(np.concatenate([candidates[0] * n + candidates[1], past_keys]))
    a, b = keys // max(n, 1), keys % max(n, 1)
    probability = fitted.predict_proba(relation, a, b, features)
    keep = (probability >= threshold) | _is_member(keys, past_keys)
    weight = np.clip(probability[keep], np.finfo(float).tiny, None)  # edge weights must be positive
    graph = InteractionGraph(relation.user_ids, a[keep], b[keep], weight.astype(np.float64))
    return LinkPrediction(graph, auc, threshold, len(keys), int(keep.sum()), fitted)


# ------------------------------------------------------------------ helpers
def _binary_adjacency(graph: InteractionGraph) -> sparse.csr_matrix:
    """Symmetric 0/1 adjacency with sorted indices (unweighted: features count neighbours, not interactions)."""
    indptr, neighbour, _ = graph.adjacency
    ones = np.ones(len(neighbour))
    return sparse.csr_matrix((ones, neighbour, indptr), shape=(graph.n_users, graph.n_users))


def _chunks(work: np.ndarray, budget: int):
    """Consecutive (start, stop) ranges whose summed `work` is about `budget` (at least one item each)."""
    total = np.cumsum(work)
    start = 0
    while start < len(work):
        base = total[start - 1] if start else 0.0
        stop = max(int(np.searchsorted(total, base + budget, side="right")), start + 1)
        yield start, min(stop, len(work))
        start = stop


def _sorted_unique(keys: np.ndarray) -> np.ndarray:
    """np.unique by sort and compare (numpy's hash-based unique is many times slower on int64 pair keys)."""
    keys = np.sort(keys)
    return keys[np.concatenate(([True], keys[1:] != keys[:-1]))] if keys.size else keys


def _is_member(keys: np.ndarray, sorted_keys: np.ndarray) -> np.ndarray:
    if not len(sorted_keys):
        return np.zeros(len(keys), dtype=bool)
    position = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
    return sorted_keys[position] == keys


def _checked_pairs(graph: InteractionGraph, a, b, what: str) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a), np.asarray(b)
    if a.ndim != 1 or a.shape != b.shape:
        raise InputError(f"{what}: a and b must be 1-d arrays of equal length, got shapes {a.shape} and {b.shape}")
    if len(a) and not (np.issubdtype(a.dtype, np.integer) and np.issubdtype(b.dtype, np.integer)):
        raise InputError(f"{what}: need integer node indices, got dtypes {a.dtype} and {b.dtype}")
    a, b = a.astype(np.int64, copy=False), b.astype(np.int64, copy=False)
    if len(a) and (min(a.min(), b.min()) < 0 or max(a.max(), b.max()) >= graph.n_users):
        raise InputError(f"{what}: node indices must lie in 0..{graph.n_users - 1}")
    return a, b


def _checked_user_features(user_features, n_users: int) -> np.ndarray:
    x = np.asarray(user_features, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[0] != n_users:
        raise InputError(f"user_features: need an array of shape ({n_users}, p), one row per user, got {x.shape}")
    return x


def _check_feature_count(X: np.ndarray, fitted: int) -> None:
    if X.shape[1] != fitted:
        raise InputError(f"pair features: the predictor was fitted on {fitted} feature(s), got {X.shape[1]} (same "
                         "user features as in fit?)")


def _checked_share(name: str, value, *, closed_low: bool) -> float:
    """`value` as a float in [0, 1) (closed_low) or (0, 1); else ValueError naming `name`."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name}: must be a number, got {value!r}") from None
    inside = (value >= 0.0 if closed_low else value > 0.0) and value < 1.0
    if not (np.isfinite(value) and inside):
        raise InputError(f"{name}: must lie in {'[' if closed_low else '('}0, 1), got {value}")
    return value


def _check_max_per_node(max_per_node) -> None:
    if isinstance(max_per_node, bool) or not isinstance(max_per_node, int | np.integer) or max_per_node < 0:
        raise InputError(f"max_per_node: must be a non-negative integer, got {max_per_node!r}")


def _user_feature_matrix(users: pd.DataFrame) -> np.ndarray | None:
    """Numeric columns other than user_id, standardized (missing and infinite values stay NaN); None if none."""
    columns = [c for c in users.columns
               if c != "user_id" and pd.api.types.is_numeric_dtype(users[c])]
    if not columns:
        return None
    x = users[columns].to_numpy(dtype=np.float64, na_value=np.nan)
    x[~np.isfinite(x)] = np.nan
    x = x[:, ~np.isnan(x).all(axis=0)]
    if not x.shape[1]:
        return None
    mean, scale = _standardizer(x)
    return (x - mean) / scale


def _standardizer(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column means and standard deviations ignoring NaN (scale 1 for constant or empty columns)."""
    if not len(x):
        return np.zeros(x.shape[1]), np.ones(x.shape[1])
    observed = ~np.isnan(x)
    count = observed.sum(axis=0)
    mean = np.divide(np.where(observed, x, 0.0).sum(axis=0), count, out=np.zeros(x.shape[1]), where=count > 0)
    deviation = np.where(observed, x - mean, 0.0)
    std = np.sqrt(np.divide((deviation ** 2).sum(axis=0), count, out=np.zeros(x.shape[1]), where=count > 0))
    return mean, np.where(std > 1e-12, std, 1.0)


def _standardized(x: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """(x - mean) / scale with missing values at the mean (0): the network cannot take NaN."""
    return np.nan_to_num((x - mean) / scale, nan=0.0)


def _signed_log(x: np.ndarray) -> np.ndarray:
    """sign(x) log(1 + |x|): tames heavy-tailed counts (common neighbours) for the network's inputs."""
    return np.sign(x) * np.log1p(np.abs(x))


def _node_inputs(graph: InteractionGraph, user_features: np.ndarray | None) -> np.ndarray:
    """A user's input to the encoder: their features and log(1 + degree)."""
    log_degree = np.log1p(graph.degree.astype(np.float64))[:, None]
    if user_features is None:
        return log_degree
    return np.column_stack([_checked_user_features(user_features, graph.n_users), log_degree])


def _clone(predictor):
    return clone(predictor) if hasattr(predictor, "get_params") else copy.deepcopy(predictor)


def _sample_negatives(n_users: int, candidates: tuple[np.ndarray, np.ndarray], positive_a: np.ndarray,
                      positive_b: np.ndarray, count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """`count` distinct non-positive pairs (a < b) in random order: a share `CANDIDATE_NEGATIVE_SHARE` from the
    candidate pairs (related users who did not interact: the hard cases the predictor must rank), the rest uniformly
    random pairs. Fewer when the graph has too few pairs left."""
    n = n_users
    positive = _sorted_unique(np.minimum(positive_a, positive_b).astype(np.int64) * n
                              + np.maximum(positive_a, positive_b))
    pool = candidates[0].astype(np.int64) * n + candidates[1]
    pool = pool[~_is_member(pool, positive)]
    from_pool = min(int(round(CANDIDATE_NEGATIVE_SHARE * count)), len(pool))
    chosen = rng.choice(pool, size=from_pool, replace=False) if from_pool else np.zeros(0, dtype=np.int64)
    taken = _sorted_unique(np.concatenate([positive, chosen]))
    random_keys: list[np.ndarray] = []
    need = count - from_pool
    for _ in range(50):
        if need <= 0:
            break
        draw = rng.integers(0, n, size=(2, 2 * need + 16))
        lo, hi = draw.min(axis=0).astype(np.int64), draw.max(axis=0).astype(np.int64)
        key = (lo * n + hi)[lo != hi]
        order = np.argsort(key, kind="stable")
        first = np.ones(len(key), dtype=bool)
        first[1:] = key[order[1:]] != key[order[:-1]]
        key = key[np.sort(order[first])]  # distinct pairs, in the order drawn
        key = key[~_is_member(key, taken)][:need]
        random_keys.append(key)
        taken = _sorted_unique(np.concatenate([taken, key]))
        need -= len(key)
    if need > 0:  # a small, dense graph: top up from the candidates left
        rest = pool[~_is_member(pool, taken)]
        random_keys.append(rng.permutation(rest)[:need])
    keys = rng.permutation(np.concatenate([chosen, *random_keys]))
    return keys // max(n, 1), keys % max(n, 1)


def _training_set(graph: InteractionGraph, a, b, user_features, negatives, negatives_per_positive: float,
                  random_state, return_pairs: bool = False):
    """Pair features and labels of positives (a, b) and the given or sampled negatives."""
    a, b = _checked_pairs(graph, a, b, "positives")
    if not len(a):
        raise InputError("positives: need at least one interacting pair")
    if negatives is None:
        ratio = float(negatives_per_positive)
        if not (np.isfinite(ratio) and ratio > 0):
            raise InputError(f"negatives_per_positive: must be positive, got {negatives_per_positive}")
        rng = np.random.default_rng(random_state)
        candidates = candidate_pairs(graph, random_state=0 if random_state is None else int(random_state))
        negatives = _sample_negatives(graph.n_users, candidates, a, b, int(math.ceil(ratio * len(a))), rng)
    negative_a, negative_b = _checked_pairs(graph, *negatives, "negatives")
    if not len(negative_a):
        raise InputError("negatives: need at least one non-interacting pair")
    pair_a, pair_b = np.concatenate([a, negative_a]), np.concatenate([b, negative_b])
    X = pair_features(graph, pair_a, pair_b, user_features)
    y = np.r_[np.ones(len(a)), np.zeros(len(negative_a))]
    return ((pair_a, pair_b), X, y) if return_pairs else (X, y)
