"""Labels (arms, levels, ids) as people read them: integers in numeric order, and plain values in messages.

Arms come as strings or integers, often as numpy scalars out of a DataFrame. Sorted as text, arms 9, 10 and 100 come
out as 10, 100, 9; printed with `repr`, a numpy integer reads `np.int64(5)`. `sorted_labels` and `plain` fix both.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable
from typing import Any

import numpy as np


def plain(value: Any) -> Any:
    """A numpy scalar as the Python value it holds (np.int64(5) -> 5, np.str_('a') -> 'a'); anything else as is."""
    return value.item() if isinstance(value, np.generic) else value


def label_key(label: Any) -> tuple:
    """Sort key of a label: numbers (not booleans) first in numeric order, then every other label as text."""
    label = plain(label)
    if isinstance(label, numbers.Real) and not isinstance(label, bool):
        return (0, label, "")
    return (1, 0, str(label))


def sorted_labels(labels: Iterable) -> tuple:
    """Labels in a stable order: integers as numbers (9, 10, 100), text as text, numbers before text when they mix;
    every label a plain Python value."""
    return tuple(sorted((plain(label) for label in labels), key=label_key))
