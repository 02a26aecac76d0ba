"""The errors page: its predicate is the partial index's (PostgreSQL reads only error events),
and grouping in SQL gives what grouping every event in Python gives."""

import datetime as dt
from importlib import import_module

from django.utils import timezone

from telemetry.analytics.errors import error_groups, error_sql
from telemetry.ingest.pipeline import ingest
from telemetry.ingest.schema import IncomingEvent
from telemetry.services.demo import seed_demo
from tests.analytics.data import brute_error_groups
from tests.factories import ingest_at, make_project


def test_the_errors_query_uses_the_partial_index_predicate_verbatim():
    migration = import_module("telemetry.migrations.0007_cohort_activity")
    assert error_sql("postgresql") == migration.ERROR_SQL


def test_groups_equal_a_python_grouping_of_every_event(db):
    project = make_project().project
    now = timezone.now()
    seed_demo(project=project, installs=60, events=4000, days=20, seed=8, now=now)
    # Same message and first stack line, different later lines: one group, two combinations.
    for i, tail in enumerate(("at a (x.py:1)", "at b (y.py:2)")):
        props = {"type": "Boom", "message": "it broke", "stack": f"Boom: it broke\n  {tail}"}
        ingest(
            project=project,
            events=[
                IncomingEvent(
                    install_id=f"inst_boom_{i}", name="error.crash", timestamp=now, properties=props
                )
            ],
            client_ip="192.0.2.1",
            now=now,
        )
    ingest_at(project, now, "inst_plain_1")
    start, end = now.date() - dt.timedelta(days=19), now.date()
    groups, truncated = error_groups(project=project, start=start, end=end)
    expected = brute_error_groups(project, start, end)
    assert not truncated
    assert {g.fingerprint: g.count for g in groups} == {k: v["count"] for k, v in expected.items()}
    for g in groups:
        e = expected[g.fingerprint]
        assert g.installs == e["installs"]
        assert (g.first_seen, g.last_seen) == (e["first"], e["last"])
        assert g.sample["properties"] and g.sample["name"]
    boom = next(g for g in groups if g.message == "it broke")
    assert (boom.count, boom.affected_installs) == (2, 2)
