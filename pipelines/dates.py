"""Dated runs: the run date of a daily job and the `{date}` templates of its paths.

A job file (or `campaign run --date`) names the day the run is for. Any text value of the job may hold
templates that the run date fills in before the job is validated:

    {date}        the run date, ISO (2026-12-05)
    {date-1}      a day before it (2026-12-04); {date+N} and {date-N} for any N
    {date:%Y%m%d} the run date in a strftime format (20261205); {date-1:%Y/%m/%d} likewise

so `logs: data/logs/date={date-1}` reads yesterday's export and `out: out/{date}/policy` writes under the run
date. A template in a job without a run date, an unknown template (`{day}`) or a date that does not parse is
refused in one line naming the key.

A window of dates, `{date-27..date}` (any two offsets, first before last; a format as above), makes one input of
several dated paths: `logs: data/logs/date={date-27..date}` is the last 28 days' logs. When the job is built, the
window becomes a folder of links to the files of the dates that exist, `data/logs/.windows/date=2026-11-08..2026-12-05`
(readers skip folders whose name starts with a dot, so the partitioned root still reads as before); a date without
a path is skipped (a campaign's first days, a day with no export), and a window where no date has one is refused.
The run key of a dated run covers the links' contents, so a date that arrives later reruns the window.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipelines.errors import InputError

_TEMPLATE = re.compile(r"\{date(?:(?P<sign>[+-])(?P<days>\d+))?(?::(?P<format>[^{}]+))?\}")
_WINDOW = re.compile(r"\{date(?:(?P<sign>[+-])(?P<days>\d+))?\.\.date(?:(?P<last_sign>[+-])(?P<last_days>\d+))?"
                     r"(?::(?P<format>[^{}]+))?\}")
_BRACED = re.compile(r"\{[^{}]*\}")
WINDOWS_FOLDER = ".windows"


def parse_date(text: Any, where: str) -> dt.date:
    """An ISO date (YYYY-MM-DD) from text or a date; InputError naming `where` otherwise."""
    if isinstance(text, dt.datetime):
        return text.date()
    if isinstance(text, dt.date):
        return text
    try:
        return dt.date.fromisoformat(str(text))
    except ValueError:
        raise InputError(f"{where}: {text!r} is not a date (YYYY-MM-DD)") from None


def dates_between(first: dt.date, last: dt.date) -> Iterator[dt.date]:
    """Every date from `first` to `last`, both included, in order; InputError when `last` is before `first`."""
    if last < first:
        raise InputError(f"dates: --to {last.isoformat()} is before --from {first.isoformat()}")
    for offset in range((last - first).days + 1):
        yield first + dt.timedelta(days=offset)


def fill_dates(value: Any, date: dt.date | None, where: str = "", base_dir: Path | None = None) -> Any:
    """`value` (a job mapping, list or text) with every `{date...}` template filled from the run `date`, and every
    window of dates made into its folder of links (relative paths against `base_dir`, else the working directory);
    `where`: the dotted key of `value` in the job, for the messages."""
    if isinstance(value, dict):
        return {key: fill_dates(item, date, f"{where}.{key}" if where else str(key), base_dir)
                for key, item in value.items()}
    if isinstance(value, list):
        return [fill_dates(item, date, where, base_dir) for item in value]
    if not isinstance(value, str) or "{" not in value:
        return value
    unknown = [braced for braced in _BRACED.findall(value)
               if not (_TEMPLATE.fullmatch(braced) or _WINDOW.fullmatch(braced))]
    if unknown:
        raise InputError(f"config: {where}: unknown template {unknown[0]} (templates: {{date}}, {{date-1}}, "
                         f"{{date+7}}, {{date:%Y%m%d}}, {{date-27..date}})")
    if date is None:
        raise InputError(f"config: {where}: {value!r} needs a run date: pass --date YYYY-MM-DD or set date: in the "
                         f"job")

    def filled(match: re.Match) -> str:
        return _day_text(date + dt.timedelta(days=_offset(match["sign"], match["days"])), match["format"])

    value = _TEMPLATE.sub(filled, value)
    windows = list(_WINDOW.finditer(value))
    if len(windows) > 1:
        raise InputError(f"config: {where}: {value!r} holds {len(windows)} windows of dates; one path takes one")
    return value if not windows else str(window_folder(value, windows[0], date, where, base_dir))


def _offset(sign: str | None, days: str | None) -> int:
    return int(days or 0) * (-1 if sign == "-" else 1)


def _day_text(day: dt.date, format: str | None) -> str:
    return day.strftime(format) if format else day.isoformat()


def window_folder(value: str, window: re.Match, date: dt.date, where: str, base_dir: Path | None) -> Path:
    """The folder of links that stands for the window of dates in `value`: for each date of the window whose path
    exists, links to its files (named by the date and their place under it), in date order."""
    first = date + dt.timedelta(days=_offset(window["sign"], window["days"]))
    last = date + dt.timedelta(days=_offset(window["last_sign"], window["last_days"]))
    if last < first:
        raise InputError(f"config: {where}: the window {window[0]} ends ({last}) before it starts ({first})")
    head, tail = value[:window.start()], value[window.end():]
    if "/" in head:
        parent_text, prefix = head.rsplit("/", 1)
    else:
        parent_text, prefix = ".", head
    parent = Path(parent_text).expanduser()
    if not parent.is_absolute():
        parent = Path(base_dir or Path.cwd()) / parent
    parent = Path(os.path.normpath(parent))
    links: list[tuple[str, Path]] = []
    for day in dates_between(first, last):
        path = parent / f"{prefix}{_day_text(day, window['format'])}{tail}"
        files = [path] if path.is_file() else sorted(
            file for file in path.rglob("*") if file.is_file() and not file.name.startswith((".", "_"))) \
            if path.is_dir() else []
        for file in files:
            place = file.name if file == path else "-".join(file.relative_to(path).parts)
            links.append((f"{day.isoformat()}-{place}", file))
    span = f"{_day_text(first, window['format'])}..{_day_text(last, window['format'])}"
    folder = parent / WINDOWS_FOLDER / f"{prefix}{span}{tail}".replace("/", "-")
    if not links:
        raise InputError(f"config: {where}: no date of the window {first}..{last} has a path "
                         f"(looked for {parent / (prefix + _day_text(last, window['format']) + tail)} and earlier)")
    _write_links(folder, links)
    return folder.resolve()


def _write_links(folder: Path, links: list[tuple[str, Path]]) -> None:
    """Make `folder` hold exactly `links` (name -> target, relative), replacing what it held in one rename."""
    wanted = {name: os.path.relpath(target, folder) for name, target in links}
    if folder.is_dir() and {entry.name: os.readlink(entry) for entry in folder.iterdir()
                            if entry.is_symlink()} == wanted and len(list(folder.iterdir())) == len(wanted):
        return
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=folder.parent))
    for name, target in wanted.items():
        os.symlink(target, staging / name)
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(staging, folder)
