"""seed_demo writes events and exactly the rollups the pipeline would keep for them."""

import datetime as dt
import json
from collections import defaultdict

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from telemetry.analytics import active
from telemetry.models import (
    CohortSummary,
    DailyActivity,
    DailyCount,
    DailySummary,
    Event,
    Install,
    Project,
)
from telemetry.services.demo import seed_demo
from tests.analytics.data import Brute
from tests.factories import make_project

pytestmark = pytest.mark.django_db


def test_seeded_rollups_equal_a_brute_force_count_over_the_events():
    project = make_project().project
    now = timezone.now()
    result = seed_demo(project=project, installs=80, events=2500, days=30, seed=3, now=now)
    events = list(Event.objects.filter(project=project).order_by("timestamp", "id"))
    assert len(events) == result.events > 1000
    assert max(e.timestamp for e in events) <= now
    assert min(e.timestamp for e in events).date() >= now.date() - dt.timedelta(days=29)

    activity = defaultdict(lambda: [0, "", ""])
    counts = defaultdict(int)
    installs: dict[str, dict] = {}
    for e in events:
        day = e.timestamp.date()
        a = activity[(e.install_id, day)]
        a[0] += 1
        a[1], a[2] = e.app_version, e.os
        counts[(day, e.name)] += 1
        i = installs.setdefault(
            e.install_id, {"first": e.timestamp, "first_version": e.app_version, "n": 0}
        )
        i.update(last=e.timestamp, last_version=e.app_version, os=e.os)
        i["n"] += 1
    assert {
        (r.install_id, r.day): [r.events, r.app_version, r.os]
        for r in DailyActivity.objects.filter(project=project)
    } == dict(activity)
    assert {(r.day, r.name): r.events for r in DailyCount.objects.filter(project=project)} == dict(
        counts
    )
    assert {
        r.install_id: {
            "first": r.first_seen,
            "first_version": r.first_version,
            "n": r.event_count,
            "last": r.last_seen,
            "last_version": r.last_version,
            "os": r.os,
        }
        for r in Install.objects.filter(project=project)
    } == installs

    brute = Brute(project)
    end = now.date()
    for interval in ("day", "week"):
        series = active.active_series(
            project=project, interval=interval, start=end - dt.timedelta(days=29), end=end
        )
        assert sum(p.new_installs for p in series) == 80
        assert [p.active_installs for p in series][-1] == brute.active(series[-1].start, end)


def test_usage_has_errors_versions_and_several_oses():
    project = make_project().project
    seed_demo(project=project, installs=60, events=3000, days=40, seed=5, now=timezone.now())
    names = set(Event.objects.filter(project=project).values_list("name", flat=True))
    assert {"session.start", "command.run"} <= names
    assert names & {"error.crash", "flash_error", "log"}
    assert Install.objects.filter(project=project).values("os").distinct().count() == 3
    assert (
        DailyActivity.objects.filter(project=project).values("app_version").distinct().count() > 1
    )


def test_command_creates_the_project_and_refuses_to_seed_twice(capsys):
    call_command(
        "seed_demo", "demo-x", "--installs", "20", "--events", "200", "--days", "10", "--json"
    )
    out = json.loads(capsys.readouterr().out)
    assert out["project"] == "demo-x" and out["events"] == Event.objects.count()
    assert out["operator_token"].startswith("op_")
    assert Project.objects.get(slug="demo-x").retention_days == 10
    with pytest.raises(CommandError, match="has data already"):
        call_command("seed_demo", "demo-x", "--installs", "20", "--events", "200", "--days", "10")
    call_command(
        "seed_demo",
        "demo-x",
        "--installs",
        "5",
        "--events",
        "50",
        "--days",
        "10",
        "--replace",
        "--json",
    )
    assert Install.objects.count() == 5


def test_replacing_a_seed_drops_the_old_seeds_purge_snapshots():
    # A purge keeps a day's existing summary instead of counting the day again: an old seed's
    # summaries would have stood for the new seed's days.
    p = make_project(retention_days=30).project
    now = timezone.now()
    seed_demo(project=p, installs=30, events=400, days=30, seed=2, now=now)
    old_day = now.date() - dt.timedelta(days=29)
    DailySummary.objects.create(project=p, day=old_day, active_installs=999, new_installs=999)
    CohortSummary.objects.create(project=p, week_start=old_day, size=999, retained=[999])
    seed_demo(project=p, installs=5, events=50, days=30, seed=3, now=now, replace=True)
    assert not DailySummary.objects.filter(project=p).exists()
    assert not CohortSummary.objects.filter(project=p).exists()


def test_command_rejects_impossible_sizes():
    with pytest.raises(CommandError, match="need installs"):
        call_command("seed_demo", "demo-y", "--installs", "10", "--events", "5", "--days", "5")
