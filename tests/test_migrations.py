"""Migrations on a database that already holds events: nothing is lost (0003 events v2,
0010 the closed-day rollup, 0011 the closed-period rollup, 0014 the events' foreign key).

For 0003, on PostgreSQL the plain table becomes daily partitions; on SQLite only the unique key
changes. Rows are written with raw SQL at 0002, the migration runs, and every row is compared.
"""

import datetime as dt
import json

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from telemetry.services import partitions

BEFORE = [("telemetry", "0002_period_activity")]
AFTER = [("telemetry", "0003_partition_events")]
COLUMNS = (
    "id, project_id, event_id, install_id, name, timestamp, received_at, session_id,"
    " app_version, os, properties, ip_hash"
)


def migrate(targets) -> None:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)


def migrate_to_latest() -> None:
    """Every app to its newest migration, as the other tests expect the schema."""
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())


def rows() -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {COLUMNS} FROM telemetry_event ORDER BY id")
        return [tuple(str(v) for v in row) for row in cursor.fetchall()]


@pytest.mark.django_db(transaction=True)
def test_events_survive_the_move_to_v2_and_ids_continue():
    migrate(BEFORE)
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO telemetry_project (slug, name, contract, hostnames,"
                " operator_token_hash, retention_days, install_rate, ip_rate, allowed_origins,"
                " property_schema, strict, redact_pii, public_page, created_at) VALUES"
                " ('mig', 'Mig', 'native', '[]', '', 90, '10/h', '10/h', '[]', '{}',"
                " false, false, false, %s) RETURNING id",
                [dt.datetime(2025, 1, 1, tzinfo=dt.UTC)],
            )
            project = cursor.fetchone()[0]
            start = dt.datetime(2025, 3, 1, 23, 30, tzinfo=dt.UTC)
            for i in range(300):
                when = start + dt.timedelta(hours=7 * i)
                cursor.execute(
                    "INSERT INTO telemetry_event (project_id, event_id, install_id, name,"
                    " timestamp, received_at, session_id, app_version, os, properties, ip_hash)"
                    " VALUES (%s, %s, %s, 'app.start', %s, %s, 's', '1.0', 'linux', %s, 'h')",
                    [
                        project,
                        f"evt_{i:08d}" if i % 3 else None,
                        f"inst_{i % 17:08d}",
                        when,
                        when + dt.timedelta(seconds=5),
                        json.dumps({"i": i, "nested": {"k": [1, 2]}}),
                    ],
                )
        before = rows()
        assert len(before) == 300
        migrate(AFTER)
        assert rows() == before
        if connection.vendor == "postgresql":
            assert partitions.partitioned()
            # 300 events 7 hours apart span 88 UTC days, each now a partition of its own.
            days = {(start + dt.timedelta(hours=7 * i)).date() for i in range(300)}
            assert days <= set(partitions.existing())
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO telemetry_event (project_id, install_id, name, timestamp,"
                " received_at, session_id, app_version, os, properties, ip_hash)"
                " VALUES (%s, 'inst_new', 'x', %s, %s, '', '', '', '{}', '') RETURNING id",
                [project, start, start],
            )
            assert cursor.fetchone()[0] > max(int(r[0]) for r in before)
    finally:
        migrate_to_latest()


def latest() -> list[tuple[str, str]]:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    return [n for n in executor.loader.graph.leaf_nodes() if n[0] == "telemetry"]


@pytest.mark.django_db(transaction=True)
def test_going_back_before_the_rollup_queue_folds_what_it_holds_first():
    if connection.vendor != "postgresql":
        pytest.skip("only PostgreSQL queues rollups")
    from django.db.models import Sum

    from telemetry.ingest import pipeline, rollups
    from telemetry.ingest.schema import IncomingEvent
    from telemetry.models import DailyCount, Install
    from tests.factories import make_project

    project = make_project(slug="mig-queue").project
    now = dt.datetime.now(dt.UTC)
    events = [
        IncomingEvent(install_id=f"inst_q{i % 4:06d}", name="app.start", timestamp=now)
        for i in range(10)
    ]
    pipeline.ingest(project=project, events=events, client_ip="192.0.2.1")
    assert rollups.pending_rollups() == 10
    assert not Install.objects.filter(project=project).exists()
    newest = latest()
    try:
        migrate([("telemetry", "0008_partition_activity")])
        with connection.cursor() as cursor:
            cursor.execute("SELECT to_regclass('telemetry_rollupqueue')")
            assert cursor.fetchone()[0] is None
        assert Install.objects.filter(project=project).count() == 4
        total = DailyCount.objects.filter(project=project).aggregate(n=Sum("events"))["n"]
        assert total == 10
    finally:
        migrate(newest)
    assert rollups.pending_rollups() == 0


ROLLING_BEFORE = [("telemetry", "0009_rollup_queue")]
ROLLING_AFTER = [("telemetry", "0010_rolling_activity")]
PERIODS_BEFORE = ROLLING_AFTER
PERIODS_AFTER = [("telemetry", "0011_closed_periods")]


def table_rows(table: str) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {table} ORDER BY id")
        return [tuple(str(v) for v in row) for row in cursor.fetchall()]


@pytest.mark.django_db(transaction=True)
def test_the_closed_day_rollup_arrives_on_a_database_with_data_and_loses_nothing(client):
    from django.utils import timezone

    from telemetry.analytics import active
    from telemetry.services.rolling import refresh_rolling
    from tests.analytics.data import seeded_project

    p = seeded_project(client, seed=41, days=30)
    tables = ["telemetry_event", "telemetry_install", "telemetry_dailyactivity"]
    migrate(ROLLING_BEFORE)
    try:
        before = {t: table_rows(t) for t in tables}
        assert all(before.values())
        assert "telemetry_rollingactivity" not in connection.introspection.table_names()
        migrate(ROLLING_AFTER)
        assert {t: table_rows(t) for t in tables} == before
        from telemetry.models import Project

        project = Project.objects.get(pk=p.project.pk)
        day = timezone.now().date() - dt.timedelta(days=4)
        counted = active.rolling(project=project, day=day)  # an empty rollup: counted
        migrate(PERIODS_AFTER)  # what today's refresh writes too
        assert refresh_rolling(project=project, now=timezone.now()).days >= 25
        assert active.rolling(project=project, day=day) == counted
    finally:
        migrate_to_latest()


@pytest.mark.django_db(transaction=True)
def test_the_closed_period_rollup_arrives_and_leaves_without_losing_anything(client):
    from django.utils import timezone

    from telemetry.analytics import active
    from telemetry.services.rolling import refresh_rolling
    from tests.analytics.data import seeded_project

    p = seeded_project(client, seed=44, days=40)
    tables = [
        "telemetry_event",
        "telemetry_install",
        "telemetry_dailyactivity",
        "telemetry_periodactivity",
    ]
    migrate(PERIODS_BEFORE)
    try:
        before = {t: table_rows(t) for t in tables}
        assert all(before.values())
        assert "telemetry_closedperiod" not in connection.introspection.table_names()
        migrate(PERIODS_AFTER)
        assert {t: table_rows(t) for t in tables} == before
        from telemetry.models import Project

        project = Project.objects.get(pk=p.project.pk)
        end = timezone.now().date()
        start = end - dt.timedelta(days=39)
        counted = active.active_series(project=project, interval="week", start=start, end=end)
        assert refresh_rolling(project=project, now=timezone.now()).periods >= 30
        assert active.active_series(project=project, interval="week", start=start, end=end) == (
            counted
        )
        migrate(PERIODS_BEFORE)  # reversible: only the derived table goes
        assert "telemetry_closedperiod" not in connection.introspection.table_names()
        assert {t: table_rows(t) for t in tables} == before
    finally:
        migrate_to_latest()


ERRORS_BEFORE = PERIODS_AFTER
ERRORS_AFTER = [("telemetry", "0012_error_days")]


@pytest.mark.django_db(transaction=True)
def test_the_error_day_rollup_arrives_and_leaves_without_losing_anything():
    from django.utils import timezone

    from telemetry.analytics.errors import error_groups
    from telemetry.models import Project
    from telemetry.services.demo import seed_demo
    from telemetry.services.error_days import refresh_error_days
    from tests.analytics.data import brute_error_groups
    from tests.factories import make_project

    now = timezone.now()
    project = make_project().project
    seed_demo(project=project, installs=40, events=3000, days=20, seed=46, now=now)
    end = now.date()
    start = end - dt.timedelta(days=19)

    def groups(p):
        found, _ = error_groups(project=p, start=start, end=end, now=now)
        return {g.fingerprint: (g.count, g.installs, g.first_seen, g.last_seen) for g in found}

    expected = {
        k: (g["count"], g["installs"], g["first"], g["last"])
        for k, g in brute_error_groups(project, start, end).items()
    }
    assert expected
    tables = ["telemetry_event", "telemetry_install", "telemetry_dailycount"]
    migrate(ERRORS_BEFORE)
    try:
        before = {t: table_rows(t) for t in tables}
        assert all(before.values())
        assert "telemetry_errorday" not in connection.introspection.table_names()
        migrate(ERRORS_AFTER)
        assert {t: table_rows(t) for t in tables} == before
        project = Project.objects.get(pk=project.pk)
        assert groups(project) == expected  # an empty rollup: every event grouped
        assert refresh_error_days(project=project, now=now).days >= 10
        assert groups(project) == expected
        migrate(ERRORS_BEFORE)  # reversible: only the derived table goes
        assert "telemetry_errorday" not in connection.introspection.table_names()
        assert {t: table_rows(t) for t in tables} == before
    finally:
        migrate_to_latest()


STATISTICS_BEFORE = ERRORS_AFTER
STATISTICS_AFTER = [("telemetry", "0013_event_properties_statistics")]


def statistics_targets() -> set[int]:
    """The `properties` statistics targets of the events' parent and every partition."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT DISTINCT attstattarget FROM pg_attribute WHERE attname = 'properties'"
            " AND (attrelid = 'telemetry_event'::regclass OR attrelid IN"
            " (SELECT inhrelid FROM pg_inherits WHERE inhparent = 'telemetry_event'::regclass))"
        )
        return {target for (target,) in cursor.fetchall()}


@pytest.mark.django_db(transaction=True)
def test_analyze_stops_gathering_properties_statistics_on_existing_partitions_and_keeps_rows():
    from django.utils import timezone

    from telemetry.services.demo import seed_demo
    from tests.factories import make_project

    if connection.vendor != "postgresql":
        pytest.skip("per-column statistics targets are PostgreSQL's")
    project = make_project().project
    seed_demo(project=project, installs=20, events=600, days=10, seed=13, now=timezone.now())
    tables = ["telemetry_event", "telemetry_install", "telemetry_dailyactivity"]
    migrate(STATISTICS_BEFORE)
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "ALTER TABLE telemetry_event ALTER COLUMN properties SET STATISTICS -1"
            )  # as a database migrated before 0013 has it
        before = {t: table_rows(t) for t in tables}
        assert before["telemetry_event"]  # seed_demo wrote events (about 600)
        assert statistics_targets() == {-1}
        migrate(STATISTICS_AFTER)
        assert statistics_targets() == {0}
        assert {t: table_rows(t) for t in tables} == before
        migrate(STATISTICS_BEFORE)
        assert statistics_targets() == {-1}
        assert {t: table_rows(t) for t in tables} == before
    finally:
        migrate_to_latest()


FK_BEFORE = STATISTICS_AFTER
FK_AFTER = [("telemetry", "0014_event_project_no_fk")]


def event_foreign_keys() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT conname FROM pg_constraint WHERE contype = 'f'"
            " AND conrelid = 'telemetry_event'::regclass"
        )
        return [name for (name,) in cursor.fetchall()]


@pytest.mark.django_db(transaction=True)
def test_the_events_foreign_key_goes_without_a_row_and_comes_back_without_orphans():
    from django.utils import timezone

    from telemetry.services.demo import seed_demo
    from tests.factories import insert_event_row, make_project

    if connection.vendor != "postgresql":
        pytest.skip("SQLite keeps the constraint")
    project = make_project().project
    seed_demo(project=project, installs=20, events=600, days=10, seed=14, now=timezone.now())
    migrate(FK_BEFORE)
    try:
        assert event_foreign_keys() == ["telemetry_event_project_id_fk_v2"]
        before = table_rows("telemetry_event")
        assert before
        migrate(FK_AFTER)
        assert event_foreign_keys() == []
        assert table_rows("telemetry_event") == before
        # A row of a project that no longer exists, as a deletion racing ingest leaves it.
        insert_event_row(project.pk + 1000, timezone.now(), "orphan-install")
        migrate(FK_BEFORE)
        assert event_foreign_keys() == ["telemetry_event_project_id_fk_v2"]
        assert table_rows("telemetry_event") == before
    finally:
        migrate_to_latest()
