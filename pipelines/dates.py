"""Dated runs: the run date of a daily job and the `{date}` templates of its paths.

A job file (or `campaign run --date`) names the day the run is for. Any text value of the job may hold
templates that the run date fills in before the job is validated:

    {date}        the run date, ISO (2026-12-05)
    {date-1}      a day before it (2026-12-04); {date+N} and {date-N} for any N
    {date:%Y%m%d} the run date in a strftime format (20261205); {date-1:%Y/%m/%d} likewise

so `logs: data/logs/date={date-1}` reads yesterday's export and `out: out/{date}/policy` writes under the run
date. A template in a job without a run date, an unknown template (`{day}`) or a date that does not parse is
refused in one line naming the key.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from typing import Any

from pipelines.errors import InputError

_TEMPLATE = re.compile(r"\{date(?:(?P<sign>[+-])(?P<days>\d+))?(?::(?P<format>[^{}]+))?\}")
_BRACED = re.compile(r"\{[^{}]*\}")


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


def fill_dates(value: Any, date: dt.date | None, where: str = "") -> Any:
    """`value` (a job mapping, list or text) with every `{date...}` template filled from the run `date`; `where`:
    the dotted key of `value` in the job, for the messages."""
    if isinstance(value, dict):
        return {key: fill_dates(item, date, f"{where}.{key}" if where else str(key)) for key, item in value.items()}
    if isinstance(value, list):
        return [fill_dates(item, date, where) for item in value]
    if not isinstance(value, str) or "{" not in value:
        return value
    unknown = [braced for braced in _BRACED.findall(value) if not _TEMPLATE.fullmatch(braced)]
    if unknown:
        raise InputError(f"config: {where}: unknown template {unknown[0]} (templates: {{date}}, {{date-1}}, "
                         f"{{date+7}}, {{date:%Y%m%d}})")
    if date is None:
        raise InputError(f"config: {where}: {value!r} needs a run date: pass --date YYYY-MM-DD or set date: in the "
                         f"job")

    def filled(match: re.Match) -> str:
        days = int(match["days"] or 0) * (-1 if match["sign"] == "-" else 1)
        day = date + dt.timedelta(days=days)
        return day.strftime(match["format"]) if match["format"] else day.isoformat()

    return _TEMPLATE.sub(filled, value)
