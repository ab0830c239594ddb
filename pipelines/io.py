"""Writing outputs so that a killed job never leaves a half-written file: write to a temporary sibling, then rename."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.errors import InputError

_TMP_MARK = ".tmp-"


def ensure_writable(target: Path) -> Path:
    """Check, before any work starts, that `target` can be created or replaced; return it resolved.

    The missing folders above `target` and its longest temporary name are created for real inside a throwaway
    folder next to them, then removed: permission bits alone do not tell (root, /proc, read-only mounts, names
    longer than the file system allows).
    """
    try:
        target = Path(target).resolve()
        existing = target.parent
        while not existing.exists():
            existing = existing.parent
        read_only = target.exists() and not os.access(target, os.W_OK)
    except OSError as error:  # e.g. a name longer than the file system allows
        raise InputError(f"output path not writable: {target} ({error.strerror or type(error).__name__})") from None
    if not existing.is_dir():
        raise InputError(f"output path not writable: {target} ({existing} is not a directory)")
    if read_only:
        raise InputError(f"output path not writable: {target} (exists and is read-only)")
    try:
        probe = Path(tempfile.mkdtemp(prefix=".campaign-write-probe-", dir=existing))
    except OSError as error:
        raise InputError(f"output path not writable: {target} (cannot create anything in {existing}: "
                         f"{error.strerror or type(error).__name__})") from None
    try:
        folder = probe / target.parent.relative_to(existing)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f".{target.name}{_TMP_MARK}old-{secrets.token_hex(4)}").touch()  # the longest name written
    except OSError as error:
        raise InputError(f"output path not writable: {target} (cannot create it under {existing}: "
                         f"{error.strerror or type(error).__name__})") from None
    finally:
        shutil.rmtree(probe, ignore_errors=True)
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
