"""Labels as people read them: integer arms sort as numbers everywhere, and messages print ids as plain values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from abtest.graph import build_graph
from bandits.feedback import LoggedFeedback, encode_arms
from campaign_core import InputError, plain, sorted_labels
from causal_fs import score_features


@pytest.mark.parametrize(("labels", "expected"), [
    ([10, 9, 100], (9, 10, 100)),
    (np.array([10, 9, 100]), (9, 10, 100)),
    ([np.int64(10), 9, np.int32(100)], (9, 10, 100)),
    (["b", "a", "c"], ("a", "b", "c")),
    (["b", 10, 9], (9, 10, "b")),  # numbers first, in numeric order, then text
    ([2.5, 1, 10], (1, 2.5, 10)),
])
def test_sorted_labels(labels, expected):
    result = sorted_labels(labels)
    assert result == expected
    assert not any(isinstance(label, np.generic) for label in result)


def test_plain_turns_numpy_scalars_into_python_values():
    assert repr(plain(np.int64(5))) == "5" and repr(plain(np.str_("a"))) == "'a'" and plain("x") == "x"


def test_feedback_and_feature_scores_order_integer_arms_as_numbers():
    frame = pd.DataFrame({"x": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6], "arm": [10, 9, 100, 10, 9, 100],
                          "reward": [1.0, 0.0, 1.0, 0.0, 1.0, 0.0]})
    feedback = LoggedFeedback.from_frame(frame, ["x"], propensity=None)
    assert feedback.arm_labels == (9, 10, 100)
    rng = np.random.default_rng(0)
    data = pd.DataFrame({"x": rng.normal(size=600), "arm": rng.choice([10, 9, 100], 600),
                         "reward": rng.normal(size=600)})
    scores = score_features(data, ["x"], arm_col="arm", reward_col="reward", methods=("hie",), n_permutations=0)
    assert tuple(scores.arms) == (9, 10, 100)


def test_messages_print_integer_ids_as_plain_values():
    with pytest.raises(InputError, match=r"unknown to the policy \[5\]; known arms: \[9, 10\]"):
        encode_arms(np.array([9, 5]), (np.int64(9), np.int64(10)))
    graph = build_graph(pd.DataFrame({"src": np.array([1, 2]), "dst": np.array([2, 3])}))
    with pytest.raises(InputError, match=r"\(e\.g\. 5\)$"):
        graph.positions(np.array([1, 5]))
    with pytest.raises(InputError, match=r"duplicate id\(s\) \(e\.g\. 3\)$"):
        build_graph(pd.DataFrame({"src": [1], "dst": [2]}), users=np.array([1, 2, 3, 3]))


def test_transitions_name_numpy_actions_plainly():
    from budget_rl.offline import Transitions

    frame = pd.DataFrame({"user_id": [1], "day": [0], "action": [7], "reward": [1.0], "cost": [0.0],
                          "state_a": [1.0], "next_a": [1.0]})
    with pytest.raises(InputError, match=r"outside the action set \[0, 1\]: \[7\]$"):
        Transitions.from_frame(frame, np.array([0, 1]), 1)
