"""telemetry.services.rolling: the closed-period rollups behind the overview's DAU/WAU/MAU, version
adoption, OS split and activity series, held to a brute-force count over raw events before and
after late events, a purge and an install's deletion."""

import datetime as dt
import re
from collections import defaultdict

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from telemetry.analytics import active, db
from telemetry.analytics.periods import period_end, period_start, periods
from telemetry.ingest.pipeline import ingest
from telemetry.ingest.schema import IncomingEvent
from telemetry.models import (
    ClosedPeriod,
    DailyActivity,
    Event,
    Install,
    OsActivity,
    RollingActivity,
)
from telemetry.services import purge, rolling
from telemetry.services.deletion import delete_install
from telemetry.services.schedule import run_job
from tests.analytics.data import Brute, seeded_project
from tests.factories import fold, ingest_at

pytestmark = pytest.mark.django_db


def assert_rolling_is_brute_force(project, days):
    brute = Brute(project)
    for day in days:
        r = active.rolling(project=project, day=day)
        assert (r.dau, r.wau, r.mau) == (
            brute.active(day, day),
            brute.active(day - dt.timedelta(days=6), day),
            brute.active(day - dt.timedelta(days=29), day),
        ), day


def versions_by_day(project, start, end):
    """{day: {version: installs}} straight from the daily activity rows."""
    out: dict = {}
    for row in DailyActivity.objects.filter(project=project, day__gte=start, day__lte=end):
        day = out.setdefault(row.day.isoformat(), {})
        day[row.app_version] = day.get(row.app_version, 0) + 1
    return out


def test_it_counts_every_closed_day_from_the_oldest_activity_to_yesterday(client):
    p = seeded_project(client, seed=31, days=40)
    now = timezone.now()
    done = rolling.refresh_rolling(project=p.project, now=now)
    days = sorted(RollingActivity.objects.filter(project=p.project).values_list("day", flat=True))
    oldest = active.raw_boundary(project=p.project)
    yesterday = now.date() - dt.timedelta(days=1)
    assert days == [oldest + dt.timedelta(days=i) for i in range((yesterday - oldest).days + 1)]
    assert done.days == len(days)
    assert_rolling_is_brute_force(p.project, [now.date() - dt.timedelta(days=k) for k in range(45)])


def test_a_second_refresh_recounts_nothing(client):
    p = seeded_project(client, seed=32, days=20)
    rolling.refresh_rolling(project=p.project, now=timezone.now())
    assert rolling.refresh_rolling(project=p.project, now=timezone.now()).days == 0


def test_readers_serve_the_stored_row_while_its_fingerprint_holds(client):
    p = seeded_project(client, seed=33, days=20)
    rolling.refresh_rolling(project=p.project, now=timezone.now())
    day = timezone.now().date() - dt.timedelta(days=5)
    RollingActivity.objects.filter(project=p.project, day=day).update(dau=9999)
    assert active.rolling(project=p.project, day=day).dau == 9999
    # The daily series reads the day's ClosedPeriod row first; without one, this row's DAU.
    ClosedPeriod.objects.filter(project=p.project, period="d", start=day).delete()
    (series,) = active.active_series(project=p.project, interval="day", start=day, end=day)
    assert series.active_installs == 9999
    RollingActivity.objects.filter(project=p.project, day=day).update(fingerprint="0:-")
    assert active.rolling(project=p.project, day=day).dau == Brute(p.project).active(day, day)
    (series,) = active.active_series(project=p.project, interval="day", start=day, end=day)
    assert series.active_installs == Brute(p.project).active(day, day)


def assert_daily_series_is_brute_force(project, start, end):
    brute = Brute(project)
    series = active.active_series(project=project, interval="day", start=start, end=end)
    assert [s.active_installs for s in series] == [brute.active(s.start, s.start) for s in series]


def test_a_late_event_is_counted_at_once_and_its_days_recounted_by_the_job(client):
    p = seeded_project(client, seed=34, days=30)
    rolling.refresh_rolling(project=p.project, now=timezone.now())
    late = timezone.now() - dt.timedelta(days=10)
    ingest_at(p.project, late, "inst_late_00001")  # a new install, 10 days back
    days = [late.date() + dt.timedelta(days=k) for k in range(-1, 11)]
    assert_rolling_is_brute_force(p.project, days)
    assert_daily_series_is_brute_force(p.project, days[0], days[-1])
    run = run_job("refresh_cohorts")
    assert run.ok and run.details["rolling_days"] == {p.project.slug: 10}
    assert_rolling_is_brute_force(p.project, days)
    assert_daily_series_is_brute_force(p.project, days[0], days[-1])


def test_version_adoption_reads_the_same_from_stored_days_as_from_activity(client):
    p = seeded_project(client, seed=35, days=40)
    end = timezone.now().date()
    start = end - dt.timedelta(days=39)
    before = active.version_adoption(project=p.project, start=start, end=end)
    rolling.refresh_rolling(project=p.project, now=timezone.now())
    assert RollingActivity.objects.filter(project=p.project).count() >= 35
    after = active.version_adoption(project=p.project, start=start, end=end)
    assert after == before
    expect = versions_by_day(p.project, start, end)
    for i, label in enumerate(after["labels"]):
        got = {v: s[i] for v, s in after["series"].items() if s[i]}
        assert got == expect.get(label, {}), label


def refreshed_then_purged(client, *, seed: int, days: int, retention: int = 40):
    """A seeded project whose closed-day rows are filled, then purged to `retention` days:
    (project, now, the first day kept)."""
    p = seeded_project(client, seed=seed, days=days)
    now = timezone.now()
    rolling.refresh_rolling(project=p.project, now=now)
    p.project.retention_days = retention
    p.project.save(update_fields=["retention_days"])
    purge.purge(now=now)
    return p, now, now.date() - dt.timedelta(days=retention)


def test_the_purge_drops_rows_of_purged_days_and_later_days_match_what_is_left(client):
    p, now, cutoff = refreshed_then_purged(client, seed=36, days=60)
    assert not RollingActivity.objects.filter(project=p.project, day__lt=cutoff).exists()
    days = [cutoff + dt.timedelta(days=k) for k in range(40)]
    assert_rolling_is_brute_force(p.project, days)  # the rows crossing the cutoff are stale
    assert rolling.refresh_rolling(project=p.project, now=now).days == 29
    assert_rolling_is_brute_force(p.project, days)


def test_deleting_an_install_clears_the_rows_and_counts_stay_exact(client):
    p = seeded_project(client, seed=37, days=20)
    rolling.refresh_rolling(project=p.project, now=timezone.now())
    install = DailyActivity.objects.filter(project=p.project).first().install_id
    delete_install(project=p.project, install_id=install)
    assert not RollingActivity.objects.filter(project=p.project).exists()
    assert_rolling_is_brute_force(
        p.project, [timezone.now().date() - dt.timedelta(days=k) for k in range(20)]
    )


def test_an_install_seen_after_the_day_keeps_the_last_seen_shortcut_away(client):
    p = seeded_project(client, seed=38, days=10)
    day = timezone.now().date() - dt.timedelta(days=3)
    # No stored rows: days before the newest activity are counted, today's comes from installs.
    assert_rolling_is_brute_force(p.project, [day, timezone.now().date()])
    assert active._seen_after(p.project, day)
    assert not active._seen_after(p.project, timezone.now().date())


def brute_os(project, start, end):
    """Installs per OS from the raw events: each install's OS of a day is that day's last
    non-empty one (what DailyActivity keeps), counted once per OS it had in the range."""
    seen: dict = defaultdict(list)
    for install, ts, os_name in Event.objects.filter(project=project).values_list(
        "install_id", "timestamp", "os"
    ):
        if start <= ts.astimezone(dt.UTC).date() <= end:
            seen[(install, ts.astimezone(dt.UTC).date())].append((ts, os_name))
    pairs = set()
    for (install, _), events in seen.items():
        named = [e for e in events if e[1]]
        pairs.add((install, max(named)[1] if named else ""))
    by_os: dict = defaultdict(int)
    for _, os_name in pairs:
        by_os[os_name or "unknown"] += 1
    return sorted(by_os.items(), key=lambda x: (-x[1], x[0]))


def test_installs_per_os_read_the_folded_pairs_and_match_the_raw_events(client):
    p = seeded_project(client, seed=39, days=40)
    end = timezone.now().date()
    start = end - dt.timedelta(days=29)
    before = active.os_breakdown(project=p.project, start=start, end=end)
    assert before == brute_os(p.project, start, end)
    rolling.refresh_rolling(project=p.project, now=timezone.now())
    assert OsActivity.objects.filter(project=p.project).exists()
    assert active.os_breakdown(project=p.project, start=start, end=end) == before
    # The pairs are what is read: a pair no activity row has shows up.
    OsActivity.objects.create(project=p.project, install_id="inst_x", os="plan9", last_day=end)
    assert ("plan9", 1) in active.os_breakdown(project=p.project, start=start, end=end)


def test_a_late_event_with_a_new_os_is_counted_at_once_and_folded_by_the_job(client):
    p = seeded_project(client, seed=40, days=30)
    rolling.refresh_rolling(project=p.project, now=timezone.now())
    end = timezone.now().date()
    start = end - dt.timedelta(days=29)
    late = timezone.now() - dt.timedelta(days=12)
    install = DailyActivity.objects.filter(project=p.project).first().install_id
    ingest(
        project=p.project,
        events=[IncomingEvent(install_id=install, name="x", timestamp=late, os="haiku")],
        client_ip="192.0.2.10",
        now=late,
    )
    fold()
    assert ("haiku", 1) in active.os_breakdown(project=p.project, start=start, end=end)
    assert active.os_breakdown(project=p.project, start=start, end=end) == brute_os(
        p.project, start, end
    )
    rolling.refresh_rolling(project=p.project, now=timezone.now())
    assert OsActivity.objects.filter(project=p.project, install_id=install, os="haiku").exists()
    assert active.os_breakdown(project=p.project, start=start, end=end) == brute_os(
        p.project, start, end
    )


def test_the_purge_and_a_deletion_take_their_os_pairs_with_them(client):
    p, now, cutoff = refreshed_then_purged(client, seed=42, days=60)
    assert not OsActivity.objects.filter(project=p.project, last_day__lt=cutoff).exists()
    install = OsActivity.objects.filter(project=p.project).first().install_id
    delete_install(project=p.project, install_id=install)
    assert not OsActivity.objects.filter(project=p.project, install_id=install).exists()
    rolling.refresh_rolling(project=p.project, now=now)
    end = now.date()
    for start in (cutoff, end - dt.timedelta(days=6)):
        assert active.os_breakdown(project=p.project, start=start, end=end) == brute_os(
            p.project, start, end
        )


def test_a_first_fill_leaves_both_rollups_analysed(client):
    p = seeded_project(client, seed=43, days=20)
    rolling.refresh_rolling(project=p.project, now=timezone.now())
    pairs = OsActivity.objects.filter(project=p.project).count()
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "SELECT relname, reltuples FROM pg_class"
                " WHERE relname IN ('telemetry_rollingactivity', 'telemetry_osactivity')"
            )
            stats = dict(cursor.fetchall())
            assert stats["telemetry_osactivity"] == pairs
        else:
            cursor.execute(
                "SELECT tbl, stat FROM sqlite_stat1"
                " WHERE tbl IN ('telemetry_rollingactivity', 'telemetry_osactivity')"
            )
            stats = dict(cursor.fetchall())  # one row per index, each opening with the row count
            assert int(stats["telemetry_osactivity"].split()[0]) == pairs
    assert set(stats) == {"telemetry_rollingactivity", "telemetry_osactivity"}


# ClosedPeriod: active installs, new installs and events of closed days, weeks and months.


def installs_first_seen(project, start, end):
    return sum(
        1
        for ts in Install.objects.filter(project=project).values_list("first_seen", flat=True)
        if start <= ts.astimezone(dt.UTC).date() <= end
    )


def assert_series_are_brute_force(project, start, end, *, purged=False, events=None):
    """Every day, week and month that begins in [start, end] as counted from the raw events (a
    period begun before a purge's cutoff is answered from the snapshots, not the events). After
    a purge an install keeps its first day although its first events are gone: new installs
    are then the installs first seen in the period, as every reader defines them. `events`:
    the events per day to expect instead of the raw events' (DailyCount outlives a deletion)."""
    brute = Brute(project)
    for interval in ("day", "week", "month"):
        for s in active.active_series(project=project, interval=interval, start=start, end=end):
            if s.start < start:
                continue
            last = period_end(s.start, interval)
            new = installs_first_seen if purged else lambda _, a, b: brute.new(a, b)
            expect = (brute.active(s.start, last), new(project, s.start, last))
            assert (s.active_installs, s.new_installs) == expect, (interval, s.start)
            if events is None:
                assert s.events == brute.events(s.start, last), (interval, s.start)
            else:
                expect = sum(n for d, n in events.items() if s.start <= d <= last)
                assert s.events == expect, (interval, s.start)


def test_every_closed_day_week_and_month_from_the_oldest_activity_day_is_counted(client):
    p = seeded_project(client, seed=51, days=70)
    now = timezone.now()
    oldest = active.raw_boundary(project=p.project)
    done = rolling.refresh_rolling(project=p.project, now=now)
    yesterday = now.date() - dt.timedelta(days=1)
    for interval, kind in (("day", "d"), ("week", "w"), ("month", "m")):
        starts = ClosedPeriod.objects.filter(project=p.project, period=kind).values_list(
            "start", flat=True
        )
        expect = [
            s
            for s in periods(oldest, yesterday, interval)
            if s >= oldest and period_end(s, interval) <= yesterday
        ]
        assert sorted(starts) == expect, interval
    assert done.periods == ClosedPeriod.objects.filter(project=p.project).count()
    assert rolling.refresh_rolling(project=p.project, now=now).periods == 0
    assert_series_are_brute_force(p.project, now.date() - dt.timedelta(days=100), now.date())


def test_series_serve_a_closed_period_from_its_row_while_its_fingerprint_holds(client):
    p = seeded_project(client, seed=52, days=40)
    now = timezone.now()
    rolling.refresh_rolling(project=p.project, now=now)
    week = period_start(now.date(), "week") - dt.timedelta(days=14)
    row = ClosedPeriod.objects.filter(project=p.project, period="w", start=week)
    row.update(active_installs=9999, new_installs=999, events=99)
    (s,) = active.active_series(project=p.project, interval="week", start=week, end=week)
    assert (s.active_installs, s.new_installs, s.events) == (9999, 999, 99)
    row.update(fingerprint="0:2000-01-01")
    brute = Brute(p.project)
    last = week + dt.timedelta(days=6)
    (s,) = active.active_series(project=p.project, interval="week", start=week, end=week)
    assert (s.active_installs, s.new_installs, s.events) == (
        brute.active(week, last),
        brute.new(week, last),
        brute.events(week, last),
    )


def test_a_late_event_that_moves_an_install_first_day_never_serves_the_old_count(client):
    p = seeded_project(client, seed=53, days=60)
    now = timezone.now()
    this_week = period_start(now.date(), "week")
    # A new install first seen in a closed week, counted by a refresh...
    first_seen = dt.datetime.combine(this_week - dt.timedelta(days=5), dt.time(12), dt.UTC)
    ingest_at(p.project, first_seen, "inst_moved_0001")
    rolling.refresh_rolling(project=p.project, now=now)
    week = period_start(first_seen.date(), "week")
    before = active.active_series(project=p.project, interval="week", start=week, end=week)
    assert before[0].new_installs == Brute(p.project).new(week, week + dt.timedelta(days=6))
    # ...then a late event five weeks earlier: its first day, and its new install, move there.
    ingest_at(p.project, first_seen - dt.timedelta(days=35), "inst_moved_0001")
    start = now.date() - dt.timedelta(days=59)
    assert_series_are_brute_force(p.project, start, now.date())
    (after,) = active.active_series(project=p.project, interval="week", start=week, end=week)
    assert after.new_installs == before[0].new_installs - 1
    run = run_job("refresh_cohorts")
    assert run.ok and run.details["closed_periods"][p.project.slug] > 0
    assert_series_are_brute_force(p.project, start, now.date())


def test_a_purge_carries_the_closed_periods_it_leaves_whole_and_they_stay_exact(client):
    p, now, cutoff = refreshed_then_purged(client, seed=54, days=70)
    assert not ClosedPeriod.objects.filter(project=p.project, start__lt=cutoff).exists()
    oldest = active.raw_boundary(project=p.project)
    kept = ClosedPeriod.objects.filter(project=p.project, start__gte=oldest)
    assert kept.count() > 30
    # Every row left is current for the new oldest day: readers serve it, and it is right.
    for interval, kind in (("day", "d"), ("week", "w"), ("month", "m")):
        rows = kept.filter(period=kind)
        served = active.closed_periods(
            project=p.project, interval=interval, first=oldest, last=now.date()
        )
        assert set(served) == set(rows.values_list("start", flat=True)), interval
    start = now.date() - dt.timedelta(days=39)
    assert_series_are_brute_force(p.project, start, now.date(), purged=True)
    assert rolling.refresh_rolling(project=p.project, now=now).periods == 0
    assert_series_are_brute_force(p.project, start, now.date(), purged=True)


def test_a_purge_carries_only_rows_that_were_current_before_it(client):
    p = seeded_project(client, seed=60, days=70)
    now = timezone.now()
    rolling.refresh_rolling(project=p.project, now=now)
    week = period_start(now.date(), "week") - dt.timedelta(days=14)
    rows = ClosedPeriod.objects.filter(project=p.project, period="w")
    # One row served as it is (its counts marked, its fingerprint current), one stale.
    rows.filter(start=week).update(active_installs=9999)
    rows.filter(start=week - dt.timedelta(days=7)).update(fingerprint="0:2000-01-01")
    p.project.retention_days = 40
    p.project.save(update_fields=["retention_days"])
    purge.purge(now=now)
    (marked,) = active.active_series(project=p.project, interval="week", start=week, end=week)
    assert marked.active_installs == 9999  # carried over, not recounted
    stale = week - dt.timedelta(days=7)
    assert stale not in active.closed_periods(
        project=p.project, interval="week", first=stale, last=stale
    )
    brute = Brute(p.project)
    (s,) = active.active_series(project=p.project, interval="week", start=stale, end=stale)
    assert s.active_installs == brute.active(stale, stale + dt.timedelta(days=6))


def test_a_late_event_before_the_carry_leaves_its_periods_to_the_refresh(client, monkeypatch):
    p = seeded_project(client, seed=61, days=70)
    now = timezone.now()
    rolling.refresh_rolling(project=p.project, now=now)
    oldest_before = active.raw_boundary(project=p.project)
    p.project.retention_days = 40
    p.project.save(update_fields=["retention_days"])
    carry = rolling.carry_periods
    monkeypatch.setattr(rolling, "carry_periods", lambda **kw: 0)
    purge.purge(now=now)
    # An event lands late in a closed day after the purge's drops, before its carry.
    late = now.date() - dt.timedelta(days=10)
    ingest_at(p.project, dt.datetime.combine(late, dt.time(12), dt.UTC), "inst_late_carry1")
    fold()
    carried = carry(project=p.project, oldest_before=oldest_before)
    oldest = active.raw_boundary(project=p.project)
    served = {
        (interval, start)
        for interval in ("day", "week", "month")
        for start in active.closed_periods(
            project=p.project, interval=interval, first=oldest, last=now.date()
        )
    }
    assert carried == len(served) > 10
    # Only periods that end before the late day: the others count it, the rows do not.
    assert all(period_end(start, interval) < late for interval, start in served)
    assert ("day", late - dt.timedelta(days=1)) in served
    start = now.date() - dt.timedelta(days=39)
    assert_series_are_brute_force(p.project, start, now.date(), purged=True)


def test_deleting_an_install_clears_the_closed_periods(client):
    p = seeded_project(client, seed=55, days=30)
    now = timezone.now()
    rolling.refresh_rolling(project=p.project, now=now)
    install = DailyActivity.objects.filter(project=p.project).first().install_id
    events = Brute(p.project).events
    start = now.date() - dt.timedelta(days=29)
    kept = {
        start + dt.timedelta(days=k): events(*[start + dt.timedelta(days=k)] * 2) for k in range(30)
    }
    delete_install(project=p.project, install_id=install)
    assert not ClosedPeriod.objects.filter(project=p.project).exists()
    assert_series_are_brute_force(p.project, start, now.date(), events=kept)
    rolling.refresh_rolling(project=p.project, now=now)
    assert_series_are_brute_force(p.project, start, now.date(), events=kept)


def test_the_oldest_activity_day_is_found_past_the_first_probe(client):
    p = seeded_project(client, seed=56, installs=3, events=20, days=2)
    other = seeded_project(client, seed=57, installs=3, events=40, days=60)
    today = timezone.now().date()
    assert active.raw_boundary(project=p.project) >= today - dt.timedelta(days=2)
    assert active.raw_boundary(project=other.project) == min(
        DailyActivity.objects.filter(project=other.project).values_list("day", flat=True)
    )
    old = dt.datetime.combine(today - dt.timedelta(days=45), dt.time(9), dt.UTC)
    ingest_at(p.project, old, "inst_old_00001")
    assert active.raw_boundary(project=p.project) == old.date()


def test_a_request_reads_the_oldest_activity_day_once(client):
    p = seeded_project(client, seed=58, days=30)
    today = timezone.now().date()
    with CaptureQueriesContext(connection) as outside:
        active.raw_boundary(project=p.project)
        active.raw_boundary(project=p.project)
    with db.reading(using="default"), CaptureQueriesContext(connection) as inside:
        first = active.raw_boundary(project=p.project)
        active.active_series(project=p.project, interval="week", start=today, end=today)
        assert active.raw_boundary(project=p.project) == first

    def probes(ctx):
        return [q for q in ctx.captured_queries if "min(" in q["sql"].lower()]

    assert len(probes(inside)) * 2 == len(probes(outside)) > 0


def test_after_a_purge_the_weekly_series_counts_only_the_purged_weeks_and_the_open_one(client):
    p = seeded_project(client, seed=59, days=70)
    now = timezone.now()
    p.project.retention_days = 30
    p.project.save(update_fields=["retention_days"])
    purge.purge(now=now)
    rolling.refresh_rolling(project=p.project, now=now)
    served = set(
        ClosedPeriod.objects.filter(project=p.project, period="w").values_list("start", flat=True)
    )
    assert len(served) >= 3
    start = now.date() - dt.timedelta(days=69)
    with CaptureQueriesContext(connection) as ctx:
        active.active_series(project=p.project, interval="week", start=start, end=now.date())
    spans = [
        [dt.date.fromisoformat(d) for d in re.findall(r"'(\d{4}-\d{2}-\d{2})", q["sql"])]
        for q in ctx.captured_queries
        if "telemetry_periodactivity" in q["sql"]
    ]
    assert spans
    oldest = active.raw_boundary(project=p.project)
    for lo, hi in spans:
        assert not [w for w in served if lo <= w <= hi], (lo, hi)
        # Weeks over before the oldest activity day have no activity rows left to count.
        assert period_end(lo, "week") >= oldest, (lo, oldest)
    assert_series_are_brute_force(
        p.project, now.date() - dt.timedelta(days=29), now.date(), purged=True
    )
