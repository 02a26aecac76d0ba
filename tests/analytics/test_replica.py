"""DATABASE_REPLICA_URL: dashboard and analytics reads go to a real streaming replica, writes
never do, and a replica that lags or is down falls back to the primary without breaking a page.

Starts its own primary + replica (tests/replica.py); skipped on SQLite and where PostgreSQL's
server binaries or the postgres user are not available.
"""

import datetime as dt
import json
import time

import pytest
from django.db import connection

from tests.reliability.servers import create_project, gunicorn, http, manage, post_json, server_env
from tests.replica import PgPair, as_postgres, binaries


@pytest.fixture(scope="module")
def pair():
    if connection.vendor != "postgresql":
        pytest.skip("the read replica is a PostgreSQL feature")
    if binaries() is None or as_postgres() is None:
        pytest.skip("needs PostgreSQL server binaries and the postgres user (run as root)")
    pg = PgPair()
    try:
        yield pg.start()
    finally:
        pg.stop()


def _active_today(base: str, slug: str, token: str) -> int:
    today = dt.datetime.now(dt.UTC).date().isoformat()
    status, _, body = http(
        "GET",
        f"{base}/api/v1/projects/{slug}/active?interval=day&start={today}&end={today}",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert status == 200, body
    return json.loads(body)["series"][0]["active_installs"]


def _queued(pair: PgPair) -> int:
    """Rollup rows on the primary that no fold has taken yet."""
    return pair.primary_sql("SELECT COUNT(*) FROM telemetry_rollupqueue")[0][0]


def _event(install: str) -> dict:
    now = dt.datetime.now(dt.UTC).isoformat()
    return {"install_id": install, "name": "app.start", "timestamp": now}


@pytest.mark.django_db
def test_reads_go_to_the_replica_writes_to_the_primary_and_a_dead_replica_is_skipped(
    pair, tmp_path
):
    env = server_env(
        tmp_path,
        DATABASE_URL=pair.primary_url,
        DATABASE_REPLICA_URL=pair.replica_url,
        DATABASE_REPLICA_CHECK_SECONDS="0",
        DATABASE_REPLICA_RETRY_SECONDS="0.5",
        DATABASE_REPLICA_MAX_LAG_SECONDS="600",
    )
    manage(env, "migrate", "--noinput", "--verbosity", "0")
    project = create_project(env, "replicated", "--install-rate", "100/h")
    slug, key, token = "replicated", project["ingest_key"], project["operator_token"]
    # migrate ran on the primary only; the replica got the schema by streaming.
    pair.wait_replayed()
    assert pair.replica_sql("SELECT COUNT(*) FROM telemetry_project") == [(1,)]

    with gunicorn(env, workers=1) as base:
        manage(env, "run_scheduled", "fold_rollups")  # a fold on record, as the job leaves one
        status, _, _ = post_json(f"{base}/api/v1/events", _event("inst_replica_1"), key)
        assert status == 202  # the replica is read-only: this write went to the primary
        pair.wait_replayed()
        # A replica read writes nothing on the primary, not even the rollup fold a primary read
        # does first: the event counts once the fold job (every 10 s) has run and replicated.
        assert _queued(pair) == 1
        assert _active_today(base, slug, token) == 0
        assert _queued(pair) == 1

    # The fold job late (its broker down, say): a replica read folds first, as a primary one.
    with gunicorn({**env, "TELEMETRY_READER_FOLD_AFTER_SECONDS": "0"}, workers=1) as base:
        _active_today(base, slug, token)
        assert _queued(pair) == 0
        pair.wait_replayed()
        assert _active_today(base, slug, token) == 1

        # Freeze the replica: what it serves no longer moves, while the primary does.
        pair.replica_sql("SELECT pg_wal_replay_pause()")
        status, _, _ = post_json(f"{base}/api/v1/events", _event("inst_replica_2"), key)
        assert status == 202
        assert pair.primary_sql("SELECT COUNT(*) FROM telemetry_event") == [(2,)]
        assert _active_today(base, slug, token) == 1  # read from the frozen replica

    # The same frozen replica, now too far behind for a 1-second limit: the primary answers,
    # folding first, so it counts the event just stored.
    time.sleep(1.5)
    with gunicorn({**env, "DATABASE_REPLICA_MAX_LAG_SECONDS": "1"}, workers=1) as base:
        assert _active_today(base, slug, token) == 2
        pair.replica_sql("SELECT pg_wal_replay_resume()")
        pair.wait_replayed()

        pair.stop_replica()
        t0 = time.monotonic()
        assert _active_today(base, slug, token) == 2  # down replica: served by the primary
        assert _active_today(base, slug, token) == 2
        assert time.monotonic() - t0 < 10
        status, _, _ = post_json(f"{base}/api/v1/events", _event("inst_replica_3"), key)
        assert status == 202
        assert _active_today(base, slug, token) == 3
