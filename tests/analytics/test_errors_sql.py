"""The errors page's predicate is the partial index's, so PostgreSQL reads only error events."""

from importlib import import_module

from telemetry.analytics.errors import error_sql


def test_the_errors_query_uses_the_partial_index_predicate_verbatim():
    migration = import_module("telemetry.migrations.0050_issue11_cohort_activity")
    assert error_sql("postgresql") == migration.ERROR_SQL
