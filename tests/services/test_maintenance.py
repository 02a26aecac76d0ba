"""telemetry.services.maintenance: bulk writers leave the tables with planner statistics."""

import pytest
from django.db import connection
from django.utils import timezone

from telemetry.services.demo import seed_demo
from telemetry.services.maintenance import ANALYTICS_TABLES, analyze
from tests.factories import make_project

pytestmark = pytest.mark.django_db


def _has_statistics(table: str) -> bool:
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # -1 until the table is first analyzed or vacuumed (PostgreSQL 14+).
            cursor.execute("SELECT reltuples FROM pg_class WHERE relname = %s", [table])
            return cursor.fetchone()[0] > 0
        cursor.execute("SELECT COUNT(*) FROM sqlite_master WHERE name = 'sqlite_stat1'")
        if not cursor.fetchone()[0]:
            return False
        cursor.execute("SELECT COUNT(*) FROM sqlite_stat1 WHERE tbl = %s", [table])
        return cursor.fetchone()[0] > 0


def test_seed_demo_leaves_every_table_it_loaded_analyzed():
    project = make_project().project
    seed_demo(project=project, installs=40, events=800, days=20, seed=4, now=timezone.now())
    for table in ("telemetry_event", "telemetry_install", "telemetry_dailyactivity"):
        assert _has_statistics(table), table


def test_analyze_skips_tables_that_do_not_exist():
    assert analyze(["telemetry_event", "telemetry_no_such_table"]) == ["telemetry_event"]
    assert set(analyze()) == set(ANALYTICS_TABLES)


@pytest.mark.django_db(transaction=True)
def test_outside_a_transaction_seed_demo_also_vacuums_what_it_loaded():
    project = make_project().project
    seed_demo(project=project, installs=30, events=600, days=10, seed=6, now=timezone.now())
    if connection.vendor != "postgresql":
        assert _has_statistics("telemetry_event")
        return
    with connection.cursor() as cursor:
        for table in ("telemetry_periodactivity", "telemetry_dailyactivity"):
            # A partitioned table has no pages of its own: its partitions hold them.
            cursor.execute(
                "SELECT coalesce((SELECT sum(c.relallvisible) FROM pg_partition_tree(%s) t"
                " JOIN pg_class c ON c.oid = t.relid WHERE t.isleaf),"
                " (SELECT relallvisible FROM pg_class WHERE relname = %s))",
                [table, table],
            )
            assert cursor.fetchone()[0] > 0, table
