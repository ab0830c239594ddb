"""The campaign's social graph (communities) and its hidden interaction graph (who actually influences whom).

Friendships follow a degree-corrected planted partition: users start Poisson numbers of friendships at rates
proportional to e^{0.4 z} (z = latent engagement), each landing inside the user's community with probability
1 - mixing and on a uniformly random user otherwise, until there are n * avg_degree / 2 distinct pairs (a random
subset of them when the last round overshoots). Community sizes are heavy-tailed (Pareto weights).

Interactions (invitations, shares) happen on candidate pairs (friends, friends of friends, a few random pairs) with
probability sigmoid(affinity), where

    affinity = -2.5 + 1.5 friend + 1.0 same_community + 0.5 (sociability_a + sociability_b)
               + 0.6 similarity_ab + eta_ab,        eta_ab ~ N(0, 1) persistent per pair,

and sociability follows engagement. Two independent periods are drawn from the same affinity: a past one that is
observed (edges of kind "invite") and the current one that stays hidden (the ground truth of who interacts).
Past invitations and features therefore predict the hidden graph, but only partly.

Dormant ties (`dormant_ties` > 0, default 0): after both periods are drawn, round(dormant_ties x friendships)
uniformly random pairs are added to the observed friendships (their own random stream, so every other draw is
unchanged). They stand for old contacts that never interact: they blur the observed graph's communities but not the
hidden interaction graph, and only past invitations and neighbourhoods tell them apart (LinkLouvain's premise).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipelines.synthetic.world import DORMANT_STREAM, GRAPH_STREAM, _sigmoid, stream


@dataclass(frozen=True)
class CampaignGraph:
    """Edges as arrays of user ids (src < dst, unique within each kind)."""

    community: np.ndarray  # (n_users,) community id of each user
    friend_src: np.ndarray
    friend_dst: np.ndarray
    invite_src: np.ndarray  # past-period interactions: observed
    invite_dst: np.ndarray
    interaction_src: np.ndarray  # current-period interactions: hidden ground truth
    interaction_dst: np.ndarray
    interaction_weight: np.ndarray  # number of interactions in the period (>= 1)


def _sorted_unique(keys: np.ndarray) -> np.ndarray:
    """np.unique for int64 keys by sort and compare (numpy's hash-based unique is ~100x slower on wide keys)."""
    keys = np.sort(keys)
    return keys[np.concatenate(([True], keys[1:] != keys[:-1]))] if keys.size else keys


def _unique_pairs(a: np.ndarray, b: np.ndarray, n: int) -> np.ndarray:
    """Sorted unique keys lo * n + hi of undirected pairs, self-pairs dropped."""
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    keep = lo != hi
    return _sorted_unique(lo[keep] * np.int64(n) + hi[keep])


def build_graph(seed: int, engagement: np.ndarray, similarity_signal: np.ndarray, *, avg_degree: float,
                community_size: int, mixing: float, dormant_ties: float = 0.0) -> CampaignGraph:
    """Draw communities, friendships and the two interaction periods for users 0..n-1."""
    rng = stream(seed, GRAPH_STREAM)
    n = engagement.size
    n_communities = max(1, int(round(n / community_size)))
    weights = rng.pareto(2.5, size=n_communities) + 1.0
    community = rng.choice(n_communities, size=n, p=weights / weights.sum())
    empty = np.zeros(0, dtype=np.int64)
    if avg_degree <= 0 or n < 2:
        return CampaignGraph(community, empty, empty, empty, empty, empty, empty, empty)

    # Friendships: rounds of draws until there are exactly n * avg_degree / 2 distinct pairs.
    members = np.argsort(community, kind="stable")
    sizes = np.bincount(community, minlength=n_communities)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    activity = np.exp(0.4 * engagement)
    activity /= activity.mean()
    target = min(int(round(n * avg_degree / 2.0)), n * (n - 1) // 2)
    friend_keys = np.zeros(0, dtype=np.int64)
    while friend_keys.size < target:
        # Poisson counts per user, then repeated ids: sequential memory access (random look-ups were 25% of the time).
        rate = 1.2 * (target - friend_keys.size) / n + 16 / n
        src = np.repeat(np.arange(n, dtype=np.int64), rng.poisson(rate * activity))
        draws = src.size
        home = community[src]
        within = members[starts[home] + np.floor(rng.random(draws) * sizes[home]).astype(np.int64)]
        dst = np.where(rng.random(draws) < mixing, rng.integers(0, n, size=draws), within)
        friend_keys = _sorted_unique(np.concatenate([friend_keys, _unique_pairs(src, dst, n)]))
        del src, home, within, dst
    friend_keys = np.sort(rng.choice(friend_keys, size=target, replace=False))
    friend_src, friend_dst = friend_keys // n, friend_keys % n

    # Candidate pairs: friends, one friend-of-friend pair per user with two or more friends, and random pairs.
    both = np.concatenate([friend_src, friend_dst])
    other = np.concatenate([friend_dst, friend_src])
    order = np.argsort(both, kind="stable")
    neighbours = other[order]
    degree = np.bincount(both, minlength=n)
    offset = np.concatenate([[0], np.cumsum(degree)[:-1]])
    hubs = np.flatnonzero(degree >= 2)
    first = np.floor(rng.random(hubs.size) * degree[hubs]).astype(np.int64)
    second = (first + 1 + np.floor(rng.random(hubs.size) * (degree[hubs] - 1)).astype(np.int64)) % degree[hubs]
    first_friend = neighbours[offset[hubs] + first]
    second_friend = neighbours[offset[hubs] + second]
    del both, other, order, neighbours
    n_random = max(1, n // 10)
    candidate_keys = _sorted_unique(np.concatenate([
        friend_keys,
        _unique_pairs(first_friend, second_friend, n),
        _unique_pairs(rng.integers(0, n, size=n_random), rng.integers(0, n, size=n_random), n),
    ]))
    a, b = candidate_keys // n, candidate_keys % n
    position = np.minimum(np.searchsorted(friend_keys, candidate_keys), friend_keys.size - 1)
    is_friend = friend_keys[position] == candidate_keys

    sociability = 0.7 * engagement + 0.7 * rng.standard_normal(n)
    similarity = 0.5 - np.abs(similarity_signal[a] - similarity_signal[b])
    affinity = (-2.5 + 1.5 * is_friend + 1.0 * (community[a] == community[b])
                + 0.5 * (sociability[a] + sociability[b]) + 0.6 * similarity + rng.standard_normal(a.size))
    invited = rng.random(a.size) < _sigmoid(affinity - 0.5)
    probability = _sigmoid(affinity)
    interacts = rng.random(a.size) < probability
    weight = 1 + rng.poisson(2.0 * probability[interacts])
    if dormant_ties > 0:
        friend_keys = _with_dormant_ties(stream(seed, DORMANT_STREAM), friend_keys, n, dormant_ties)
        friend_src, friend_dst = friend_keys // n, friend_keys % n
    return CampaignGraph(community, friend_src, friend_dst, a[invited], b[invited],
                         a[interacts], b[interacts], weight.astype(np.float64))


def _with_dormant_ties(rng: np.random.Generator, friend_keys: np.ndarray, n: int, ratio: float) -> np.ndarray:
    """`friend_keys` plus round(ratio x their number) uniformly random new pairs (capped by the pairs left)."""
    target = friend_keys.size + min(int(round(ratio * friend_keys.size)), n * (n - 1) // 2 - friend_keys.size)
    keys = friend_keys
    while keys.size < target:
        size = int(1.1 * (target - keys.size)) + 16
        keys = _sorted_unique(np.concatenate([keys, _unique_pairs(rng.integers(0, n, size), rng.integers(0, n, size),
                                                                  n)]))
    extra = np.setdiff1d(keys, friend_keys, assume_unique=True)
    extra = rng.choice(extra, size=target - friend_keys.size, replace=False)
    return np.sort(np.concatenate([friend_keys, extra]))
