"""Small factories for projects and event payloads."""

import datetime as dt
import itertools
import uuid

from django.utils import timezone

from telemetry.services.projects import NewProject, create_project

_n = itertools.count(1)


def make_project(**kwargs) -> NewProject:
    kwargs.setdefault("slug", f"proj-{next(_n)}")
    kwargs.setdefault("install_rate", "1000/h")
    kwargs.setdefault("ip_rate", "10000/h")
    return create_project(**kwargs)


def iso(moment: dt.datetime | None = None) -> str:
    return (moment or timezone.now()).isoformat()


def native_event(**overrides) -> dict:
    event = {
        "install_id": f"inst_{uuid.uuid4().hex[:12]}",
        "name": "app.start",
        "timestamp": iso(),
        "event_id": f"evt_{uuid.uuid4().hex}",
        "app_version": "1.2.3",
        "os": "linux",
        "properties": {"command": "init"},
    }
    event.update(overrides)
    return {k: v for k, v in event.items() if v is not None}


def ingest_at(project, when: dt.datetime, install_id: str, *, name: str = "app.start", n: int = 1):
    """Store n events of one install through the real pipeline, sent and received at `when`."""
    from telemetry.ingest.pipeline import ingest
    from telemetry.ingest.schema import IncomingEvent

    events = [
        IncomingEvent(install_id=install_id, name=name, timestamp=when, app_version="1.0")
        for _ in range(n)
    ]
    result = ingest(project=project, events=events, client_ip="192.0.2.10", now=when)
    fold()
    return result


def insert_event_row(project_id: int, when: dt.datetime, install_id: str) -> None:
    """One event row written straight into telemetry_event, as a bulk load by hand or a write
    racing a project's deletion leaves it: no claim, no rollups, no check that the project
    exists (events have no foreign key on PostgreSQL)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO telemetry_event (project_id, install_id, name, timestamp, received_at,"
            " session_id, app_version, os, properties, ip_hash)"
            " VALUES (%s, %s, 'app.start', %s, %s, '', '', '', '{}', '')",
            [project_id, install_id, when, when],
        )


def fold() -> int:
    """Fold queued rollup rows now, as the beat job does within seconds (PostgreSQL)."""
    from telemetry.ingest.rollups import fold_rollups

    return fold_rollups()


def shared_database_url() -> str:
    """A DATABASE_URL naming the database this test runs on, for a subprocess to share it."""
    from urllib.parse import quote

    from django.db import connection

    s = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{s['NAME']}"
    auth = quote(s["USER"] or "")
    if s.get("PASSWORD"):
        auth += ":" + quote(s["PASSWORD"])
    return f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


def forget_claims() -> None:
    """Empty this test run's cache (claims and counters), as if the claim TTL had passed."""
    from django.core.cache import cache

    if hasattr(cache, "delete_pattern"):
        cache.delete_pattern("*")  # only this prefix: never FLUSHDB a shared Redis
    else:
        cache.clear()
