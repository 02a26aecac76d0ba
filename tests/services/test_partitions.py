"""Event partitions on PostgreSQL: created ahead and on demand, dropped whole by the purge, and
only the remainder a drop cannot take deleted row by row."""

import datetime as dt
import re
import threading

import psycopg
import pytest
from django.conf import settings
from django.db import connection

from telemetry.ingest import pipeline
from telemetry.ingest.schema import IncomingEvent
from telemetry.models import DailyActivity, DailyCount, DailySummary, Event
from telemetry.services import partitions, purge
from tests.factories import ingest_at, insert_event_row, make_project

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

NOW = dt.datetime(2025, 6, 15, 12, 0, tzinfo=dt.UTC)


@pytest.fixture(autouse=True)
def _postgres_only():
    if connection.vendor != "postgresql":
        pytest.skip("events are partitioned on PostgreSQL only; SQLite keeps one table")


def days_ago(n: int, hour: int = 10) -> dt.datetime:
    return (NOW - dt.timedelta(days=n)).replace(hour=hour)


def test_the_table_is_partitioned_by_day_and_beat_creates_the_days_ahead():
    assert partitions.partitioned()
    created = partitions.ensure_ahead(now=NOW)
    today = NOW.date()
    expected = {today + dt.timedelta(days=i) for i in range(-1, partitions.DAYS_AHEAD + 1)}
    assert set(created) == expected
    assert expected <= set(partitions.existing())
    assert partitions.ensure_ahead(now=NOW) == []  # idempotent


def test_the_hourly_job_drops_the_tables_a_dead_import_held_its_rows_in():
    from telemetry.models import TaskRun
    from telemetry.services.schedule import run_job

    dead = f"{partitions.HOLD_PREFIX}999999999_20250601"  # no backend has this pid
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE TABLE {dead} (LIKE telemetry_event)")
    run_job("create_partitions", now=NOW)
    assert dead not in connection.introspection.table_names()
    assert TaskRun.objects.get().details["dropped_held_tables"] == [dead]
    run_job("create_partitions", now=NOW)
    assert "dropped_held_tables" not in TaskRun.objects.latest("started_at").details


def test_an_event_on_a_day_without_a_partition_is_stored_through_on_demand_creation():
    p = make_project(retention_days=400).project
    when = days_ago(200)
    assert when.date() not in partitions.existing()
    result = ingest_at(p, when, "inst_ondemand1")
    assert result.accepted == 1
    assert when.date() in partitions.existing()
    assert Event.objects.get(project=p).timestamp == when


def test_analyze_gathers_no_statistics_of_the_properties_documents_on_any_partition():
    p = make_project(retention_days=400).project
    ingest_at(p, days_ago(3), "inst_stats_1", n=5)  # a day made ahead by ensure_ahead's path
    ingest_at(p, days_ago(250), "inst_stats_2", n=5)  # a day made on demand
    names = [partitions.partition_name(days_ago(n).date()) for n in (3, 250)]
    with connection.cursor() as cursor:
        for name in names:
            cursor.execute(f"ANALYZE {name}")
        cursor.execute(
            "SELECT tablename, attname FROM pg_stats WHERE tablename = ANY(%s)"
            " AND attname IN ('properties', 'name')",
            [names],
        )
        gathered = sorted(cursor.fetchall())
    assert gathered == sorted((name, "name") for name in names)


def prepared_store_statements() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE %s",
            ["%INSERT INTO telemetry_rollupqueue%"],
        )
        return cursor.fetchone()[0]


@pytest.fixture
def prepare_threshold():
    """The connection's psycopg prepare_threshold, restored after the test (None: the
    DATABASE_PREPARED_STATEMENTS=0 setting, no prepared statements)."""
    connection.ensure_connection()
    before = connection.connection.prepare_threshold
    yield lambda value: setattr(connection.connection, "prepare_threshold", value)
    connection.connection.prepare_threshold = before


@pytest.mark.parametrize("prepared", [True, False])
def test_the_store_statement_keeps_working_while_partitions_are_dropped_and_made(
    prepare_threshold, prepared
):
    # The store statement is prepared once per connection: PostgreSQL must plan it again when
    # a purge drops the partition it last wrote to and on-demand creation makes it anew.
    assert connection.connection.prepare_threshold is not None  # the default is on
    prepare_threshold(5 if prepared else None)
    connection.connection.execute("DEALLOCATE ALL")
    p = make_project(retention_days=30).project
    assert ingest_at(p, days_ago(35), "inst_prep_001").accepted == 1
    (result,) = purge.purge(now=NOW)
    assert result.deleted["events"] == 1
    assert days_ago(35).date() not in partitions.existing()
    assert ingest_at(p, days_ago(35, hour=11), "inst_prep_002").accepted == 1
    assert ingest_at(p, days_ago(2), "inst_prep_003").accepted == 1
    assert sorted(Event.objects.filter(project=p).values_list("install_id", flat=True)) == [
        "inst_prep_002",
        "inst_prep_003",
    ]
    assert prepared_store_statements() == (1 if prepared else 0)


def test_a_purge_drops_whole_expired_days_and_keeps_the_rest():
    p = make_project(retention_days=30).project
    for n in (40, 35, 31, 30, 29, 1):
        ingest_at(p, days_ago(n), f"inst_day_{n:05d}")
    (result,) = purge.purge(now=NOW)
    assert result.deleted["events"] == 3
    kept = sorted(Event.objects.values_list("timestamp", flat=True))
    assert kept == [days_ago(30), days_ago(29), days_ago(1)]
    existing = partitions.existing()
    for n in (40, 35, 31):
        assert days_ago(n).date() not in existing  # dropped, not emptied
    for n in (30, 29, 1):
        assert days_ago(n).date() in existing


def test_expired_days_of_daily_activity_are_dropped_whole_too():
    p = make_project(retention_days=30).project
    for n in (40, 1):
        ingest_at(p, days_ago(n), "inst_activity1")
    activity = partitions.existing(parent=partitions.ACTIVITY)
    assert {days_ago(40).date(), days_ago(1).date()} <= set(activity)
    (result,) = purge.purge(now=NOW)
    assert result.deleted["daily_activity"] == 1
    assert list(DailyActivity.objects.values_list("day", flat=True)) == [days_ago(1).date()]
    activity = partitions.existing(parent=partitions.ACTIVITY)
    assert days_ago(40).date() not in activity and days_ago(1).date() in activity


def test_the_first_kept_day_starts_at_midnight_utc_exactly():
    p = make_project(retention_days=30).project
    first_kept = dt.datetime.combine(NOW.date() - dt.timedelta(days=30), dt.time.min, dt.UTC)
    ingest_at(p, first_kept - dt.timedelta(microseconds=1), "inst_edge_before", n=1)
    ingest_at(p, first_kept, "inst_edge_after1")
    purge.purge(now=NOW)
    assert list(Event.objects.values_list("timestamp", flat=True)) == [first_kept]


def test_a_seven_day_project_beside_a_ninety_day_one_loses_exactly_its_expired_rows():
    short = make_project(retention_days=7).project
    long = make_project(retention_days=90).project
    for n in (20, 10, 8, 7, 2):
        ingest_at(short, days_ago(n), f"inst_short_{n:03d}")
        ingest_at(long, days_ago(n), f"inst_long_{n:04d}")
    ingest_at(long, days_ago(100), "inst_long_expired")
    results = {r.project: r for r in purge.purge(now=NOW)}
    assert results[short.slug].deleted["events"] == 3
    assert results[long.slug].deleted["events"] == 1
    assert sorted(Event.objects.filter(project=short).values_list("timestamp", flat=True)) == [
        days_ago(7),
        days_ago(2),
    ]
    assert Event.objects.filter(project=long).count() == 5
    # The long project's days stay as partitions; its own expired day is gone whole.
    assert days_ago(20).date() in partitions.existing()
    assert days_ago(100).date() not in partitions.existing()


def test_purging_one_project_never_drops_a_day_another_project_still_holds():
    a = make_project(retention_days=30).project
    b = make_project(retention_days=30).project
    ingest_at(a, days_ago(40), "inst_a_000001")
    ingest_at(b, days_ago(40), "inst_b_000001")
    purge.purge(now=NOW, projects=[a])
    assert not Event.objects.filter(project=a).exists()
    assert Event.objects.filter(project=b).count() == 1  # b was not snapshotted: kept
    assert days_ago(40).date() in partitions.existing()


def test_rows_of_a_deleted_project_never_keep_a_day_and_go_from_a_day_that_stays():
    # Events have no foreign key (migration 0014): a row stored while its project was being
    # deleted, and folded before the deletion committed, is still in its day.
    short = make_project(retention_days=30).project
    long = make_project(retention_days=60).project
    ingest_at(short, days_ago(40), "inst_short_0001")
    ingest_at(long, days_ago(38), "inst_long_00001")
    orphan = short.pk + long.pk + 1000
    for n in (40, 38):
        insert_event_row(orphan, days_ago(n), "inst_orphan_1")
    results = {r.project: r for r in purge.purge(now=NOW)}
    assert results[short.slug].deleted["events"] == 1  # its own row only
    assert days_ago(40).date() not in partitions.existing()
    assert days_ago(38).date() in partitions.existing()
    assert not Event.objects.filter(project_id=orphan).exists()
    assert list(Event.objects.filter(project=long).values_list("timestamp", flat=True)) == [
        days_ago(38)
    ]


def test_dropped_days_are_snapshotted_first_and_counts_survive():
    p = make_project(retention_days=30).project
    ingest_at(p, days_ago(40), "inst_snap_0001", n=3)
    purge.purge(now=NOW)
    summary = DailySummary.objects.get(project=p, day=days_ago(40).date())
    assert (summary.active_installs, summary.events) == (1, 3)
    assert DailyCount.objects.get(project=p, day=days_ago(40).date()).events == 3


def test_the_projects_of_each_partition_are_found_exactly_by_the_index_walk():
    projects = [make_project(retention_days=30).project for _ in range(3)]
    for i, p in enumerate(projects):
        for n in range(i + 1):  # day 40: 3 projects, day 39: the last 2, day 38: the last
            ingest_at(p, days_ago(40 - n), f"inst_walk_{i}_{n}")
    ingest_at(projects[0], days_ago(1), "inst_walk_recent")
    partitions.ensure([days_ago(2).date()])  # an empty one
    names = partitions.existing()
    found = partitions.projects_in(
        [names[days_ago(n).date()] for n in (40, 39, 38, 1, 2)], per_statement=2
    )
    ids = [p.pk for p in projects]
    assert found == {
        names[days_ago(40).date()]: set(ids),
        names[days_ago(39).date()]: set(ids[1:]),
        names[days_ago(38).date()]: {ids[2]},
        names[days_ago(1).date()]: {ids[0]},
        names[days_ago(2).date()]: set(),
    }


def test_rows_written_around_the_rollups_are_still_counted_and_dropped_exactly():
    p = make_project(retention_days=30).project
    ingest_at(p, days_ago(40), "inst_rolled_01", n=2)
    # An event copied in without its rollups (as a bulk load by hand would): no DailyCount row
    # for its day, yet the report counts it and the drop takes it.
    partitions.ensure([days_ago(41).date()])
    insert_event_row(p.pk, days_ago(41), "inst_raw_0001")
    assert not DailyCount.objects.filter(project=p, day=days_ago(41).date()).exists()
    (result,) = purge.purge(now=NOW)
    assert result.deleted["events"] == 3
    assert not Event.objects.filter(project=p).exists()
    assert days_ago(41).date() not in partitions.existing()


def test_after_the_nightly_refresh_a_purge_reads_no_expired_row():
    from django.test.utils import CaptureQueriesContext

    from telemetry.services import aggregates

    p = make_project(retention_days=30).project
    for n in (45, 40, 35, 1):
        ingest_at(p, days_ago(n), f"inst_scan_{n:04d}", n=2)
    # The 00:30 refresh summarises every closed day while it is still inside retention.
    aggregates.refresh_aggregates(now=NOW - dt.timedelta(days=20))
    with CaptureQueriesContext(connection) as queries:
        (result,) = purge.purge(now=NOW)
    assert result.deleted["events"] == 6 and result.deleted["daily_activity"] == 3
    # No count over the events or the activity names a day that has rows: the days without
    # any (never summarised) may be asked about, which reads nothing. The fold of queued
    # rollups counts what it folded, not a scan.
    scans = [
        q["sql"]
        for q in queries
        if re.search(r"COUNT\(.*FROM \"?telemetry_(event|dailyactivity)\b", q["sql"], re.I | re.S)
        and "rollupqueue" not in q["sql"]
    ]
    assert scans  # the empty days are still asked about
    for sql in scans:
        asked = re.search(r"IN \(([^)]*)\)", sql).group(1)
        assert f"'{days_ago(44).date()}'" in asked
        for n in (45, 40, 35):
            assert f"'{days_ago(n).date()}'" not in asked
    assert not Event.objects.filter(project=p, timestamp__lt=days_ago(30, hour=0)).exists()


def test_a_day_whose_activity_was_dropped_while_its_events_stayed_is_folded_again():
    """A purge drops a day of activity whose events' day it keeps (another project's id-less
    events hold it); a late event for that day still gets its rollups: the fold makes the day."""
    p = make_project(retention_days=400).project
    ingest_at(p, days_ago(40), "inst_first_001")
    partitions.drop_many([partitions.partition_name(days_ago(40).date(), partitions.ACTIVITY)])
    assert days_ago(40).date() in partitions.existing()
    assert days_ago(40).date() not in partitions.existing(parent=partitions.ACTIVITY)
    ingest_at(p, days_ago(40, hour=11), "inst_late_0001")
    assert list(DailyActivity.objects.values_list("install_id", "day")) == [
        ("inst_late_0001", days_ago(40).date())
    ]
    counted = DailyCount.objects.filter(project=p, day=days_ago(40).date())
    assert sum(c.events for c in counted) == 2


def test_empty_days_go_once_no_project_accepts_rows_for_them():
    """Days made ahead that stayed quiet are dropped once they are older than every project's
    retention, and kept while some project would still store an event on them."""
    short = make_project(retention_days=30).project
    make_project(retention_days=60)
    ingest_at(short, days_ago(1), "inst_quiet_001")
    partitions.ensure([days_ago(70).date(), days_ago(45).date()])
    purge.purge(now=NOW, projects=[short])
    for parent in partitions.PARENTS:
        days = set(partitions.existing(parent=parent))
        assert days_ago(70).date() not in days
        assert {days_ago(45).date(), days_ago(1).date()} <= days


def test_a_detach_left_pending_or_half_done_by_a_killed_purge_is_finished_next_run():
    p = make_project(retention_days=30).project
    ingest_at(p, days_ago(40), "inst_pending01")
    name = partitions.partition_name(days_ago(40).date())
    # What a purge killed between DETACH and DROP leaves: a detached table named like a day.
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE telemetry_event DETACH PARTITION {name}")
    assert partitions.finish_pending() == [name]
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass(%s)", [name])
        assert cursor.fetchone()[0] is None


@pytest.mark.django_db(transaction=True)
def test_a_write_meets_a_locked_parent_with_a_clean_503_not_a_500():
    """Creating a partition waits at most LOCK_TIMEOUT for the parent; then ingest says 503."""
    p = make_project(retention_days=400).project
    db = settings.DATABASES["default"]
    dsn = (
        f"host={db['HOST'] or '127.0.0.1'} port={db['PORT'] or 5432}"
        f" user={db['USER'] or 'postgres'} dbname={connection.settings_dict['NAME']}"
    )
    locked, release = threading.Event(), threading.Event()

    def hold() -> None:
        with psycopg.connect(dsn) as other:
            # Blocks partition DDL on the parent, not inserts into existing partitions.
            other.execute("LOCK TABLE telemetry_event IN SHARE UPDATE EXCLUSIVE MODE")
            locked.set()
            release.wait(20)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert locked.wait(10)
        when = days_ago(300)
        event = IncomingEvent(
            install_id="inst_locked01", name="app.start", timestamp=when, event_id="evt_locked01"
        )
        with pytest.raises(pipeline.ServiceUnavailable) as raised:
            pipeline.ingest(project=p, events=[event], client_ip="192.0.2.1", now=NOW)
        assert raised.value.service == "database"
        assert not Event.objects.filter(project=p).exists()
    finally:
        release.set()
        holder.join(30)
    # Once the lock is gone the same event goes through: its claim was released.
    result = pipeline.ingest(project=p, events=[event], client_ip="192.0.2.1", now=NOW)
    assert result.accepted == 1


@pytest.mark.django_db(transaction=True)
def test_a_drop_that_meets_a_brief_lock_waits_it_out_and_detaches_plainly(monkeypatch):
    """A transaction holding the activity's parent past one lock budget (a slow fold commit) is
    waited out by the next attempt, not handed to DETACH … CONCURRENTLY."""
    p = make_project(retention_days=30).project
    ingest_at(p, days_ago(40), "inst_briefl01")
    name = partitions.partition_name(days_ago(40).date(), partitions.ACTIVITY)
    db = settings.DATABASES["default"]
    dsn = (
        f"host={db['HOST'] or '127.0.0.1'} port={db['PORT'] or 5432}"
        f" user={db['USER'] or 'postgres'} dbname={connection.settings_dict['NAME']}"
    )
    locked = threading.Event()

    def hold() -> None:
        with psycopg.connect(dsn) as other:
            other.execute("LOCK TABLE telemetry_dailyactivity IN ROW EXCLUSIVE MODE")  # a fold
            locked.set()
            threading.Event().wait(0.15)  # longer than one budget, shorter than the retries

    def refuse(name: str) -> None:
        raise AssertionError(f"{name} fell back to DETACH CONCURRENTLY")

    monkeypatch.setattr(partitions, "_detach_concurrently", refuse)
    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert locked.wait(10)
        partitions.drop_many([name])
    finally:
        holder.join(30)
    assert days_ago(40).date() not in partitions.existing(parent=partitions.ACTIVITY)
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass(%s)", [name])
        assert cursor.fetchone()[0] is None


@pytest.mark.django_db(transaction=True)
def test_days_of_events_are_detached_while_inserts_go_on(monkeypatch):
    """Event days are detached CONCURRENTLY, never by the plain DETACH whose exclusive lock on
    the parent every insert would queue behind; an insert in a transaction left open across
    the purge (its lock on the parent held) is not disturbed and commits afterwards."""
    p = make_project(retention_days=30).project
    for n in (41, 40):
        ingest_at(p, days_ago(n), f"inst_live_{n:04d}")
    ingest_at(p, days_ago(1), "inst_live_0001")

    def refuse(names: list[str], *, attempts: int = 1) -> bool:
        if any(partitions.parent_of(name) == partitions.PARENT for name in names):
            raise AssertionError(f"plain DETACH of {names} would block inserts")
        return real(names, attempts=attempts)

    real = partitions._detach
    monkeypatch.setattr(partitions, "_detach", refuse)
    (result,) = purge.purge(now=NOW)
    assert result.deleted["events"] == 2
    assert not {days_ago(41).date(), days_ago(40).date()} & set(partitions.existing())
    assert Event.objects.filter(project=p).count() == 1
