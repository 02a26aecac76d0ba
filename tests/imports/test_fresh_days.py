"""Days with no event partition yet (PostgreSQL): an import holds their rows and writes each day
as a new table attached whole. What a user sees must be what the row-by-row store gives."""

import datetime as dt

import pytest
from django.db import IntegrityError, OperationalError, connection
from django.test import Client
from django.utils import timezone

from telemetry.ingest import pipeline, rollups
from telemetry.models import Event, Project
from telemetry.services import partitions
from telemetry.services.imports import ImportFailed
from tests.factories import make_project
from tests.imports.checks import assert_no_ip_hash, assert_rollups_exact, run
from tests.imports.stores import VOICEMODE_SCHEMA, voicemode_row, write_d1

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]
FMT = "voicemode-d1"
DAY = dt.timedelta(days=1)


@pytest.fixture(autouse=True)
def _postgres_only():
    if connection.vendor != "postgresql":
        pytest.skip("SQLite keeps no partitions")


@pytest.fixture
def now():
    return timezone.now()


def installs(n: int) -> list[str]:
    return [f"{i:08x}-0000-4000-8000-000000000000" for i in range(n)]


def rows_on(day: dt.datetime, n: int) -> list[dict]:
    return [voicemode_row(day + dt.timedelta(minutes=7 * i), installs(6)[i % 6]) for i in range(n)]


def daily_rows(first: dt.datetime, days: int, per_day: int = 5) -> tuple[list[dt.date], list]:
    """`per_day` rows on each of `days` days from `first` on, and those days."""
    rows = [row for d in range(days) for row in rows_on(first + d * DAY, per_day)]
    return [(first + d * DAY).date() for d in range(days)], rows


def indexes(name: str) -> list[str]:
    """The parent index each index of partition `name` is attached to."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT p.inhparent::regclass::text FROM pg_index i"
            " JOIN pg_inherits p ON p.inhrelid = i.indexrelid"
            " WHERE i.indrelid = %s::regclass ORDER BY 1",
            [name],
        )
        return [row[0] for row in cursor.fetchall()]


def constraints(name: str) -> list[tuple[str, str]]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT contype, pg_get_constraintdef(oid) FROM pg_constraint"
            " WHERE conrelid = %s::regclass ORDER BY 1, 2",
            [name],
        )
        return cursor.fetchall()


def skipped_statistics(table: str) -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0"
            " AND attstattarget = 0 ORDER BY attname",
            [table],
        )
        return [name for (name,) in cursor.fetchall()]


def test_a_new_day_becomes_a_partition_with_every_index_and_the_project_key(tmp_path, now):
    p = make_project(contract="voicemode", retention_days=90).project
    day = (now - 20 * DAY).replace(hour=1, minute=0)
    lived = (now - 30 * DAY).replace(hour=1, minute=0)  # a day made by the row-by-row store
    partitions.ensure({lived.date()})
    rows = rows_on(day, 30) + rows_on(lived, 10)
    path = write_d1(tmp_path / "vm.sqlite", VOICEMODE_SCHEMA, {"events": rows})
    report = run(p, FMT, path, now, batch_size=7)
    assert (report.stored, report.duplicates) == (40, 0)
    new, old = partitions.partition_name(day.date()), partitions.partition_name(lived.date())
    assert partitions.existing()[day.date()] == new
    assert indexes(new) == indexes(old) and len(indexes(new)) == 7
    activity = partitions.partition_name(day.date(), partitions.ACTIVITY)
    assert indexes(activity) == indexes(
        partitions.partition_name(lived.date(), partitions.ACTIVITY)
    )
    assert len(indexes(activity)) == 4
    # The bounds CHECK that spared ATTACH its scan is gone; events have no foreign key (0014).
    assert constraints(new) == constraints(old)
    assert [kind for kind, _ in constraints(new)] == ["p"]
    # ANALYZE skips the same columns on both (properties), as on every partition.
    assert skipped_statistics(new) == skipped_statistics(old) == ["properties"]
    assert Event.objects.filter(project=p, timestamp__date=day.date()).count() == 30
    assert rollups.pending_rollups() == 0
    assert_rollups_exact(p)
    assert_no_ip_hash(p, rows[0]["client_ip_hash"])
    assert held_tables() == []  # the held tables became the days' partitions


def test_a_key_repeated_in_later_batches_of_a_new_day_is_stored_once(tmp_path, now):
    p = make_project(contract="voicemode", retention_days=90).project
    day = (now - 10 * DAY).replace(hour=2, minute=0)
    rows = rows_on(day, 12)
    path = write_d1(tmp_path / "vm.sqlite", VOICEMODE_SCHEMA, {"events": rows})
    first = run(p, FMT, path, now, batch_size=5)
    again = write_d1(tmp_path / "again.sqlite", VOICEMODE_SCHEMA, {"events": rows})
    second = run(p, FMT, again, now, batch_size=5)
    assert (first.stored, first.duplicates) == (12, 0)
    assert (second.stored, second.duplicates) == (0, 12)
    assert Event.objects.filter(project=p).count() == 12
    assert_rollups_exact(p)


def test_copies_in_two_batches_of_a_held_day_count_as_duplicates(now):
    p = make_project(contract="voicemode", retention_days=90).project
    day = (now - 12 * DAY).replace(hour=3, minute=0)
    events = [voicemode_event(row, now) for row in rows_on(day, 4)]
    fresh = pipeline.FreshDays()
    for batch in (events[:3], events[1:]):  # rows 2 and 3 twice
        staged = pipeline.stage_imported_days(project=p, events=batch, now=now)
        assert pipeline.store_staged(staged, days={day.date()}, fresh=fresh) == []
        assert fresh.settle(committed=True) == 3
    assert fresh.attach() == (4, 2, {day.date()})
    assert Event.objects.filter(project=p).count() == 4
    # The day's rollups moved with it, without the queue.
    assert rollups.pending_rollups() == 0
    assert_rollups_exact(p)


def test_a_live_event_on_a_held_day_is_a_duplicate_of_its_imported_copy(
    tmp_path, now, client: Client
):
    p = make_project(contract="voicemode", retention_days=90)
    day = (now - 5 * DAY).replace(hour=4, minute=0)
    rows = rows_on(day, 6)
    events = [voicemode_event(row, now) for row in rows]
    fresh = pipeline.FreshDays()
    staged = pipeline.stage_imported_days(project=p.project, events=events, now=now)
    pipeline.store_staged(staged, days={day.date()}, fresh=fresh)
    assert fresh.settle(committed=True) == 6
    # While the import holds the day, its client resends row 0: the live store makes the day.
    payload = {**rows[0], "environment": {"os": "Linux", "version": "7.0.1"}, "usage": {}}
    r = client.post(f"/p/{p.project.slug}/telemetry", payload, content_type="application/json")
    assert r.status_code == 200
    assert day.date() in partitions.existing()
    # The held day goes through the ingest statement: its dedupe recognises the live copy.
    assert fresh.attach() == (5, 1, {day.date()})
    assert Event.objects.filter(project=p.project).count() == 6
    rollups.fold_rollups()
    assert_rollups_exact(p.project)


def test_attaching_a_day_checks_the_project_of_every_row(now):
    p = make_project(contract="voicemode", retention_days=90).project
    day = (now - 7 * DAY).replace(hour=5, minute=0)
    events = [voicemode_event(row, now) for row in rows_on(day, 3)]
    fresh = pipeline.FreshDays()
    staged = pipeline.stage_imported_days(project=p, events=events, now=now)
    pipeline.store_staged(staged, days={day.date()}, fresh=fresh)
    fresh.settle(committed=True)
    Project.objects.filter(pk=p.pk).delete()  # deleted while its import held the day
    with pytest.raises(IntegrityError, match="foreign key"):
        pipeline._attach_days([day.date()], owner=fresh.owner)
    assert day.date() not in partitions.existing()


def voicemode_event(row: dict, now: dt.datetime):
    from telemetry.imports import voicemode_d1

    item = voicemode_d1.item(
        "row",
        row["event_id"],
        row["telemetry_id"],
        row["timestamp"],
        row["created_at"],
        row["environment"],
        row["usage"],
        now=now,
    )
    assert item.event is not None, item.error
    return item.event


def test_held_days_written_in_several_groups_keep_rollups_exact(tmp_path, now, monkeypatch):
    monkeypatch.setattr(pipeline, "ATTACH_ROWS", 8)  # groups: days 1-2 together, then day 3
    p = make_project(contract="voicemode", retention_days=90).project
    first = (now - 40 * DAY).replace(hour=6, minute=0)
    _, rows = daily_rows(first, 3)
    path = write_d1(tmp_path / "vm.sqlite", VOICEMODE_SCHEMA, {"events": rows})
    report = run(p, FMT, path, now, batch_size=4)
    assert (report.stored, report.duplicates) == (15, 0)
    assert {first.date() + d * DAY for d in range(3)} <= set(partitions.existing())
    assert rollups.pending_rollups() == 0
    assert_rollups_exact(p)


def test_a_row_for_a_day_written_early_is_stored_through_its_partition(now, monkeypatch):
    monkeypatch.setattr(pipeline, "ATTACH_ROWS", 4)
    p = make_project(contract="voicemode", retention_days=90).project
    first = (now - 50 * DAY).replace(hour=7, minute=0)
    events = [voicemode_event(row, now) for row in rows_on(first, 6)]
    fresh = pipeline.FreshDays()

    def store(batch):
        staged = pipeline.stage_imported_days(project=p, events=batch, now=now)
        days = {e.timestamp.date() for e in batch}
        stored = pipeline.store_staged(staged, days=days, fresh=fresh)
        fresh.settle(committed=True)
        return stored

    assert store(events[:4]) == []  # held
    # A batch of a later day: the first day is complete in a source read in time order.
    assert fresh.attach_before((first + DAY).date()) == (4, 0, {first.date()})
    # A source out of order sends more of that day: its partition exists, so it is not held.
    assert sorted(store(events[3:])) == sorted(e.event_id for e in events[4:])
    assert Event.objects.filter(project=p).count() == 6
    rollups.fold_rollups()
    assert_rollups_exact(p)


def test_a_held_group_the_database_refuses_is_named_and_the_batches_before_it_stay(
    tmp_path, now, monkeypatch
):
    monkeypatch.setattr(pipeline, "ATTACH_ROWS", 8)  # days 1-2 are written once day 3 comes
    attach = pipeline.attach_fresh

    def refuse(days, **_):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(pipeline, "attach_fresh", refuse)
    p = make_project(contract="voicemode", retention_days=90).project
    first = (now - 40 * DAY).replace(hour=6, minute=0)
    _, rows = daily_rows(first, 3)
    path = write_d1(tmp_path / "vm.sqlite", VOICEMODE_SCHEMA, {"events": rows})
    with pytest.raises(ImportFailed) as exc:
        run(p, FMT, path, now, batch_size=4)
    # Days 1-2 fail right after the last batch (rows 13-15, day 3) was committed to its hold:
    # not "rows 13-15: the database refused the batch".
    assert exc.value.error.where == "rows held for 3 day(s) without a partition"
    assert exc.value.error.message.startswith("the database refused them (OperationalError)")
    report = exc.value.report
    assert (report.committed_rows, report.stored) == (15, 0)
    assert not Event.objects.filter(project=p).exists()
    assert held_tables() == []  # the held rows went with the failure
    # The same import again stores every row.
    monkeypatch.setattr(pipeline, "attach_fresh", attach)
    again = run(p, FMT, path, now, batch_size=4)
    assert (again.stored, again.duplicates) == (15, 0)
    assert_rollups_exact(p)


def held_tables() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT relname FROM pg_class WHERE relname LIKE 'telemetry_import_hold%%'"
            " ORDER BY relname"
        )
        return [name for (name,) in cursor.fetchall()]


def other_session():
    """A second connection to the test database, as another import's session."""
    import psycopg

    settings = connection.settings_dict
    return psycopg.connect(
        dbname=settings["NAME"],
        user=settings["USER"],
        host=settings["HOST"],
        port=settings["PORT"] or 5432,
        autocommit=True,
    )


def drop_partitions(days: list[dt.date]) -> None:
    """Drop the days' partitions around a transactional test: made by an earlier one (a flush
    empties tables but keeps them), they would make the days not held; made by this one, they
    would do the same to a later test."""
    names = [partitions.partition_name(d, parent) for d in days for parent in partitions.PARENTS]
    with other_session() as cleanup:
        cleanup.execute(f"DROP TABLE IF EXISTS {', '.join(names)}")


# Committed for real: the other session's tables must be seen, and dropped, across sessions.
@pytest.mark.django_db(transaction=True)
def test_two_sessions_holding_one_day_keep_apart_and_a_gone_sessions_tables_are_dropped(
    tmp_path, now
):
    p = make_project(contract="voicemode", retention_days=90).project
    day = (now - 15 * DAY).replace(hour=8, minute=0)
    other = other_session()
    theirs = f"telemetry_import_hold_{other.info.backend_pid}_{day:%Y%m%d}"
    gone = f"telemetry_import_hold_999999999_{day:%Y%m%d}"  # no backend has this pid
    drop_partitions([day.date()])
    other.execute(f"CREATE TABLE {theirs} (LIKE telemetry_event)")
    other.execute(f"CREATE TABLE {gone} (LIKE telemetry_event)")
    try:
        path = write_d1(tmp_path / "vm.sqlite", VOICEMODE_SCHEMA, {"events": rows_on(day, 9)})
        report = run(p, FMT, path, now, batch_size=4)
        assert (report.stored, report.duplicates) == (9, 0)
        assert Event.objects.filter(project=p).count() == 9
        assert_rollups_exact(p)
        # This import held the day in a table of its own, and dropped the gone session's.
        assert held_tables() == [theirs]
        other.close()
        assert partitions.drop_orphan_holds() == [theirs]
        assert held_tables() == []
    finally:
        other.close()
        with other_session() as cleanup:
            cleanup.execute(f"DROP TABLE IF EXISTS {theirs}, {gone}")
        drop_partitions([day.date()])


def writers(monkeypatch, *, delay: float = 0.0) -> list[str]:
    """Record which thread writes each group of held days (after `delay` seconds)."""
    import threading
    import time

    names: list[str] = []
    attach = pipeline.attach_fresh

    def recorded(days, **kwargs):
        names.append(threading.current_thread().name)
        time.sleep(delay)
        return attach(days, **kwargs)

    monkeypatch.setattr(pipeline, "attach_fresh", recorded)
    return names


# Outside a transaction, groups of held days are written by a thread on its own connection.
@pytest.mark.django_db(transaction=True)
def test_groups_written_by_the_writer_thread_store_every_row_once(tmp_path, now, monkeypatch):
    monkeypatch.setattr(pipeline, "ATTACH_ROWS", 8)
    names = writers(monkeypatch)
    p = make_project(contract="voicemode", retention_days=90).project
    first = (now - 60 * DAY).replace(hour=6, minute=0)
    days, rows = daily_rows(first, 5)
    path = write_d1(tmp_path / "vm.sqlite", VOICEMODE_SCHEMA, {"events": rows})
    drop_partitions(days)
    try:
        report = run(p, FMT, path, now, batch_size=4)
        assert (report.stored, report.duplicates) == (25, 0)
        assert any(name.startswith("import-held") for name in names)
        assert Event.objects.filter(project=p).count() == 25
        assert set(days) <= set(partitions.existing())
        assert rollups.pending_rollups() == 0
        assert_rollups_exact(p)
        assert held_tables() == []
    finally:
        drop_partitions(days)


@pytest.mark.django_db(transaction=True)
def test_a_batch_with_a_row_for_a_day_being_written_waits_and_stores_it_through_its_partition(
    now, monkeypatch
):
    monkeypatch.setattr(pipeline, "ATTACH_ROWS", 4)
    names = writers(monkeypatch, delay=0.5)  # still writing when the next batch comes
    p = make_project(contract="voicemode", retention_days=90).project
    first = (now - 62 * DAY).replace(hour=7, minute=0)
    days = [first.date(), (first + DAY).date()]
    drop_partitions(days)
    events = [voicemode_event(row, now) for row in rows_on(first, 6)]
    fresh = pipeline.FreshDays(background=True)
    try:
        staged = pipeline.stage_imported_days(project=p, events=events[:4], now=now)
        assert pipeline.store_staged(staged, days={first.date()}, fresh=fresh) == []
        assert fresh.settle(committed=True) == 4
        assert fresh.attach_before(days[1]) == (0, 0, set())  # started, not finished
        # Rows 4-6 (row 4 again): their day is being written, so the batch waits for it and
        # then stores them through the day's new partition.
        assert fresh.pick({first.date()}) == set()
        assert [name.split("_")[0] for name in names] == ["import-held"]
        staged = pipeline.stage_imported_days(project=p, events=events[3:], now=now)
        stored = pipeline.store_staged(staged, days={first.date()}, fresh=fresh)
        assert sorted(stored) == sorted(e.event_id for e in events[4:])
        assert fresh.attach() == (4, 0, {first.date()})
        fresh.close()
        assert Event.objects.filter(project=p).count() == 6
        rollups.fold_rollups()
        assert_rollups_exact(p)
    finally:
        fresh.close()
        drop_partitions(days)


@pytest.mark.django_db(transaction=True)
def test_a_group_the_writer_thread_fails_is_named_and_the_import_again_stores_it(
    tmp_path, now, monkeypatch
):
    monkeypatch.setattr(pipeline, "ATTACH_ROWS", 8)
    attach = pipeline.attach_fresh

    def refuse_in_thread(days, **kwargs):
        import threading

        if threading.current_thread().name.startswith("import-held"):
            raise OperationalError("server closed the connection unexpectedly")
        return attach(days, **kwargs)

    monkeypatch.setattr(pipeline, "attach_fresh", refuse_in_thread)
    p = make_project(contract="voicemode", retention_days=90).project
    first = (now - 64 * DAY).replace(hour=6, minute=0)
    days, rows = daily_rows(first, 4)
    path = write_d1(tmp_path / "vm.sqlite", VOICEMODE_SCHEMA, {"events": rows})
    drop_partitions(days)
    try:
        with pytest.raises(ImportFailed) as exc:
            run(p, FMT, path, now, batch_size=4)
        assert exc.value.error.where.startswith("rows held for ")
        assert exc.value.error.message.startswith("the database refused them (OperationalError)")
        # What the import stores after the failure (every batch read was committed) stays.
        stored = exc.value.report.stored
        assert Event.objects.filter(project=p).count() == stored
        assert held_tables() == []
        monkeypatch.setattr(pipeline, "attach_fresh", attach)
        again = run(p, FMT, path, now, batch_size=4)
        assert (again.stored, again.duplicates) == (20 - stored, stored)
        assert Event.objects.filter(project=p).count() == 20
        assert rollups.pending_rollups() == 0
        assert_rollups_exact(p)
    finally:
        drop_partitions(days)
