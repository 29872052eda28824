"""Cutting a backfill's date range into partitions.

Partitions are whole calendar periods in UTC: a day, an ISO week (Monday to
Sunday, keyed by its Monday) or a month (keyed by its first day). A range
that starts or ends inside a week or month takes the whole period, so a
partition's rows never depend on the range it was asked for, and re-running
it replaces exactly the same rows.
"""

from __future__ import annotations

import datetime as dt

from keel.components._common.config import BackfillSection
from keel.components._common.errors import ConfigError


def parse_execution_date(value: str, *, today: dt.date | None = None) -> dt.date:
    """The run's logical date: `YYYY-MM-DD` or an ISO timestamp (a scheduler's); empty means today (UTC)."""
    text = (value or "").strip()
    if not text:
        return today or dt.datetime.now(dt.timezone.utc).date()
    try:
        if len(text) == 10:
            return dt.date.fromisoformat(text)
        stamp = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"execution_date: {value!r} is not a date (YYYY-MM-DD) or an ISO timestamp") from None
    return (stamp.astimezone(dt.timezone.utc) if stamp.tzinfo else stamp).date()


def period_start(day: dt.date, partition: str) -> dt.date:
    if partition == "week":
        return day - dt.timedelta(days=day.weekday())
    if partition == "month":
        return day.replace(day=1)
    return day


def period_end(start: dt.date, partition: str) -> dt.date:
    """The first day after the period that begins on `start`."""
    if partition == "week":
        return start + dt.timedelta(days=7)
    if partition == "month":
        return (start.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    return start + dt.timedelta(days=1)


def plan(section: BackfillSection, execution_date: str, *, today: dt.date | None = None) -> list[dict]:
    """The partitions to process, oldest first: `{"key", "start", "end", "execution_date"}` (end exclusive).

    Raises:
        ConfigError: a range reaching past the execution date (its rows are not
            all there yet), or one cut into more than `max_partitions`.
    """
    run_date = parse_execution_date(execution_date, today=today)
    first = dt.date.fromisoformat(section.start_date) if section.start_date else run_date
    last = dt.date.fromisoformat(section.end_date) if section.end_date else run_date
    if last > run_date:
        raise ConfigError(
            f"backfill.end_date: {last} is after the execution date {run_date}; a partition is processed once its "
            "period has passed (set execution_date, or an earlier end_date)"
        )
    partitions, start = [], period_start(first, section.partition)
    while start <= last:
        end = period_end(start, section.partition)
        partitions.append({"key": start.isoformat(), "start": start.isoformat(), "end": end.isoformat(),
                           "execution_date": run_date.isoformat()})
        if len(partitions) > section.max_partitions:
            raise ConfigError(
                f"backfill: {first}..{last} by {section.partition} is more than backfill.max_partitions "
                f"({section.max_partitions}) partitions; use a coarser backfill.partition or raise max_partitions"
            )
        start = end
    return partitions
