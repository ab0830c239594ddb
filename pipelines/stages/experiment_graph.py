"""What the `assign` and `readout` stages share: the interaction graph read from an edges table, and the exposure
condition written in a config ("full", "fractional:0.75", "absolute:3")."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from abtest import GraphInputWarning, InteractionGraph, build_graph
from pipelines.errors import InputError
from pipelines.stages.registry import StageContext
from pipelines.tables import EDGES, USERS, read_table


def read_edges(path: Path) -> pd.DataFrame:
    """The edges table in memory (validated: src, dst; weight > 0; kind)."""
    return read_table(path, EDGES).compute().reset_index(drop=True)


def read_user_ids(path: Path | None) -> np.ndarray | None:
    return None if path is None else read_table(path, USERS, columns=["user_id"])["user_id"].compute().to_numpy()


def load_graph(context: StageContext, edges: pd.DataFrame, user_ids: np.ndarray | None,
               kinds: list[str] | None) -> InteractionGraph:
    """`abtest.build_graph`, with its tidy-up warnings (self-loops, duplicates, unknown users) logged to MLflow."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", GraphInputWarning)
        graph = build_graph(edges, user_ids, kinds=kinds)
    notes = [str(w.message) for w in caught if issubclass(w.category, GraphInputWarning)]
    for note in notes:
        warnings.warn(note, GraphInputWarning, stacklevel=2)
    if notes:
        context.log.text("\n".join(notes) + "\n", "graph_input_warnings.txt")
    return graph


def exposure_condition(text: str):
    """'full' -> "full"; 'fractional:q' -> ("fractional", q); 'absolute:k' -> ("absolute", k)."""
    kind, _, value = text.partition(":")
    try:
        if kind == "full" and not value:
            return "full"
        if kind == "fractional":
            return "fractional", float(value)
        if kind == "absolute":
            return "absolute", int(value)
    except ValueError:
        pass
    raise InputError(f"exposure: expected 'full', 'fractional:<q>' or 'absolute:<k>', got {text!r}")
