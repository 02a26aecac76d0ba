"""What every importer test checks after an import: rollups equal to a brute-force count over
the stored events, and no IP hash anywhere."""

import datetime as dt
from collections import Counter, defaultdict

from telemetry.models import DailyActivity, DailyCount, Event, Install, PeriodActivity
from telemetry.services.imports import import_events


def run(project, fmt, path, now, **kwargs):
    return import_events(project=project, fmt=fmt, path=path, now=now, **kwargs)


def assert_rollups_exact(project) -> None:
    events = list(
        Event.objects.filter(project=project).values_list(
            "install_id", "name", "timestamp", "app_version"
        )
    )
    days = {ts.astimezone(dt.UTC).date() for _, _, ts, _ in events}
    counts = Counter((ts.astimezone(dt.UTC).date(), name) for _, name, ts, _ in events)
    stored_counts: Counter = Counter()
    for c in DailyCount.objects.filter(project=project, day__in=days):
        stored_counts[(c.day, c.name)] += c.events  # summed over the shard rows
    assert stored_counts == dict(counts)
    activity = Counter((i, ts.astimezone(dt.UTC).date()) for i, _, ts, _ in events if i)
    assert {
        (a.install_id, a.day): a.events for a in DailyActivity.objects.filter(project=project)
    } == dict(activity)
    seen: dict[str, list] = defaultdict(list)
    for i, _, ts, _ in events:
        if i:
            seen[i].append(ts)
    assert {
        i.install_id: (i.first_seen, i.last_seen, i.event_count)
        for i in Install.objects.filter(project=project)
    } == {i: (min(t), max(t), len(t)) for i, t in seen.items()}
    weeks = {(i, d - dt.timedelta(days=d.weekday())) for i, d in activity}
    assert (
        set(
            PeriodActivity.objects.filter(project=project, period="w").values_list(
                "install_id", "start"
            )
        )
        == weeks
    )


def assert_no_ip_hash(project, *secrets: str) -> None:
    assert not Event.objects.filter(project=project).exclude(ip_hash="").exists()
    for event in Event.objects.filter(project=project):
        text = str(event.properties)
        for secret in secrets:
            assert secret not in text
