"""LinkLouvain's link prediction against known answers: networkx's link-prediction indices, the candidate rule
checked pair by pair, and the synthetic campaign's hidden interaction graph (which the predictor never sees)."""

from __future__ import annotations

import math
import warnings

import networkx as nx
import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from threadpoolctl import threadpool_limits

from abtest import GraphInputWarning, build_graph, cluster_graph, graph_from_networkx
from abtest.linkpred import (
    GRAPH_FEATURES,
    FeatureLinkPredictor,
    GNNLinkPredictor,
    LinkPrediction,
    candidate_pairs,
    pair_feature_names,
    pair_features,
    predicted_interaction_graph,
)
from pipelines.synthetic import CampaignConfig, simulate_campaign

N_USERS = 3_000


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Small fits: OpenMP and torch threads only add overhead (and crawl on a shared 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def campaign():
    """3,000 users, about 15,000 friendships and 5,700 past invitations (edges of kind "invite")."""
    return simulate_campaign(CampaignConfig(n_users=N_USERS, n_days=1, chunk_users=1_000), random_state=11)


@pytest.fixture(scope="module")
def prediction(campaign) -> LinkPrediction:
    return predicted_interaction_graph(campaign.edges, campaign.users, threshold=0.5, random_state=0)


def _keys(a, b, n: int) -> np.ndarray:
    a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
    return np.minimum(a, b) * n + np.maximum(a, b)


def _common_neighbour_counts(nxg: nx.Graph) -> dict[int, dict[int, int]]:
    """Every pair two hops apart that is not an edge, with its number of common neighbours (from networkx)."""
    counts: dict[int, dict[int, int]] = {}
    for u in nxg:
        counts[u] = {}
        for v in nxg[u]:
            for w in nxg[v]:
                if w != u and not nxg.has_edge(u, w):
                    counts[u][w] = counts[u].get(w, 0) + 1
    return counts


# ------------------------------------------------------------------ candidate pairs
@pytest.mark.parametrize("k", [0, 1, 3, 1_000])
def test_candidates_are_every_edge_and_the_best_friend_of_friend_pairs(k):
    nxg = nx.powerlaw_cluster_graph(300, 3, 0.3, seed=4)
    graph = graph_from_networkx(nxg)
    n = graph.n_users
    a, b = candidate_pairs(graph, max_per_node=k, random_state=5)
    assert a.dtype == b.dtype == np.int64 and (a < b).all()
    keys = _keys(a, b, n)
    assert (np.diff(keys) > 0).all()  # sorted, unique
    assert np.isin(_keys(graph.src, graph.dst, n), keys).all()
    counts = _common_neighbour_counts(nxg)
    chosen = {(int(x), int(y)) for x, y in zip(a, b, strict=True) if not nxg.has_edge(x, y)}
    # The k-th largest common-neighbour count among each user's pairs (0 when it has fewer than k; none when k = 0).
    kth = {u: math.inf if k == 0 else sorted(c.values(), reverse=True)[k - 1] if k <= len(c) else 0
           for u, c in counts.items()}
    for x, y in chosen:
        assert y in counts[x]  # friends of friends only
        assert counts[x][y] >= kth[x] or counts[y][x] >= kth[y]  # among the best of one of its users
    for u, c in counts.items():
        kept = {w for w in c if (min(u, w), max(u, w)) in chosen}
        assert {w for w, common in c.items() if common > kth[u]} <= kept  # strictly better pairs are never skipped
        assert len({w for w in kept if c[w] >= kth[u]}) >= min(k, len(c))  # u started its k best
        assert len({w for w in kept if c[w] < kth[w]}) <= k  # pairs only u can have started: at most k
    assert len(chosen) <= n * k
    if k == 0:
        assert len(keys) == graph.n_edges
    if k == 1_000:  # no cap binds: every friend-of-friend pair
        assert len(chosen) == sum(len(c) for c in counts.values()) // 2


def test_cap_binds_per_user_and_ties_are_a_seeded_draw():
    # In a grid every user has 4 diagonal friend-of-friend pairs (2 common neighbours) and up to 4 straight ones
    # (1 common neighbour): with a cap of 5 the diagonals are always kept and one straight pair is drawn.
    graph = graph_from_networkx(nx.convert_node_labels_to_integers(nx.grid_2d_graph(12, 12)))
    nxg = graph.to_networkx(weight=False)
    counts = _common_neighbour_counts(nxg)
    first = candidate_pairs(graph, max_per_node=5, random_state=1)
    keys = _keys(*first, graph.n_users)
    diagonal = [(u, w) for u, c in counts.items() for w, common in c.items() if common == 2]
    assert np.isin(_keys(*np.array(diagonal).T, graph.n_users), keys).all()
    chosen = set(zip(first[0].tolist(), first[1].tolist(), strict=True))
    straight = sum(1 for x, y in chosen if not nxg.has_edge(x, y) and counts[x][y] == 1)
    assert straight < sum(len(c) - 4 for c in counts.values() if len(c) == 8) // 2 + 150  # far from all 240
    again = candidate_pairs(graph, max_per_node=5, random_state=1)
    other = candidate_pairs(graph, max_per_node=5, random_state=2)
    assert np.array_equal(first[0], again[0]) and np.array_equal(first[1], again[1])
    assert not np.array_equal(keys, _keys(*other, graph.n_users))


# ------------------------------------------------------------------ pair features
def test_pair_features_equal_networkx_indices():
    nxg = nx.karate_club_graph()
    graph = graph_from_networkx(nxg, weight=None)
    assert list(graph.user_ids) == list(nxg.nodes())  # node index == networkx label
    pairs = [(u, v) for u in nxg for v in nxg if u < v]
    a, b = np.array(pairs).T
    features = pair_features(graph, a, b, None)
    assert features.shape == (len(pairs), len(GRAPH_FEATURES))
    common = [len(list(nx.common_neighbors(nxg, u, v))) for u, v in pairs]
    adamic_adar = [s for _, _, s in nx.adamic_adar_index(nxg, pairs)]
    jaccard = [s for _, _, s in nx.jaccard_coefficient(nxg, pairs)]
    degree = np.array([nxg.degree(u) for u in range(nxg.number_of_nodes())])
    np.testing.assert_array_equal(features[:, 0], common)
    np.testing.assert_allclose(features[:, 1], adamic_adar, rtol=1e-12)
    np.testing.assert_allclose(features[:, 2], jaccard, rtol=1e-12)
    np.testing.assert_allclose(features[:, 3], np.log1p(np.minimum(degree[a], degree[b])))
    np.testing.assert_allclose(features[:, 4], np.log1p(np.maximum(degree[a], degree[b])))
    np.testing.assert_array_equal(features[:, 5], [nxg.has_edge(u, v) for u, v in pairs])


def test_pair_features_known_answers_and_symmetry():
    # Triangle 0-1-2 with a pendant 3 on 1. Users 0 and 3 share friend 1 (3 friends) out of {1, 2} and {1}; friends
    # 0 and 1 share friend 2 (2 friends) out of {1, 2} and {0, 2, 3}.
    graph = build_graph(pd.DataFrame({"src": [0, 0, 1, 1], "dst": [1, 2, 2, 3]}))
    x = np.array([[1.0, 0.0], [2.0, np.nan], [4.0, 1.0], [-1.0, 2.0]])
    features = pair_features(graph, np.array([0, 3, 0]), np.array([3, 0, 1]), x)
    assert pair_feature_names(["u", "v"]) == [*GRAPH_FEATURES, "absdiff_u", "absdiff_v", "product_u", "product_v"]
    expected = [1.0, 1 / math.log(3), 0.5, math.log(2), math.log(3), 0.0, 2.0, 2.0, -1.0, 0.0]
    np.testing.assert_allclose(features[0], expected)
    np.testing.assert_array_equal(features[0], features[1])  # symmetric in the two users
    np.testing.assert_allclose(features[2, :6], [1.0, 1 / math.log(2), 1 / 4, math.log(3), math.log(4), 1.0])
    assert np.isnan(features[2, [7, 9]]).all()  # a missing user feature stays missing


# ------------------------------------------------------------------ feature model on the synthetic campaign
def test_feature_model_predicts_held_out_and_hidden_interactions(campaign, prediction):
    # Held-out past invitations against as many sampled non-interacting pairs: ~1,100 of each, so chance gives
    # AUC 0.5 +- 0.012; measured 0.94.
    assert prediction.auc > 0.85
    graph = prediction.graph
    n = graph.n_users
    edges = campaign.edges
    relation = build_graph(edges[edges["kind"] == "friend"], campaign.users)
    candidates = _keys(*candidate_pairs(relation), n)
    hidden = build_graph(campaign.truth.interactions, campaign.users)
    interacts = np.isin(candidates, _keys(hidden.src, hidden.dst, n))
    # The weighted graph ranks the candidate pairs that do interact in the (hidden) current period above those that
    # do not (0 where a pair was dropped), and better than being friends does (measured 0.90 and 0.88).
    weight = pd.Series(graph.weight, index=_keys(graph.src, graph.dst, n)).reindex(candidates).fillna(0.0)
    auc_hidden = roc_auc_score(interacts, weight.to_numpy())
    auc_friend = roc_auc_score(interacts, np.isin(candidates, _keys(relation.src, relation.dst, n)))
    assert auc_hidden > 0.85 and auc_hidden > auc_friend + 0.01
    assert weight[interacts].mean() > 2 * weight[~interacts].mean()


def test_predicted_graph_keeps_confident_pairs_and_past_interactions(campaign, prediction):
    graph = prediction.graph
    assert np.array_equal(graph.user_ids, campaign.users["user_id"].to_numpy())
    keys = _keys(graph.src, graph.dst, graph.n_users)
    assert (graph.src < graph.dst).all() and (np.diff(np.sort(keys)) > 0).all()
    assert ((graph.weight > 0) & (graph.weight <= 1)).all()
    assert prediction.n_kept == graph.n_edges < prediction.n_candidates
    pairs = prediction.to_frame()
    assert list(pairs.columns) == ["src", "dst", "probability"] and len(pairs) == prediction.n_kept
    np.testing.assert_array_equal(pairs["probability"], graph.weight)
    assert prediction.summary() == {"auc": prediction.auc, "threshold": prediction.threshold,
                                    "n_candidates": prediction.n_candidates, "n_kept": prediction.n_kept,
                                    "n_users": graph.n_users}
    past = build_graph(campaign.edges[campaign.edges["kind"] == "invite"], campaign.users)
    is_past = np.isin(keys, _keys(past.src, past.dst, graph.n_users))
    assert is_past.sum() == past.n_edges  # every past interaction is kept ...
    assert (graph.weight[~is_past] >= prediction.threshold).all()  # ... other pairs only when confident
    assert (graph.weight[is_past] < prediction.threshold).any()
    # user features: the 9 numeric columns (strings such as `segment` are ignored), |difference| and product
    numeric = campaign.users.drop(columns="user_id").select_dtypes("number").shape[1]
    assert prediction.predictor.n_features_in_ == len(GRAPH_FEATURES) + 2 * numeric


def test_higher_threshold_keeps_fewer_pairs_and_same_seed_same_graph(campaign, prediction):
    again = predicted_interaction_graph(campaign.edges, campaign.users, threshold=0.5, random_state=0)
    assert np.array_equal(again.graph.src, prediction.graph.src)
    np.testing.assert_array_equal(again.graph.weight, prediction.graph.weight)
    assert again.auc == prediction.auc
    strict = predicted_interaction_graph(campaign.edges, campaign.users, threshold=0.8, random_state=0)
    assert strict.n_kept < prediction.n_kept
    assert strict.n_candidates == prediction.n_candidates
    lenient = predicted_interaction_graph(campaign.edges, campaign.users, random_state=0)  # default threshold 0.1
    everything = predicted_interaction_graph(campaign.edges, campaign.users, threshold=0.0, random_state=0)
    assert lenient.threshold == 0.1 and prediction.n_kept < lenient.n_kept < everything.n_kept
    assert everything.n_kept == everything.n_candidates


class _SpyClassifier(LogisticRegression):
    """Logistic regression that keeps the training matrix it was given."""

    def fit(self, X, y, sample_weight=None):
        self.X_seen_, self.y_seen_ = X, y
        return super().fit(np.nan_to_num(X), y, sample_weight)

    def predict_proba(self, X):
        return super().predict_proba(np.nan_to_num(X))


def test_features_come_from_relations_only_never_from_past_interactions():
    # Friends form a ring (every user has 4 friends); past interactions join users 10 apart, never friends. Had the
    # past interactions leaked into the features, positives would be edges and their users would have degree > 4.
    n = 200
    ring = graph_from_networkx(nx.watts_strogatz_graph(n, 4, 0.0, seed=0))
    past = pd.DataFrame({"src": np.arange(0, n, 5), "dst": (np.arange(0, n, 5) + 10) % n})
    edges = pd.concat([ring.to_frame().assign(kind="friend"), past.assign(weight=1.0, kind="invite")])
    result = predicted_interaction_graph(edges, predictor=FeatureLinkPredictor(_SpyClassifier()), random_state=3)
    X, y = result.predictor.classifier_.X_seen_, result.predictor.classifier_.y_seen_
    positives = X[y == 1]
    assert len(positives) == len(past) - round(0.2 * len(past))
    assert (positives[:, GRAPH_FEATURES.index("is_edge")] == 0).all()
    assert (positives[:, GRAPH_FEATURES.index("common_neighbours")] == 0).all()
    np.testing.assert_allclose(X[:, GRAPH_FEATURES.index("log_degree_max")], math.log(5))
    assert (X[y == 0, GRAPH_FEATURES.index("is_edge")] == 1).any()  # related non-interacting pairs as negatives


def test_users_as_ids_or_none_and_unknown_users(campaign):
    edges = campaign.edges
    ids = campaign.users["user_id"].to_numpy()
    by_ids = predicted_interaction_graph(edges, ids, predictor=FeatureLinkPredictor(LogisticRegression()),
                                         random_state=0)
    assert by_ids.predictor.n_features_in_ == len(GRAPH_FEATURES)  # no user features
    assert np.array_equal(by_ids.graph.user_ids, ids)
    # Without users, a user known only from a past interaction is still a user of the experiment.
    extra = pd.DataFrame({"src": [N_USERS], "dst": [0], "weight": [1.0], "kind": ["invite"]})
    grown = pd.concat([edges, extra], ignore_index=True)
    without = predicted_interaction_graph(grown, predictor=FeatureLinkPredictor(LogisticRegression()), random_state=0)
    assert without.graph.n_users == N_USERS + 1
    with pytest.warns(GraphInputWarning, match="1 edge"):
        restricted = predicted_interaction_graph(grown, ids, predictor=FeatureLinkPredictor(LogisticRegression()),
                                                 random_state=0)
    assert restricted.graph.n_users == N_USERS


def test_linklouvain_clusters_on_the_predicted_graph(campaign):
    clusters = cluster_graph(campaign.edges, method="linklouvain", users=campaign.users, random_state=0)
    assert np.array_equal(clusters.user_ids, campaign.users["user_id"].to_numpy())
    assert 10 < clusters.n_clusters < N_USERS // 2


def test_predictor_follows_scikit_learn_conventions(campaign):
    predictor = FeatureLinkPredictor(negatives_per_positive=3.0, random_state=4)
    assert clone(predictor).get_params() == predictor.get_params()
    graph = build_graph(campaign.edges[campaign.edges["kind"] == "friend"], campaign.users)
    with pytest.raises(NotFittedError):
        predictor.predict_proba(graph, np.array([0]), np.array([1]))
    past = build_graph(campaign.edges[campaign.edges["kind"] == "invite"], campaign.users)
    assert predictor.fit(graph, past.src, past.dst) is predictor
    assert predictor.n_negatives_ == 3 * predictor.n_positives_
    p = predictor.predict_proba(graph, past.src[:5], past.dst[:5])
    assert p.shape == (5,) and ((p >= 0) & (p <= 1)).all()
    with pytest.raises(ValueError, match="fitted on 6 feature"):
        predictor.predict_proba(graph, past.src[:5], past.dst[:5], np.zeros((graph.n_users, 2)))


# ------------------------------------------------------------------ graph neural network
def test_gnn_predicts_held_out_interactions_and_is_reproducible():
    small = simulate_campaign(CampaignConfig(n_users=1_500, n_days=1, chunk_users=500), random_state=12)
    runs = [predicted_interaction_graph(small.edges, small.users, predictor=GNNLinkPredictor(random_state=7),
                                        random_state=1)
            for _ in range(2)]
    # ~570 held-out invitations and as many non-interacting pairs: chance gives 0.5 +- 0.017; measured 0.93.
    assert runs[0].auc > 0.85
    np.testing.assert_array_equal(runs[0].graph.weight, runs[1].graph.weight)
    assert np.array_equal(runs[0].graph.src, runs[1].graph.src)
    gnn = runs[0].predictor
    assert isinstance(gnn, GNNLinkPredictor) and 1 <= gnn.n_epochs_ <= gnn.epochs
    # Another seed: other weights, other probabilities.
    relation = build_graph(small.edges[small.edges["kind"] == "friend"], small.users)
    past = build_graph(small.edges[small.edges["kind"] == "invite"], small.users)
    a, b = candidate_pairs(relation)
    state = torch.random.get_rng_state()
    seeded = [GNNLinkPredictor(epochs=20, random_state=seed).fit(relation, past.src, past.dst) for seed in (7, 7, 8)]
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's random state is left alone
    p7, p7_again, p8 = (model.predict_proba(relation, a, b) for model in seeded)
    np.testing.assert_array_equal(p7, p7_again)
    assert not np.allclose(p7, p8)


# ------------------------------------------------------------------ bad input
def _edges(n_past: int = 12, kind: str = "invite") -> pd.DataFrame:
    friends = pd.DataFrame({"src": np.arange(30), "dst": (np.arange(30) + 1) % 30, "kind": "friend"})
    past = pd.DataFrame({"src": np.arange(n_past), "dst": np.arange(n_past) + 3, "kind": kind})
    return pd.concat([friends, past], ignore_index=True)


def test_small_graph_runs_end_to_end():
    result = predicted_interaction_graph(_edges(), predictor=FeatureLinkPredictor(LogisticRegression()))
    assert 0.0 <= result.auc <= 1.0 and result.graph.n_users == 30


@pytest.mark.parametrize(("change", "message"), [
    (lambda e: e.drop(columns="kind"), r"missing column 'kind' \(past interactions are the edges of kind 'invite'"),
    (lambda e: e.assign(kind="friend"), r"no edge of kind 'invite' \(past interactions\) among kinds \['friend'\]"),
    (lambda e: _edges(n_past=9), "9 past interaction.*need at least 10"),
    (lambda e: e.to_numpy(), "need a DataFrame"),
])
def test_bad_edges(change, message):
    with pytest.raises(ValueError, match=message):
        predicted_interaction_graph(change(_edges()))


@pytest.mark.parametrize(("keyword", "value", "message"), [
    ("threshold", 1.0, r"threshold: must lie in \[0, 1\), got 1.0"),
    ("threshold", -0.1, r"threshold: must lie in \[0, 1\)"),
    ("threshold", float("nan"), r"threshold: must lie in \[0, 1\)"),
    ("threshold", "high", "threshold: must be a number"),
    ("holdout", 0.0, r"holdout: must lie in \(0, 1\), got 0.0"),
    ("holdout", 1.0, r"holdout: must lie in \(0, 1\)"),
    ("max_per_node", -1, "max_per_node: must be a non-negative integer"),
    ("max_per_node", 2.5, "max_per_node: must be a non-negative integer"),
])
def test_bad_settings(keyword, value, message):
    with pytest.raises(ValueError, match=message):
        predicted_interaction_graph(_edges(), **{keyword: value})


def test_past_interactions_with_unknown_users_are_dropped_then_too_few():
    users = pd.DataFrame({"user_id": np.arange(30)})
    edges = _edges(n_past=12)
    edges.loc[edges["kind"] == "invite", "dst"] += 20  # 5 of 12 past interactions now name users 30..34
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GraphInputWarning)
        with pytest.raises(ValueError, match="7 past interaction"):
            predicted_interaction_graph(edges, users)


@pytest.mark.parametrize(("a", "b", "message"), [
    (np.array([0, 1]), np.array([1]), "equal length"),
    (np.array([0.0]), np.array([1.0]), "integer node indices"),
    (np.array([0]), np.array([30]), r"node indices must lie in 0..29"),
])
def test_bad_pairs(a, b, message):
    graph = build_graph(_edges().query("kind == 'friend'"))
    with pytest.raises(ValueError, match=message):
        pair_features(graph, a, b, None)


def test_bad_predictor_settings():
    graph = build_graph(_edges().query("kind == 'friend'"))
    with pytest.raises(ValueError, match="negatives_per_positive: must be positive"):
        FeatureLinkPredictor(negatives_per_positive=0).fit(graph, np.array([0]), np.array([5]))
    with pytest.raises(ValueError, match="epochs: must be a positive integer"):
        GNNLinkPredictor(epochs=0).fit(graph, np.array([0]), np.array([5]))
    with pytest.raises(ValueError, match=r"user_features: need an array of shape \(30, p\)"):
        pair_features(graph, np.array([0]), np.array([1]), np.zeros((29, 2)))
