"""Writing outputs so that a killed job never leaves a half-written file: write to a temporary sibling, then rename."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.errors import InputError

_TMP_MARK = ".tmp-"


def ensure_writable(target: Path) -> Path:
    """Check, before any work starts, that `target` can be created or replaced; return it resolved."""
    target = Path(target).resolve()
    parent = target.parent
    existing = parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"output path not writable: {target} ({existing} is not a writable directory)")
    if target.exists() and not os.access(target, os.W_OK):
        raise InputError(f"output path not writable: {target} (exists and is read-only)")
    return target


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def sweep_stale(target: Path) -> None:
    """Remove temporary siblings that an earlier, killed write of `target` left behind.

    If that write was killed between retiring the old folder and renaming the new one into place, the target is
    missing and its retired copy is still complete: put it back instead of deleting it.
    """
    if not target.parent.is_dir():
        return
    if not target.exists():
        retired = sorted(target.parent.glob(f".{target.name}{_TMP_MARK}old-*"))
        if retired:
            os.replace(retired[0], target)
    for stale in target.parent.glob(f".{target.name}{_TMP_MARK}*"):
        _remove(stale)


@contextlib.contextmanager
def atomic_output(target: Path | str) -> Iterator[Path]:
    """Yield a temporary path next to `target`; on success it replaces `target` (file or directory) in one rename.

    On an exception the temporary path is removed and `target` is left as it was. A SIGKILL can leave only a
    hidden `.<name>.tmp-*` sibling, which the next write of the same target sweeps away.
    """
    target = ensure_writable(Path(target))
    target.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(target)
    temporary = target.parent / f".{target.name}{_TMP_MARK}{secrets.token_hex(4)}"
    try:
        yield temporary
        if target.is_dir() and temporary.is_dir():
            retired = target.parent / f".{target.name}{_TMP_MARK}old-{secrets.token_hex(4)}"
            os.replace(target, retired)
            os.replace(temporary, target)
            _remove(retired)
        else:
            os.replace(temporary, target)
    except BaseException:
        _remove(temporary)
        raise


def write_parquet(table: pd.DataFrame | pa.Table, target: Path | str) -> Path:
    """Write one parquet file atomically (zstd, no pandas index)."""
    if isinstance(table, pd.DataFrame):
        table = pa.Table.from_pandas(table, preserve_index=False)
    with atomic_output(target) as temporary:
        pq.write_table(table, temporary, compression="zstd")
    return Path(target)


def write_csv(frame: pd.DataFrame, target: Path | str, *, index: bool = True) -> Path:
    """Write one CSV file atomically."""
    with atomic_output(target) as temporary:
        frame.to_csv(temporary, index=index)
    return Path(target)
