"""Which columns of a table a stage takes as features when the config names none, and why it skips the others.

"Every other column" is a dangerous default: a session id or a timestamp taken as a categorical feature fits noise,
and the log's own columns (arm, reward, propensity, cost, ...) leak the outcome. `choose_features` decides from the
column names and types alone (no pass over the data), in this order:

- the log's own columns: the stage's role columns (arm, reward, propensity, user id, ...) and its `exclude` list;
- ids: the name is `id`, or its last word is `id`, `ids`, `uuid` or `guid` (`user_id`, `session-id`, `sessionId`);
- timestamps and dates: a date, time or timestamp type; or the name is `timestamp`, `time`, `date`, `datetime`,
  `day` or `ts`, or its last word is `at`, `date`, `time`, `datetime`, `timestamp` or `ts` (`created_at`,
  `signup_date`, `lastVisitTime`);
- other types: durations, lists, structs, binary (not a number, a flag or a category).

Numbers, flags and text or categorical columns that pass are taken. An explicit feature list is used as given (an
id or a timestamp the user names is theirs to take). `FeatureChoice.record` tells the user: a log line, a
`<name>.txt` artifact on the stage's MLflow run with every column and its reason, and a short line for the summary.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd
import pyarrow as pa

from pipelines.tables import LOG_COLUMNS

logger = logging.getLogger(__name__)

ID_WORDS = {"id", "ids", "uuid", "guid"}
TIME_NAMES = {"timestamp", "time", "date", "datetime", "day", "ts"}
TIME_LAST_WORDS = {"at", "date", "time", "datetime", "timestamp", "ts"}

#: Column types as `choose_features` sees them.
USABLE, TEMPORAL, UNUSABLE = "usable", "temporal", "unusable"


@dataclass(frozen=True)
class FeatureChoice:
    """The features a stage takes, in table order, and every other column with the reason it was skipped."""

    taken: tuple[str, ...]
    skipped: tuple[tuple[str, str, str], ...] = ()  # (column, kind: log column|id|timestamp|type, reason)
    source: str = "every usable column"  # where the list came from, e.g. "the `features` list"

    def summary(self) -> str:
        """One short line for the job's summary table: how many taken, and which columns besides the log's own were
        skipped, and why."""
        line = f"{len(self.taken)} taken ({self.source})"
        notable = [f"{name} ({kind})" for name, kind, _ in self.skipped if kind != "log column"]
        if notable:
            line += "; skipped " + ", ".join(notable)
        return line

    def report(self) -> str:
        """Every column and what became of it, one per line."""
        lines = [f"features: {len(self.taken)} taken from {self.source}"]
        lines += [f"  taken    {name}" for name in self.taken]
        lines += [f"  skipped  {name} ({kind}): {reason}" for name, kind, reason in self.skipped]
        return "\n".join(lines) + "\n"

    def record(self, log: Any, name: str = "feature_columns") -> None:
        """Tell the user: a log line, and the full report as the text artifact `<name>.txt` of the stage's run."""
        logger.info("%s: %s", name, self.summary())
        log.text(self.report(), f"{name}.txt")


def name_words(name: str) -> list[str]:
    """The lower-case words of a column name: split at non-alphanumerics and camelCase ("sessionId" -> session, id)."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", str(name))
    spaced = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1 \2", spaced)
    return [word.lower() for word in re.split(r"[^0-9A-Za-z]+", spaced) if word]


def id_reason(name: str) -> str | None:
    """Why the name says the column is an id, or None."""
    words = name_words(name)
    if words and words[-1] in ID_WORDS:
        return "named like an id: an identifier says nothing about the user that recurs"
    return None


def time_reason(name: str) -> str | None:
    """Why the name says the column is a timestamp or a date, or None."""
    words = name_words(name)
    if not words:
        return None
    if "_".join(words) in TIME_NAMES or (len(words) > 1 and words[-1] in TIME_LAST_WORDS):
        return "named like a time or date: the moment a row was logged does not recur at decision time"
    return None


def type_kind(dtype: Any) -> tuple[str, str]:
    """(usable | temporal | unusable, the type's name) of a pyarrow type or a pandas/numpy dtype."""
    if isinstance(dtype, pd.ArrowDtype):
        dtype = dtype.pyarrow_dtype
    if isinstance(dtype, pa.DataType):
        if pa.types.is_dictionary(dtype):
            dtype = dtype.value_type
        if pa.types.is_timestamp(dtype) or pa.types.is_date(dtype) or pa.types.is_time(dtype):
            return TEMPORAL, str(dtype)
        if (pa.types.is_integer(dtype) or pa.types.is_floating(dtype) or pa.types.is_boolean(dtype)
                or pa.types.is_decimal(dtype) or pa.types.is_string(dtype) or pa.types.is_large_string(dtype)):
            return USABLE, str(dtype)
        return UNUSABLE, str(dtype)
    if isinstance(dtype, pd.PeriodDtype) or pd.api.types.is_datetime64_any_dtype(dtype):
        return TEMPORAL, str(dtype)
    if pd.api.types.is_timedelta64_dtype(dtype):
        return UNUSABLE, str(dtype)
    if (isinstance(dtype, pd.CategoricalDtype) or pd.api.types.is_numeric_dtype(dtype)
            or pd.api.types.is_bool_dtype(dtype) or pd.api.types.is_string_dtype(dtype)
            or pd.api.types.is_object_dtype(dtype)):
        return USABLE, str(dtype)
    return UNUSABLE, str(dtype)


def _column_types(schema: Any) -> list[tuple[str, Any]]:
    """(name, type) of every column of a pyarrow schema, a pandas/Dask DataFrame or its `dtypes`, or a mapping."""
    if isinstance(schema, pa.Schema):
        return [(field.name, field.type) for field in schema]
    if hasattr(schema, "dtypes") and hasattr(schema, "columns"):
        schema = schema.dtypes
    if isinstance(schema, pd.Series):
        return list(schema.items())
    return list(dict(schema).items())


def choose_features(schema: Any, features: Iterable[str] | None = None, *,
                    roles: Mapping[str, str | None] | None = None, exclude: Iterable[str] = ()) -> FeatureChoice:
    """The features a stage uses: `features` as given, else every column the rules in the module docstring keep.

    schema: the table's columns and types (a pyarrow schema, a pandas or Dask DataFrame, its `dtypes`, or a mapping
    name -> dtype). roles: the log's own columns by role (e.g. {"arm": "offer", "reward": "converted"}), never
    features; a role not named here (or named None) keeps its standard name (`pipelines.tables.LOG_COLUMNS`), so a
    `propensity` or `cost` column is never a feature even where the stage does not use it. exclude: more column
    names never used as features.
    """
    if features:
        return FeatureChoice(tuple(features), source="the `features` list")
    named = {role: name for role, name in (roles or {}).items() if name}
    own = {name: f"the log's {role} column" for role, name in
           ({role: column.name for role, column in LOG_COLUMNS.items()} | named).items()}
    for name in exclude:
        own.setdefault(name, "the log's own column (listed in `exclude`)")
    taken: list[str] = []
    skipped: list[tuple[str, str, str]] = []
    for name, dtype in _column_types(schema):
        kind, type_name = type_kind(dtype)
        if name in own:
            skipped.append((name, "log column", own[name]))
        elif kind == TEMPORAL:
            skipped.append((name, "timestamp", f"a {type_name} column: the moment a row was logged does not recur "
                                               f"at decision time"))
        elif id_reason(name):
            skipped.append((name, "id", id_reason(name)))
        elif time_reason(name):
            skipped.append((name, "timestamp", time_reason(name)))
        elif kind == UNUSABLE:
            skipped.append((name, "type", f"a {type_name} column is not a number, a flag or a category"))
        else:
            taken.append(name)
    return FeatureChoice(tuple(taken), tuple(skipped))
