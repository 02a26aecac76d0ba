"""telemetry.services.purge: what goes, what stays, and the aggregates kept on the way out."""

import datetime as dt
import threading

import pytest
from django.db import connection

from telemetry.models import (
    CohortSummary,
    DailyActivity,
    DailyCount,
    DailySummary,
    Event,
    Install,
)
from telemetry.services import purge
from telemetry.services.locks import LockBusy, job_lock
from tests.factories import ingest_at, make_project

pytestmark = pytest.mark.django_db

NOW = dt.datetime(2025, 6, 15, 12, 0, tzinfo=dt.UTC)  # a Sunday
OLD = dt.datetime(2025, 5, 5, 10, 0, tzinfo=dt.UTC)  # a Monday, 41 days before NOW
RECENT = dt.datetime(2025, 6, 10, 9, 0, tzinfo=dt.UTC)
MICRO = dt.timedelta(microseconds=1)


def project_with_history(retention_days=30):
    p = make_project(retention_days=retention_days).project
    ingest_at(p, OLD, "inst_gone_0001", n=3)  # never seen again: goes entirely
    ingest_at(p, OLD + dt.timedelta(days=1), "inst_gone_0002")
    ingest_at(p, OLD, "inst_stays_001", n=2)  # active again recently: install row stays
    ingest_at(p, RECENT, "inst_stays_001")
    ingest_at(p, RECENT, "inst_new_00001", name="app.crash")
    return p


def test_it_deletes_expired_events_activity_and_installs_and_keeps_recent_ones():
    p = project_with_history()
    result = purge.purge(now=NOW)
    assert result[0].deleted == {
        "events": 6,
        "daily_activity": 3,
        "installs": 2,
        "period_activity": 6,
        "batches": 0,
    }
    assert Event.objects.filter(project=p).count() == 2
    assert set(Event.objects.values_list("received_at", flat=True)) == {RECENT}
    assert sorted(Install.objects.values_list("install_id", flat=True)) == [
        "inst_new_00001",
        "inst_stays_001",
    ]
    assert set(DailyActivity.objects.values_list("day", flat=True)) == {RECENT.date()}


def test_it_snapshots_daily_totals_of_purged_days_first():
    p = project_with_history()
    purge.purge(now=NOW)
    rows = {
        s.day: (s.active_installs, s.new_installs, s.events)
        for s in DailySummary.objects.filter(project=p)
    }
    assert rows == {OLD.date(): (2, 2, 5), (OLD + dt.timedelta(days=1)).date(): (1, 1, 1)}


def test_it_snapshots_weekly_cohorts_of_purged_installs_first():
    p = project_with_history()
    purge.purge(now=NOW)
    cohort = CohortSummary.objects.get(project=p)
    assert cohort.week_start == OLD.date()
    assert cohort.size == 3
    # weeks 0..5 (May 5 to the week of NOW); one install came back in week 5 (June 9-15)
    assert cohort.retained == [3, 0, 0, 0, 0, 1]


def test_daily_counts_are_anonymous_and_survive():
    p = project_with_history()
    before = list(DailyCount.objects.filter(project=p).order_by("day", "name").values())
    purge.purge(now=NOW)
    assert list(DailyCount.objects.filter(project=p).order_by("day", "name").values()) == before


def test_it_uses_each_projects_own_retention():
    short = project_with_history(retention_days=3)
    long = project_with_history(retention_days=90)
    purge.purge(now=NOW)
    assert Event.objects.filter(project=long).count() == 8
    assert Event.objects.filter(project=short).count() == 0
    assert Install.objects.filter(project=short).count() == 0


def test_it_purges_only_the_project_asked_for():
    one = project_with_history()
    other = project_with_history()
    purge.purge(now=NOW, projects=[one])
    assert Event.objects.filter(project=one).count() == 2
    assert Event.objects.filter(project=other).count() == 8


def test_tiny_batches_delete_exactly_what_one_batch_would():
    p = project_with_history()
    result = purge.purge(now=NOW, batch_size=1)
    assert result[0].deleted == {
        "events": 6,
        "daily_activity": 3,
        "installs": 2,
        "period_activity": 6,
        "batches": 0,
    }
    assert Event.objects.filter(project=p).count() == 2


def test_a_second_run_changes_nothing():
    p = project_with_history()
    purge.purge(now=NOW)
    summaries = list(DailySummary.objects.values())
    cohorts = list(CohortSummary.objects.values())
    again = purge.purge(now=NOW)
    assert again[0].deleted == {
        "events": 0,
        "daily_activity": 0,
        "installs": 0,
        "period_activity": 0,
        "batches": 0,
    }
    assert again[0].summaries == 0
    assert list(DailySummary.objects.values()) == summaries
    assert list(CohortSummary.objects.values()) == cohorts
    assert Event.objects.filter(project=p).count() == 2


def test_dry_run_counts_match_what_the_purge_then_deletes():
    p = project_with_history()
    counts = purge.expired_counts(project=p, now=NOW)
    assert Event.objects.count() == 8
    assert counts.deleted == purge.purge(now=NOW)[0].deleted


def test_a_second_purge_is_refused_while_one_holds_the_lock():
    p = project_with_history()
    held, release = threading.Event(), threading.Event()

    def holder():
        from django.db import connection

        try:
            with job_lock("purge"):
                held.set()
                release.wait(10)
        finally:
            connection.close()

    thread = threading.Thread(target=holder)
    thread.start()
    try:
        assert held.wait(10)
        with pytest.raises(LockBusy):
            purge.purge(now=NOW)
        assert Event.objects.filter(project=p).count() == 8
    finally:
        release.set()
        thread.join()
    assert purge.purge(now=NOW)[0].deleted["events"] == 6


# The rule (README, "Retention"): an event is purged when its received_at is before the start of
# the UTC day `retention_days` days before the purge's UTC day; rollups dated before that day go
# with it. So everything received on the first kept day stays, to the microsecond.
EDGE_NOW = dt.datetime(2025, 6, 15, 12, 0, tzinfo=dt.UTC)
FIRST_KEPT = dt.datetime(2025, 5, 16, tzinfo=dt.UTC)  # 00:00 UTC, 30 days before June 15


@pytest.mark.parametrize(
    ("received", "kept"),
    [(FIRST_KEPT, True), (FIRST_KEPT - MICRO, False)],
)
def test_an_event_at_the_cutoff_is_kept_and_one_microsecond_earlier_purged(received, kept):
    p = make_project(retention_days=30).project
    ingest_at(p, received, "inst_edge_0001")
    counts = purge.purge_project(project=p, now=EDGE_NOW, pause=0)
    assert counts.cutoff == FIRST_KEPT.date()
    assert Event.objects.filter(project=p).exists() is kept
    assert DailyActivity.objects.filter(project=p).exists() is kept
    assert Install.objects.filter(project=p).exists() is kept


@pytest.mark.parametrize("purged_at", [dt.timedelta(0), dt.timedelta(hours=12) - MICRO])
def test_nothing_accepted_today_is_purged_today(purged_at):
    from telemetry.ingest.pipeline import ACCEPTED, ingest
    from telemetry.ingest.schema import IncomingEvent, InvalidEvent, check_timestamp_window

    p = make_project(retention_days=30).project
    oldest = EDGE_NOW - dt.timedelta(days=30)  # the oldest timestamp ingest accepts now
    check_timestamp_window(oldest, now=EDGE_NOW, retention_days=30)
    with pytest.raises(InvalidEvent):
        check_timestamp_window(oldest - MICRO, now=EDGE_NOW, retention_days=30)
    event = IncomingEvent(install_id="inst_edge_0002", name="app.start", timestamp=oldest)
    result = ingest(project=p, events=[event], client_ip="192.0.2.1", now=EDGE_NOW)
    assert result.outcomes[0].status == ACCEPTED
    # Any purge later that UTC day (up to 23:59:59.999999) keeps all of it.
    counts = purge.purge_project(project=p, now=EDGE_NOW + purged_at, pause=0)
    assert counts.deleted["events"] == counts.deleted["daily_activity"] == 0
    assert counts.deleted["installs"] == 0
    assert Event.objects.filter(project=p).count() == 1
    assert DailyActivity.objects.filter(project=p, day=oldest.date()).count() == 1
    assert DailyCount.objects.filter(project=p, day=oldest.date()).get().events == 1


@pytest.mark.django_db(transaction=True)
def test_outside_a_transaction_the_purge_vacuums_the_tables_it_deleted_from():
    # Dead rows and cleared visibility maps made the counts over installs and weekly activity
    # read the heap until autovacuum came (if it came): 3x slower at 10M events.
    project_with_history()
    purge.purge(now=NOW)
    assert Install.objects.count() == 2
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT relname, relpages, relallvisible FROM pg_class WHERE relname IN (%s, %s)",
            ["telemetry_install", "telemetry_periodactivity"],
        )
        # Every page visible; how many there are depends on what earlier tests left behind.
        pages = {name: (n, visible) for name, n, visible in cursor.fetchall()}
        assert set(pages) == {"telemetry_install", "telemetry_periodactivity"}
        assert all(n >= 1 and visible == n for n, visible in pages.values()), pages
