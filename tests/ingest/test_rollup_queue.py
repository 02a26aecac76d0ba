"""The rollup queue on PostgreSQL: ingest stores the event and queues its rollup row in one
statement; fold_rollups folds queued rows into the rollups exactly once, late commits included."""

import datetime as dt
import json

import psycopg
import pytest
from django.db import connection
from django.db.models import Sum
from django.utils import timezone

from telemetry.ingest import pipeline
from telemetry.ingest.rollups import fold_rollups, pending_rollups
from telemetry.ingest.schema import IncomingEvent
from telemetry.models import DailyActivity, DailyCount, Event, Install, PeriodActivity
from telemetry.services.schedule import FOLD_EVERY_SECONDS, ensure_default_schedule
from tests.factories import forget_claims, make_project, native_event, shared_database_url

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]


@pytest.fixture(autouse=True)
def _postgres_only():
    if connection.vendor != "postgresql":
        pytest.skip("SQLite writes rollups with the events; only PostgreSQL queues them")


def event(install_id: str, when: dt.datetime, event_id: str, name: str = "app.start"):
    return IncomingEvent(
        install_id=install_id,
        name=name,
        timestamp=when,
        event_id=event_id,
        app_version="2.0",
        os="linux",
    )


def brute_force(project) -> dict:
    """What the rollups must say, counted from the raw events."""
    events = Event.objects.filter(project=project)
    return {
        "installs": events.values("install_id").distinct().count(),
        "activity": events.values("install_id", "timestamp__date").distinct().count(),
        "events": events.count(),
    }


def rollups(project) -> dict:
    return {
        "installs": Install.objects.filter(project=project).count(),
        "activity": DailyActivity.objects.filter(project=project).count(),
        "events": DailyCount.objects.filter(project=project).aggregate(n=Sum("events"))["n"] or 0,
    }


def test_a_stored_event_waits_in_the_queue_until_the_fold_counts_it():
    p = make_project().project
    now = timezone.now()
    result = pipeline.ingest(
        project=p, events=[event("inst_queue01", now, "evt_queue01")], client_ip="192.0.2.1"
    )
    assert result.accepted == 1
    assert Event.objects.filter(project=p).count() == 1
    assert pending_rollups() == 1
    assert not Install.objects.filter(project=p).exists()

    assert fold_rollups() == 1
    assert pending_rollups() == 0
    install = Install.objects.get(project=p, install_id="inst_queue01")
    assert (install.event_count, install.last_version, install.os) == (1, "2.0", "linux")
    assert DailyActivity.objects.filter(project=p, day=now.date()).count() == 1
    assert PeriodActivity.objects.filter(project=p, install_id="inst_queue01").count() == 2
    assert rollups(p) == brute_force(p) == {"installs": 1, "activity": 1, "events": 1}
    assert fold_rollups() == 0  # nothing is folded twice


def test_a_copy_stored_before_is_queued_nowhere():
    p = make_project().project
    now = timezone.now()
    one = [event("inst_queue02", now, "evt_queue02")]
    pipeline.ingest(project=p, events=one, client_ip="192.0.2.1")
    forget_claims()  # past the claim's TTL: the database key finds the copy
    again = pipeline.ingest(project=p, events=one, client_ip="192.0.2.1")
    assert again.duplicates == 1
    assert pending_rollups() == 1
    fold_rollups()
    assert rollups(p) == brute_force(p) == {"installs": 1, "activity": 1, "events": 1}


@pytest.mark.django_db(transaction=True)
def test_a_statement_that_commits_after_a_fold_is_folded_by_the_next_one_once():
    p = make_project().project
    now = timezone.now()
    pipeline.ingest(
        project=p, events=[event("inst_early01", now, "evt_early01")], client_ip="192.0.2.1"
    )
    # Another web process's statement, still open when the fold runs.
    # The store statement with its parameters as ingest sends them.
    params = pipeline._statement_params(p, [event("inst_late001", now, "evt_late0001")], "", now)
    with psycopg.connect(shared_database_url()) as late:
        late.execute(pipeline._STORE_POSTGRES_SQL, params)
        assert fold_rollups() == 1  # the committed one only
        assert rollups(p)["installs"] == 1
        late.commit()
    assert fold_rollups() == 1
    assert fold_rollups() == 0
    assert rollups(p) == brute_force(p) == {"installs": 2, "activity": 2, "events": 2}


def test_a_batch_folds_into_the_same_rollups_as_single_events():
    p = make_project().project
    base = timezone.now().replace(microsecond=0) - dt.timedelta(days=2)
    events = [
        event(f"inst_b{i % 7:07d}", base + dt.timedelta(hours=i), f"evt_{name}_{i:04d}", name)
        for i in range(60)
        for name in ("app.start", "cmd.run")
    ]
    pipeline.ingest(project=p, events=events, client_ip="192.0.2.1")
    assert pending_rollups() == 120
    fold_rollups()
    assert rollups(p) == brute_force(p)
    install = Install.objects.get(project=p, install_id="inst_b0000000")
    assert install.first_seen == base
    assert install.event_count == 18  # 9 of the 60 hours, 2 names each


def test_a_reader_sees_events_stored_a_moment_ago(client):
    made = make_project()
    r = client.post(
        "/api/v1/events",
        data=json.dumps(native_event()),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {made.ingest_key}",
    )
    assert r.status_code == 202
    assert pending_rollups() == 1
    from telemetry.analytics import active, db

    db.run(lambda: None)  # every analytics read folds first
    assert pending_rollups() == 0
    assert active.has_events(project=made.project)


def test_the_rows_of_a_project_deleted_meanwhile_are_dropped_by_the_fold():
    gone, kept = make_project().project, make_project().project
    now = timezone.now()
    for p, n in ((gone, "1"), (kept, "2")):
        pipeline.ingest(
            project=p,
            events=[event(f"inst_del000{n}", now, f"evt_del000{n}")],
            client_ip="192.0.2.1",
        )
    gone.delete()
    assert fold_rollups() == 2
    assert pending_rollups() == 0
    assert rollups(kept) == brute_force(kept) == {"installs": 1, "activity": 1, "events": 1}


def test_an_event_stored_while_its_project_was_deleted_is_deleted_by_the_fold():
    # A worker that still holds the project from its cache stores after the deletion's cascade
    # (events have no foreign key, migration 0014): the fold finds its queue row unowned.
    gone, kept = make_project().project, make_project().project
    now = timezone.now()
    gone_id = gone.pk
    gone.delete()
    gone.pk = gone_id
    for p, n in ((gone, "1"), (kept, "2")):
        result = pipeline.ingest(
            project=p,
            events=[event(f"inst_orph000{n}", now, f"evt_orph000{n}")],
            client_ip="192.0.2.1",
        )
        assert result.accepted == 1
    assert Event.objects.filter(project_id=gone_id).count() == 1
    assert fold_rollups() == 2
    assert not Event.objects.filter(project_id=gone_id).exists()
    assert not Install.objects.filter(project_id=gone_id).exists()
    assert rollups(kept) == brute_force(kept) == {"installs": 1, "activity": 1, "events": 1}


def test_beat_folds_every_few_seconds():
    from django_celery_beat.models import PeriodicTask

    ensure_default_schedule()
    task = PeriodicTask.objects.get(task="telemetry.tasks.fold_rollups")
    assert task.interval.every == FOLD_EVERY_SECONDS <= 30
    assert task.crontab is None


def test_a_fold_that_empties_the_queue_is_on_record_for_readers_on_a_replica(settings):
    from django.core.cache import cache

    from telemetry.analytics import db
    from telemetry.ingest.rollups import LAST_FOLD_KEY

    cache.delete(LAST_FOLD_KEY)
    assert db.fold_overdue()  # no fold on record: a replica reader folds itself
    p = make_project().project
    pipeline.ingest(
        project=p, events=[event("inst_rec_1", timezone.now(), "evt_rec_1")], client_ip="192.0.2.1"
    )
    fold_rollups()
    assert pending_rollups() == 0
    assert not db.fold_overdue()  # the job keeps up: replica readers leave the primary alone
    settings.TELEMETRY_READER_FOLD_AFTER_SECONDS = 0
    assert db.fold_overdue()  # the job is late
