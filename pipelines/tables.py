"""Reading the platform's tables (decision log, users, edges, assignment) and validating them before any work.

A table is parquet (a file or a folder of files; recommended, and the only form read past memory without a full
pass per job) or CSV (a `.csv` file or a folder of `.csv` files with the same header). Checks run in this order and
the first failure raises `InputError` with one line naming the table, the column and the count: file exists;
parquet readable (every file footer) or CSV parsable with one header; required columns present; column types; table
not empty; then one scan of the constrained columns for missing labels, NaN/inf and out-of-range values.

CSV type policy (`csv_dtypes`; docs/your_data.md): comma-separated, UTF-8, a header row. A field is missing when it is
empty or one of `CSV_MISSING`. Each column's type comes from one pass over all its values, so every partition reads
it with the same dtype: integers of at most 18 digits -> int64; other numbers -> float64 (integers with missing
values too; `inf` reads as a number, which the range checks refuse); `true`/`false` in any case -> bool; anything
else -> text, dates and digit codes included (a leading zero as in 007, or 19 digits and more, keeps a column text).
A column the schema declares a label (ids, arms) is int64 when every value is an integer, else text (so a missing
id is counted as missing, not refused as a float type).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import dask.dataframe as dd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads

from campaign_core import StatisticOf
from pipelines.errors import InputError
from pipelines.execution import run_statistic

INTEGER, NUMERIC, LABEL, BOOLEAN, STRING = "integer", "numeric", "label", "boolean", "string"

#: The most uncompressed bytes of row groups gathered into one Dask partition of a parquet table. A large row group
#: is a partition of its own, so a reader holds a row group or a few, never a whole multi-GB file (at 10^8 rows in
#: 5M-row files: 1.4 GB peak instead of 4 GB, and faster; benchmarks/RESULTS.md 3d).
PARTITION_BYTES = "128MiB"


@dataclass(frozen=True)
class Column:
    """A column's contract: its kind, whether NaN/inf/missing are allowed, and the allowed range."""

    name: str
    kind: str
    finite: bool = True  # no NaN, no inf, no missing value
    low: float | None = None
    low_inclusive: bool = True
    high: float | None = None

    def describe_range(self) -> str:
        low = "" if self.low is None else ("[" if self.low_inclusive else "(") + f"{self.low:g}, "
        high = "" if self.high is None else f"{self.high:g}]"
        return f"{low or '(-inf, '}{high or 'inf)'}"


@dataclass(frozen=True)
class Schema:
    """A table's contract: required and optional columns (other columns, e.g. features, pass unchecked)."""

    name: str
    required: tuple[Column, ...]
    optional: tuple[Column, ...] = ()



#: The decision log's columns by role, with their contracts: declared once, renamed by each stage's config.
LOG_COLUMNS = {
    "user_id": Column("user_id", LABEL),
    "arm": Column("arm", LABEL),
    "reward": Column("reward", NUMERIC),
    "propensity": Column("propensity", NUMERIC, low=0.0, low_inclusive=False, high=1.0),
    "cost": Column("cost", NUMERIC, low=0.0),
    "day": Column("day", INTEGER, low=0.0),
    "randomized": Column("randomized", BOOLEAN),
}


def log_schema(required: dict[str, str | None], optional: dict[str, str | None] | None = None) -> Schema:
    """The decision-log contract for the given roles -> column names (a role named None is not used)."""
    def columns(roles: dict[str, str | None]) -> tuple[Column, ...]:
        unknown = sorted(set(roles) - set(LOG_COLUMNS))
        if unknown:
            raise ValueError(f"log_schema: unknown roles {unknown}")
        return tuple(replace(LOG_COLUMNS[role], name=name) for role, name in roles.items() if name)

    return Schema("logs", required=columns(required), optional=columns(optional or {}))


DECISION_LOG = log_schema({"user_id": "user_id", "arm": "arm", "reward": "reward"},
                          {"propensity": "propensity", "cost": "cost", "day": "day"})
USERS = Schema("users", required=(Column("user_id", LABEL),), optional=(Column("segment", LABEL),))
EDGES = Schema(
    "edges",
    required=(Column("src", LABEL), Column("dst", LABEL)),
    optional=(Column("weight", NUMERIC, low=0.0, low_inclusive=False), Column("kind", LABEL)),
)
ASSIGNMENT = Schema(
    "assignment",
    required=(Column("user_id", LABEL), Column("cluster", LABEL), Column("group", LABEL)),
    optional=(Column("exposure_p1", NUMERIC, low=0.0, high=1.0), Column("exposure_p0", NUMERIC, low=0.0, high=1.0)),
)


def _kind_matches(kind: str, arrow_type: pa.DataType) -> bool:
    if pa.types.is_dictionary(arrow_type):
        arrow_type = arrow_type.value_type
    is_string = pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type)
    return {
        INTEGER: pa.types.is_integer(arrow_type),
        NUMERIC: pa.types.is_integer(arrow_type) or pa.types.is_floating(arrow_type),
        LABEL: pa.types.is_integer(arrow_type) or is_string or pa.types.is_boolean(arrow_type),
        BOOLEAN: pa.types.is_boolean(arrow_type),
        STRING: is_string,
    }[kind]


def _check_schema(schema: Schema, arrow_schema: pa.Schema, where: str) -> list[Column]:
    """Column presence and types; returns the columns whose values need a scan."""
    present = set(arrow_schema.names)
    missing = [column.name for column in schema.required if column.name not in present]
    if missing:
        raise InputError(f"{schema.name}: missing required column {missing[0]!r} in {where} "
                         f"(has: {', '.join(arrow_schema.names[:12])}{', ...' if len(present) > 12 else ''})")
    to_scan = []
    for column in schema.required + schema.optional:
        if column.name not in present:
            continue
        arrow_type = arrow_schema.field(column.name).type
        if not _kind_matches(column.kind, arrow_type):
            raise InputError(f"{schema.name}: column {column.name!r} has type {arrow_type}, expected {column.kind}")
        if column.finite or column.low is not None or column.high is not None:
            to_scan.append(column)
    return to_scan


def _add_counts(left: dict[str, np.ndarray], right: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The merge of per-column count statistics."""
    return {name: left[name] + right[name] for name in left}


def _value_counts(chunk: pd.DataFrame, columns: list[Column]) -> dict[str, np.ndarray]:
    """Counts of bad values per column, [missing or non-finite, below range, above range, rows], in a chunk."""
    counts = {}
    for column in columns:
        series = chunk[column.name]
        if column.kind in (LABEL, STRING, BOOLEAN):
            bad = int(series.isna().sum())
            counts[column.name] = np.array([bad, 0, 0, len(series)], dtype=np.int64)
            continue
        values = series.to_numpy(dtype=float, na_value=np.nan)
        finite = np.isfinite(values)
        below = 0 if column.low is None else int(np.sum(
            finite & ((values < column.low) if column.low_inclusive else (values <= column.low))))
        above = 0 if column.high is None else int(np.sum(finite & (values > column.high)))
        nonfinite = int(np.sum(~finite)) if column.finite else 0
        counts[column.name] = np.array([nonfinite, below, above, len(values)], dtype=np.int64)
    return counts


def _check_values(schema: Schema, data: pd.DataFrame | dd.DataFrame, columns: list[Column]) -> None:
    if not columns:
        return
    counts = run_statistic(StatisticOf(partial(_value_counts, columns=columns), _add_counts), data,
                           columns=[c.name for c in columns])
    for column in columns:
        nonfinite, below, above, rows = (int(v) for v in counts[column.name])
        if nonfinite:
            what = "missing" if column.kind in (LABEL, STRING, BOOLEAN) else "NaN, inf or missing"
            raise InputError(f"{schema.name}: column {column.name!r} has {nonfinite} {what} values of {rows} rows "
                             f"(not allowed)")
        if below or above:
            raise InputError(f"{schema.name}: column {column.name!r} has {below + above} values of {rows} rows "
                             f"outside {column.describe_range()}")


#: CSV fields read as missing values (pandas' longer default list, with `None` and `#N/A`, is not used).
CSV_MISSING = ("", "NA", "N/A", "NaN", "nan", "null", "NULL")
#: Bytes of CSV per Dask partition.
CSV_BLOCKSIZE = "64MB"
_INTEGER_TEXT = r"[+-]?(0|[1-9][0-9]{0,17})"  # an int64 without loss
_CODE_TEXT = r"[+-]?(0[0-9]+|[0-9]{19,})"  # digits that are a code (007, a zip, a long id), not a number


def csv_files(path: Path) -> list[Path] | None:
    """The CSV files of a table: a `.csv` file, or the `*.csv` files of a folder that holds no parquet; None for a
    parquet table."""
    if path.is_dir():
        files = sorted(path.glob("*.csv"))
        return files if files and not any(path.rglob("*.parquet")) else None
    return [path] if path.suffix.lower() == ".csv" else None


def _csv_text_kinds(chunk: pd.DataFrame, columns: list[str]) -> dict[str, np.ndarray]:
    """Per column, counts over the text of every field of a chunk read as text: [missing, integers, numbers,
    true/false, rows]."""
    counts = {}
    for name in columns:
        text = chunk[name]
        present = text[text.notna()].astype(str)
        integers = int(present.str.fullmatch(_INTEGER_TEXT).sum())
        coded = present.str.fullmatch(_CODE_TEXT)
        numbers = int((pd.to_numeric(present, errors="coerce").notna() & ~coded).sum())
        booleans = int(present.str.lower().isin(["true", "false"]).sum())
        counts[name] = np.array([len(text) - len(present), integers, numbers, booleans, len(text)], np.int64)
    return counts


@dataclass(frozen=True)
class _CsvLayout:
    """What one pass over a CSV table found: its files, its columns' text kinds and its row count."""

    files: tuple[Path, ...]
    counts: dict[str, np.ndarray]  # per column: [missing, integers, numbers, true/false, rows]
    rows: int


#: CSV tables already typed, by resolved path, with the files' stamp when they were.
_CSV_LAYOUTS: dict[str, tuple[tuple, _CsvLayout]] = {}


def _read_csv(files: list[Path] | tuple[Path, ...], dtype: object) -> dd.DataFrame:
    return dd.read_csv([str(file) for file in files], dtype=dtype, keep_default_na=False,
                       na_values=list(CSV_MISSING), blocksize=CSV_BLOCKSIZE)


def _csv_layout(path: Path, name: str) -> _CsvLayout:
    """Header check (every file the same columns) and the typing pass, once per version of the files."""
    key, stamp = str(path.resolve()), _stamp(path)
    cached = _CSV_LAYOUTS.get(key)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    files = csv_files(path) or []
    try:
        headers = [list(pd.read_csv(file, nrows=0).columns) for file in files]
        different = next((file for file, header in zip(files, headers, strict=True) if header != headers[0]), None)
        if different is not None:
            raise InputError(f"{name}: CSV file {different.name} has other columns than {files[0].name} in {path}")
        counts = run_statistic(StatisticOf(partial(_csv_text_kinds, columns=headers[0]), _add_counts),
                               _read_csv(files, str))
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as error:
        cause = error.__cause__ or error  # dask wraps pandas' parser error, which says what is wrong and where
        reason = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        raise InputError(f"{name}: cannot read CSV {path}: {reason}") from None
    rows = int(next(iter(counts.values()))[4]) if counts else 0
    layout = _CsvLayout(tuple(files), counts, rows)
    _CSV_LAYOUTS[key] = (stamp, layout)
    return layout


def csv_dtypes(layout: _CsvLayout, schema: Schema) -> dict[str, str]:
    """Each column's pandas dtype under the CSV type policy (module docstring), given the schema's labels."""
    labels = {column.name for column in schema.required + schema.optional if column.kind in (LABEL, STRING)}
    dtypes = {}
    for name, (missing, integers, numbers, booleans, rows) in layout.counts.items():
        present = rows - missing
        if name in labels:
            kind = "int64" if present and integers == rows else "str"
        elif present and integers == present:
            kind = "int64" if not missing else "float64"
        elif present and numbers == present:
            kind = "float64"
        elif present and booleans == present:
            kind = "bool" if not missing else "boolean"
        else:
            kind = "float64" if not present else "str"
        dtypes[name] = kind
    return dtypes


def _arrow_schema(dtypes: dict[str, str]) -> pa.Schema:
    empty = pd.DataFrame({name: pd.Series([], dtype=dtype) for name, dtype in dtypes.items()})
    return pa.Schema.from_pandas(empty, preserve_index=False)


def inspect_table(path: Path | str, schema: Schema, *, columns: list[str] | None = None) -> list[Column]:
    """The checks that need only parquet metadata (for CSV, one typing pass): file exists, footers readable,
    columns, types, not empty.

    Returns the columns whose values still need a scan (see `read_table`).
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{schema.name}: file not found: {path}")
    if csv_files(path) is not None:
        layout = _csv_layout(path, schema.name)
        arrow_schema, n_rows = _arrow_schema(csv_dtypes(layout, schema)), layout.rows
    else:
        arrow_schema, n_rows = _parquet_metadata(path, schema.name)
    to_scan = _check_schema(schema, arrow_schema, str(path))
    if n_rows == 0:
        raise InputError(f"{schema.name}: table is empty (0 rows): {path}")
    if columns is not None:
        absent = [name for name in columns if name not in arrow_schema.names]
        if absent:
            raise InputError(f"{schema.name}: missing column {absent[0]!r} in {path}")
        to_scan = [column for column in to_scan if column.name in columns]
    return to_scan


def _parquet_metadata(path: Path, name: str) -> tuple[pa.Schema, int]:
    """The schema and row count from the footers of a parquet file or folder."""
    try:
        dataset = pads.dataset(path, format="parquet", exclude_invalid_files=False)
        n_rows = dataset.count_rows()
    except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise InputError(f"{name}: cannot read parquet {path}: {reason}") from None
    if not dataset.files:
        raise InputError(f"{name}: no parquet files in {path}")
    return dataset.schema, n_rows


#: Tables whose values were scanned against a schema, with the files' (name, size, mtime) when they were.
_SCANNED: dict[tuple[str, Schema], tuple] = {}


def _stamp(path: Path) -> tuple:
    files = sorted(f for f in path.rglob("*") if f.is_file()) if path.is_dir() else [path]
    return tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files)


def scan_values(path: Path | str, schema: Schema, to_scan: list[Column], *, columns: list[str] | None = None
                ) -> dd.DataFrame:
    """The table as a Dask DataFrame after the value scan of the columns `inspect_table` returned. The scan is
    skipped when the same files were already scanned against the same schema (a job validates its inputs before the
    first stage starts, and the stages read them again)."""
    path = Path(path)
    if csv_files(path) is not None:
        layout = _csv_layout(path, schema.name)
        data = _read_csv(layout.files, csv_dtypes(layout, schema))
        data = data if columns is None else data[columns]
    else:
        data = open_parquet(path, columns=columns)
    key, stamp = (str(path.resolve()), schema), _stamp(path)
    if _SCANNED.get(key) != stamp:
        try:
            _check_values(schema, data, to_scan)
        except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as error:
            raise InputError(f"{schema.name}: cannot read parquet {path}: {str(error).splitlines()[0]}") from None
        if columns is None:
            _SCANNED[key] = stamp
    return data


def open_parquet(path: Path | str | Sequence[Path | str], *, columns: list[str] | None = None) -> dd.DataFrame:
    """A parquet file, folder or list of files as a Dask DataFrame, one partition per row group or per run of small
    row groups up to `PARTITION_BYTES`; a pandas index written with the file is read as a column."""
    paths = [str(each) for each in path] if isinstance(path, list | tuple) else str(path)
    return dd.read_parquet(paths, columns=columns, index=False, split_row_groups="adaptive", blocksize=PARTITION_BYTES)


def read_table(path: Path | str, schema: Schema, *, columns: list[str] | None = None) -> dd.DataFrame:
    """Open a parquet or CSV file or folder as a Dask DataFrame after validating it against `schema`."""
    return scan_values(path, schema, inspect_table(path, schema, columns=columns), columns=columns)


def day_tables(path: Path | str, table: dd.DataFrame, column: str, days: Sequence[int], *,
               by_row_group: bool = False) -> list[dd.DataFrame]:
    """One Dask frame per day of a table opened by `read_table` (same columns): for parquet, read with a filter on
    the day column, so files and row groups whose statistics exclude the day are skipped (a table written one day
    per file, as `build-transitions` writes it, is read once over all days); for CSV, a filter on the whole table.
    `by_row_group`: one partition per parquet row group (a reader holds one row group, not a whole file)."""
    if csv_files(Path(path)) is not None:
        return [table[table[column] == day] for day in days]
    frames = [dd.read_parquet(path, columns=list(table.columns), filters=[(column, "==", int(day))], index=False,
                              split_row_groups=by_row_group) for day in days]
    return [frame[frame[column] == day] for frame, day in zip(frames, days, strict=True)]


def validate_frame(frame: pd.DataFrame, schema: Schema) -> pd.DataFrame:
    """Validate an in-memory table (a notebook's DataFrame) against `schema`; returns it unchanged."""
    if not isinstance(frame, pd.DataFrame):
        raise InputError(f"{schema.name}: expected a pandas DataFrame, got {type(frame).__name__}")
    try:
        arrow_schema = pa.Schema.from_pandas(frame.head(0), preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError) as error:
        raise InputError(f"{schema.name}: unsupported column types: {error}") from None
    to_scan = _check_schema(schema, arrow_schema, "the DataFrame")
    if len(frame) == 0:
        raise InputError(f"{schema.name}: table is empty (0 rows)")
    _check_values(schema, frame, to_scan)
    return frame


def _parquet_files(path: Path) -> list[Path]:
    return sorted(path.glob("*.parquet")) if path.is_dir() else [path]


def read_row_aligned(paths: list[Path], columns: list[list[str]]) -> tuple[dd.DataFrame, ...]:
    """Row-aligned tables written file by file (logs and their truth): one partition per file in each, so that
    partition i of every frame holds the same rows. (`dd.read_parquet` may merge small files differently for each
    column selection.) Validate the tables with `read_table` first."""
    files = [_parquet_files(Path(path)) for path in paths]
    names = [[file.name for file in group] for group in files]
    if any(group != names[0] for group in names[1:]):
        raise InputError(f"tables {[str(p) for p in paths]}: not row-aligned (different part files)")
    return tuple(dd.from_map(pd.read_parquet, group, columns=wanted, label="read-aligned", enforce_metadata=False)
                 for group, wanted in zip(files, columns, strict=True))
