"""Install, DailyActivity and PeriodActivity after a fold, against their definitions counted
from the events one by one: several days, versions and systems per install, empty ones among
them, out of order within each of two requests (the second one's events later than the
first's: a fold merges into what an earlier fold wrote by arrival)."""

import datetime as dt
import random

import pytest
from django.utils import timezone

from telemetry.ingest import pipeline
from telemetry.ingest.rollups import fold_rollups, week_start
from telemetry.ingest.schema import IncomingEvent
from telemetry.models import DailyActivity, Install, PeriodActivity
from tests.factories import make_project

pytestmark = pytest.mark.django_db


def events_over_days(seed: int) -> list[IncomingEvent]:
    rng = random.Random(seed)
    start = timezone.now().replace(hour=0, minute=0, second=0, microsecond=0)
    events = []
    for install in range(6):
        for k in range(rng.randint(1, 12)):
            # Distinct instants per install: "first" and "last" are then one event each.
            when = start - dt.timedelta(days=rng.randint(0, 40), seconds=install * 1000 + k)
            events.append(
                IncomingEvent(
                    install_id=f"inst_exact_{install:02d}",
                    name=rng.choice(["app.start", "cmd.run"]),
                    timestamp=when,
                    event_id=f"evt_exact_{install:02d}_{k:03d}",
                    app_version=rng.choice(["", "1.0", "1.1", "2.0"]),
                    os=rng.choice(["", "linux", "darwin"]),
                )
            )
    return events


def last(values: list[str]) -> str:
    present = [v for v in values if v]
    return present[-1] if present else ""


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_folded_rollups_are_their_definitions_over_the_events(seed):
    p = make_project(install_rate="100000/h", ip_rate="100000/h").project
    events = sorted(events_over_days(seed), key=lambda e: e.timestamp)
    half = len(events) // 2
    for part in (events[:half], events[half:]):
        part = random.Random(seed).sample(part, len(part))
        assert pipeline.ingest(project=p, events=part, client_ip="192.0.2.7").accepted == len(part)
        fold_rollups()

    by_install: dict[str, list[IncomingEvent]] = {}
    for e in events:  # in time order
        by_install.setdefault(e.install_id, []).append(e)
    installs = {
        i.install_id: (i.first_seen, i.last_seen, i.first_version, i.last_version, i.os)
        for i in Install.objects.filter(project=p)
    }
    counts = dict(Install.objects.filter(project=p).values_list("install_id", "event_count"))
    wanted_activity, wanted_periods = {}, set()
    for install_id, own in by_install.items():
        versions = [e.app_version for e in own]
        assert installs[install_id] == (
            own[0].timestamp,
            own[-1].timestamp,
            last(versions[::-1]),
            last(versions),
            last([e.os for e in own]),
        )
        assert counts[install_id] == len(own)
        for day in {e.timestamp.date() for e in own}:
            same_day = [e for e in own if e.timestamp.date() == day]
            wanted_activity[(install_id, day)] = (
                len(same_day),
                last([e.app_version for e in same_day]),
                last([e.os for e in same_day]),
            )
            wanted_periods.add((install_id, "w", week_start(day)))
            wanted_periods.add((install_id, "m", day.replace(day=1)))
    assert {
        (a.install_id, a.day): (a.events, a.app_version, a.os)
        for a in DailyActivity.objects.filter(project=p)
    } == wanted_activity
    assert (
        set(PeriodActivity.objects.filter(project=p).values_list("install_id", "period", "start"))
        == wanted_periods
    )
