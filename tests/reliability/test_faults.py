"""Faults with real processes: the cache server killed mid-run, the database's connections cut by
a proxy or never reachable, the broker absent. Ingest answers 503 with Retry-After naming the
failed service (or passes through when failing open), writes nothing half-way, and recovers by
itself when the service returns.
"""

import json
import shutil
import sqlite3
import threading
import time
import uuid

import pytest
from django.conf import settings
from django.utils import timezone

from tests.factories import fold
from tests.reliability import fuzzing, servers

pytestmark = pytest.mark.slow
ON_POSTGRES = settings.DATABASES["default"]["ENGINE"].endswith("postgresql")


def event(**overrides) -> dict:
    e = {
        "install_id": f"inst_{uuid.uuid4().hex[:12]}",
        "name": "app.start",
        "timestamp": timezone.now().isoformat(),
        "event_id": f"evt_{uuid.uuid4().hex}",
    }
    e.update(overrides)
    return e


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A migrated SQLite data dir with one native project, copied by each test."""
    data = tmp_path_factory.mktemp("faults-template")
    env = servers.server_env(data)
    servers.manage(env, "migrate", "--noinput")
    project = servers.create_project(env, "faulty", "--install-rate", "1000/h")
    doors = {"native": project, **servers.create_door_projects(env)}
    return data, project, doors


@pytest.fixture
def data_dir(template, tmp_path):
    source, project, _doors = template
    target = tmp_path / "data"
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("cache", "gunicorn-*"))
    return target, project


def unavailable(body: bytes, service: str) -> bool:
    """The native 503 of a designed outage of `service`, not of a crash ("server unavailable")."""
    answer = json.loads(body)
    return answer["error"] == "service_unavailable" and answer["detail"] == (
        f"{service} unavailable, retry later"
    )


def count_events(data: object) -> int:
    with sqlite3.connect(data / "db.sqlite3") as db:
        return db.execute("SELECT count(*) FROM telemetry_event").fetchone()[0]


def until(predicate, seconds: float = 10.0):
    """Call predicate until it returns a truthy value or time runs out; return the last value."""
    deadline = time.monotonic() + seconds
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


@pytest.fixture
def redis_server():
    server = servers.RedisServer().start()
    yield server
    server.kill()


def test_ingest_fails_closed_while_the_cache_server_is_dead_and_recovers(data_dir, redis_server):
    data, project = data_dir
    env = servers.server_env(data, REDIS_URL=redis_server.url)
    with servers.gunicorn(env) as base:
        url = base + "/api/v1/events"
        assert servers.post_json(url, event(), project["ingest_key"])[0] == 202
        redis_server.kill()
        for payload in (event(), {"events": [event(), event()]}):
            status, headers, body = servers.post_json(url, payload, project["ingest_key"])
            assert status == 503
            assert int(headers["Retry-After"]) > 0
            assert unavailable(body, "cache"), body
        assert count_events(data) == 1  # nothing was stored while the limiter was down
        redis_server.start()  # same port, empty: counters start again
        ok = until(lambda: servers.post_json(url, event(), project["ingest_key"])[0] == 202)
        assert ok, "ingest did not recover after the cache came back"
        assert count_events(data) == 2


def test_every_front_door_answers_its_own_503_while_the_cache_is_dead(
    template, tmp_path, redis_server
):
    source, _project, doors = template
    data = tmp_path / "data"
    shutil.copytree(source, data, ignore=shutil.ignore_patterns("cache", "gunicorn-*"))
    env = servers.server_env(data, REDIS_URL=redis_server.url)

    def send(contract):
        path, body, headers = servers.valid_request(contract, doors[contract])
        return servers.http("POST", base + path, body, headers)

    with servers.gunicorn(env) as base:
        for contract in doors:
            assert send(contract)[0] == servers.SUCCESS[contract], contract
        stored = count_events(data)
        redis_server.kill()
        for contract in doors:
            status, headers, body = send(contract)
            assert status == 503, (contract, status, body)
            assert int(headers["Retry-After"]) > 0, contract
            assert b"Traceback" not in body
            if contract == "native":
                assert unavailable(body, "cache"), body
            else:
                message = fuzzing.error_message(contract, _Answer(status, headers, body))
                assert message, (contract, body)
                assert any(p.match(message) for p in fuzzing.documented_messages(contract))
        assert count_events(data) == stored
        redis_server.start()
        for contract in doors:
            ok = until(lambda c=contract: send(c)[0] == servers.SUCCESS[c])
            assert ok, f"{contract} did not recover"


class _Answer:
    """Just enough of a response for fuzzing.error_message."""

    def __init__(self, status, headers, body) -> None:
        self.status_code, self.content = status, body
        self._headers = {k.lower(): v for k, v in headers.items()}

    def get(self, name, default=None):
        return self._headers.get(name.lower(), default)


def test_ingest_passes_through_a_dead_cache_when_failing_open(data_dir, redis_server):
    data, project = data_dir
    env = servers.server_env(data, REDIS_URL=redis_server.url, RATELIMIT_FAIL_OPEN="1")
    with servers.gunicorn(env) as base:
        url = base + "/api/v1/events"
        redis_server.kill()
        status, _, body = servers.post_json(url, event(), project["ingest_key"])
        assert (status, body) == (202, b'{"accepted": 1, "duplicates": 0, "rejected": []}')
        assert count_events(data) == 1


def test_ingest_never_touches_the_broker(data_dir):
    data, project = data_dir
    dead = servers.free_port()
    env = servers.server_env(data, CELERY_BROKER_URL=f"amqp://guest:guest@127.0.0.1:{dead}//")
    with servers.gunicorn(env) as base:
        url = base + "/api/v1/events"
        started = time.monotonic()
        statuses = [servers.post_json(url, event(), project["ingest_key"])[0] for _ in range(20)]
        elapsed = time.monotonic() - started
        assert statuses == [202] * 20
        # A broker connection attempt would cost retries and seconds per request.
        assert elapsed < 10
        assert servers.http("GET", base + "/readyz")[0] == 200
    assert count_events(data) == 20


# --- the database drops connections (PostgreSQL) -------------------------------------------------


@pytest.fixture
def postgres_behind_proxy(tmp_path):
    """A dedicated, migrated PostgreSQL database reached through a DroppingProxy."""
    if not ON_POSTGRES:
        pytest.skip(
            "PostgreSQL-backend test: SQLite is a file, there is no connection to drop, and as "
            "root an unreadable file mode is ignored"
        )
    import psycopg

    db = settings.DATABASES["default"]
    host, port = db["HOST"] or "127.0.0.1", int(db["PORT"] or 5432)
    user = db["USER"] or "postgres"
    name = f"tm_rel_fault_{uuid.uuid4().hex[:8]}"
    admin = f"host={host} port={port} user={user} dbname=postgres"
    if db.get("PASSWORD"):
        admin += f" password={db['PASSWORD']}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    auth = user + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
    direct = f"postgres://{auth}@{host}:{port}/{name}"
    env = servers.server_env(tmp_path, DATABASE_URL=direct)
    proxy = servers.DroppingProxy((host, port))
    try:
        servers.manage(env, "migrate", "--noinput")
        project = servers.create_project(
            env, "faulty", "--install-rate", "100000/h", "--ip-rate", "100000/h"
        )
        proxy.start()
        env["DATABASE_URL"] = f"postgres://{auth}@127.0.0.1:{proxy.port}/{name}"

        def counts() -> tuple[int, ...]:
            with psycopg.connect(admin.replace("dbname=postgres", f"dbname={name}")) as conn:
                # Fold what ingest queued, as the beat job would, so the rollups count it all.
                from telemetry.ingest import rollups

                conn.execute(rollups._FOLD_POSTGRES_SQL, [rollups.FOLD_BATCH])
                conn.commit()
                return tuple(
                    conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                    for table in (
                        "telemetry_event",
                        "telemetry_install",
                        "telemetry_dailyactivity",
                    )
                )

        yield env, project, proxy, counts
    finally:
        proxy.stop()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_dropped_database_connections_give_503_write_nothing_and_recover(postgres_behind_proxy):
    env, project, proxy, counts = postgres_behind_proxy
    key = project["ingest_key"]
    with servers.gunicorn(env) as base:
        url = base + "/api/v1/events"
        assert servers.post_json(url, event(), key)[0] == 202
        before = counts()
        assert before == (1, 1, 1)
        proxy.stop()  # every open connection is cut, and new ones are refused
        for payload in (event(), {"events": [event() for _ in range(50)]}):
            status, headers, body = servers.post_json(url, payload, key)
            assert status == 503, body
            assert int(headers["Retry-After"]) > 0
            assert unavailable(body, "database"), body
        assert counts() == before
        proxy.start()
        ok = until(lambda: servers.post_json(url, event(), key)[0] == 202)
        assert ok, "ingest did not recover after the database came back"
        assert counts() == (2, 2, 2)


def test_a_batch_cut_off_mid_write_is_stored_whole_or_not_at_all(postgres_behind_proxy):
    env, project, proxy, counts = postgres_behind_proxy
    key = project["ingest_key"]
    with servers.gunicorn(env) as base:
        url = base + "/api/v1/events"
        outcomes = []
        for delay in (0.0, 0.02, 0.05, 0.1, 0.2):
            assert until(lambda: servers.post_json(url, event(), key)[0] == 202)
            before = counts()[0]
            batch = {"events": [event() for _ in range(1000)]}
            result = {}
            sender = threading.Thread(
                target=lambda b=batch, out=result: out.update(r=servers.post_json(url, b, key))
            )
            sender.start()
            time.sleep(delay)
            proxy.stop()
            sender.join(30)
            proxy.start()
            status, _headers, body = result["r"]
            stored = counts()[0] - before
            outcomes.append(status)
            assert (status, stored) in {(202, 1000), (503, 0)}, (delay, status, stored)
            assert status == 202 or unavailable(body, "database"), body
        assert 503 in outcomes  # the outage was really met (202 alone would prove nothing)


def test_a_write_cut_off_gives_back_its_claim_and_quota(postgres_behind_proxy):
    """PostgreSQL gone mid-request: 503, and the event's claim and rate-limit hits are returned,
    so the client's retry is stored (not answered "duplicate") and costs one hit, not two."""
    env, _project, proxy, counts = postgres_behind_proxy
    tight = servers.create_project(env, "tight", "--install-rate", "2/h")
    key = tight["ingest_key"]
    first = event(install_id="inst_tight_0001")
    with servers.gunicorn(env) as base:
        url = base + "/api/v1/events"
        before = counts()
        proxy.stop()
        status, headers, body = servers.post_json(url, first, key)
        assert status == 503, body
        assert b'"detail": "database unavailable, retry later"' in body
        assert int(headers["Retry-After"]) > 0
        proxy.start()
        answers = []
        until(lambda: answers.append(servers.post_json(url, first, key)) or answers[-1][0] != 503)
        retry = answers[-1]
        assert (retry[0], retry[2]) == (202, b'{"accepted": 1, "duplicates": 0, "rejected": []}')
        second = servers.post_json(url, event(install_id="inst_tight_0001"), key)
        assert second[0] == 202  # the failed attempt's hit was given back: 2 of 2 used now
        third = servers.post_json(url, event(install_id="inst_tight_0001"), key)
        assert third[0] == 429
        # Two events, and exactly their rollups: nothing orphaned by the failed attempt.
        assert counts() == (before[0] + 2, before[1] + 1, before[2] + 1)


# --- the cache server dies between the claim and the statement ----------------------------------


@pytest.mark.django_db
def test_the_cache_dying_after_the_claim_still_stores_the_event_exactly_once(
    redis_server, settings, monkeypatch
):
    """The claim was granted and the quota charged before the cache died: the write goes on,
    and the client's retry (the cache back, empty) is recognised by the database's key."""
    from telemetry.ingest import pipeline
    from telemetry.ingest.schema import IncomingEvent
    from telemetry.models import Event, Install
    from tests.factories import make_project

    settings.CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": redis_server.url,
            "KEY_PREFIX": "tm-fault",
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 1, "SOCKET_TIMEOUT": 1},
        }
    }
    project = make_project().project
    sent = IncomingEvent(
        install_id="inst_cachedies",
        name="app.start",
        timestamp=timezone.now(),
        event_id="evt_cache_dies_0001",
    )
    store = pipeline._store

    def cache_dies_first(*args, **kwargs):
        redis_server.kill()
        return store(*args, **kwargs)

    monkeypatch.setattr(pipeline, "_store", cache_dies_first)
    result = pipeline.ingest(project=project, events=[sent], client_ip="192.0.2.7")
    assert result.accepted == 1
    monkeypatch.setattr(pipeline, "_store", store)
    # While the cache is dead, the retry is refused whole: 503, nothing more stored.
    with pytest.raises(pipeline.ServiceUnavailable) as dead:
        pipeline.ingest(project=project, events=[sent], client_ip="192.0.2.7")
    assert dead.value.service == "cache"
    redis_server.start()  # back, and empty: the claim is gone, the database's key is not
    again = pipeline.ingest(project=project, events=[sent], client_ip="192.0.2.7")
    assert (again.accepted, again.duplicates) == (0, 1)
    assert Event.objects.filter(project=project).count() == 1
    fold()
    assert Install.objects.get(project=project).event_count == 1


# --- a database that never answers ----------------------------------------------------------


@pytest.fixture
def server_without_database(tmp_path):
    """A gunicorn whose DATABASE_URL points at a port where nothing listens."""
    dead = servers.free_port()
    env = servers.server_env(tmp_path, DATABASE_URL=f"postgres://postgres@127.0.0.1:{dead}/x")
    with servers.gunicorn(env) as base:
        yield base


def test_ingest_answers_503_json_when_the_database_is_down(server_without_database):
    status, headers, body = servers.post_json(
        server_without_database + "/api/v1/events", event(), "tk_whatever"
    )
    assert status == 503
    assert unavailable(body, "database"), body
    assert int(headers["Retry-After"]) > 0


def test_readyz_names_the_database(server_without_database):
    status, _, body = servers.http("GET", server_without_database + "/readyz")
    assert status == 503
    assert json.loads(body)["failed"] == ["database"]


def test_liveness_does_not_need_the_database(server_without_database):
    assert servers.http("GET", server_without_database + "/healthz")[0] == 200
