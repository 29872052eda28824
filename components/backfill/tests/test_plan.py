"""Partition planning and the partition query (no server needed)."""

import datetime as dt

import pytest

from keel.components._common.config import BackfillSection, DataSection
from keel.components._common.errors import ConfigError
from keel.components.backfill.partition import partition_query
from keel.components.backfill.plan import parse_execution_date, plan


def section(**kw):
    return BackfillSection.parse({"date_column": "time_hour", **kw}, "backfill")


def test_days_cover_the_range_inclusive_with_exclusive_ends():
    parts = plan(section(start_date="2013-01-30", end_date="2013-02-02"), "2013-12-31")
    assert [(p["start"], p["end"]) for p in parts] == [
        ("2013-01-30", "2013-01-31"), ("2013-01-31", "2013-02-01"), ("2013-02-01", "2013-02-02"), ("2013-02-02", "2013-02-03")]
    assert {p["execution_date"] for p in parts} == {"2013-12-31"} and parts[0]["key"] == "2013-01-30"


def test_weeks_and_months_are_whole_periods_whatever_the_range():
    weeks = plan(section(start_date="2013-01-02", end_date="2013-01-15", partition="week"), "2013-12-31")
    assert [(p["start"], p["end"]) for p in weeks] == [("2012-12-31", "2013-01-07"), ("2013-01-07", "2013-01-14"),
                                                       ("2013-01-14", "2013-01-21")]
    months = plan(section(start_date="2013-01-31", end_date="2013-03-01", partition="month"), "2013-12-31")
    assert [(p["start"], p["end"]) for p in months] == [("2013-01-01", "2013-02-01"), ("2013-02-01", "2013-03-01"),
                                                        ("2013-03-01", "2013-04-01")]
    december = plan(section(start_date="2013-12-05", end_date="2013-12-05", partition="month"), "2013-12-31")
    assert december[0]["end"] == "2014-01-01"


def test_without_a_range_the_execution_dates_partition_runs():
    assert [p["key"] for p in plan(section(), "2013-06-15T04:00:00Z")] == ["2013-06-15"]
    assert [p["key"] for p in plan(section(partition="week"), "2013-06-15")] == ["2013-06-10"]
    assert plan(section(), "", today=dt.date(2020, 2, 29))[0]["key"] == "2020-02-29"
    # A timestamp with an offset is taken in UTC: 23:30 at -05:00 is the next day.
    assert parse_execution_date("2013-06-15T23:30:00-05:00") == dt.date(2013, 6, 16)


@pytest.mark.parametrize("kw, execution_date, message", [
    ({"start_date": "2013-01-01", "end_date": "2014-01-01"}, "2013-12-31", "after the execution date 2013-12-31"),
    ({"start_date": "2012-01-01", "end_date": "2013-12-01", "max_partitions": 30}, "2013-12-31", "more than backfill.max_partitions"),
    ({}, "yesterday", "execution_date: 'yesterday' is not a date"),
])
def test_bad_ranges_are_refused_naming_the_field(kw, execution_date, message):
    with pytest.raises(ConfigError, match=message):
        plan(section(**kw), execution_date)


@pytest.mark.parametrize("kw, message", [
    ({"start_date": "2013-01-01"}, "go together"),
    ({"start_date": "2013-02-01", "end_date": "2013-01-01"}, "is after backfill.end_date"),
    ({"start_date": "2013-1-1", "end_date": "2013-01-02"}, "backfill.start_date"),
    ({"partition": "hour"}, "backfill.partition"),
])
def test_bad_sections_are_refused(kw, message):
    with pytest.raises(ConfigError, match=message):
        section(**kw)


def test_the_window_is_bound_after_the_users_own_parameters():
    data = DataSection(source="postgresql://keel@db/keel", query="SELECT * FROM flights WHERE origin = %s AND x LIKE 'a%%'",
                       params=["JFK"])
    sql = partition_query(data, "time_hour", {"start": "2013-01-01", "end": "2013-01-02"})
    assert sql == ("SELECT * FROM (SELECT * FROM flights WHERE origin = 'JFK' AND x LIKE 'a%') AS source "
                   "WHERE \"time_hour\" >= '2013-01-01'::date AND \"time_hour\" < '2013-01-02'::date")
    named = DataSection(source="postgresql://keel@db/keel", query="SELECT * FROM f WHERE o = %(origin)s", params={"origin": "EWR"})
    assert "o = 'EWR') AS source" in partition_query(named, "day", {"start": "2013-01-01", "end": "2013-01-02"})
    with pytest.raises(ConfigError, match="backfill.date_column"):
        partition_query(data, "time_hour; DROP TABLE flights", {"start": "2013-01-01", "end": "2013-01-02"})
    with pytest.raises(ConfigError, match="reads a postgresql:// source"):
        partition_query(DataSection(source="x.csv"), "day", {"start": "2013-01-01", "end": "2013-01-02"})
