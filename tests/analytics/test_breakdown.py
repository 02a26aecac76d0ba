"""Breakdowns by property path: scalars, map-valued properties, numeric metrics, time series."""

import datetime as dt
import statistics
from collections import defaultdict

import pytest
from django.utils import timezone

from telemetry.analytics.breakdown import breakdown, percentile
from telemetry.analytics.periods import BadRequest
from telemetry.models import Event
from tests.analytics.data import seeded_project

pytestmark = pytest.mark.django_db


def _range():
    end = timezone.now().date()
    return end - dt.timedelta(days=80), end


def _events(project):
    return list(Event.objects.filter(project=project))


def test_nested_property_counts_events_and_installs(client):
    p = seeded_project(client, seed=31)
    start, end = _range()
    events, installs = defaultdict(int), defaultdict(set)
    for e in _events(p.project):
        key = e.properties["environment"]["os"]
        events[key] += 1
        installs[key].add(e.install_id)
    by_events = breakdown(
        project=p.project, prop="environment.os", metric=None, start=start, end=end
    )
    assert {r["key"]: r["value"] for r in by_events["rows"]} == events
    assert [r["value"] for r in by_events["rows"]] == sorted(events.values(), reverse=True)
    by_installs = breakdown(
        project=p.project, prop="environment.os", metric="installs", start=start, end=end
    )
    assert {r["key"]: r["value"] for r in by_installs["rows"]} == {
        k: len(v) for k, v in installs.items()
    }


def test_map_valued_property_expands_into_keys_with_summed_values(client):
    p = seeded_project(client, seed=37)
    start, end = _range()
    total, having = defaultdict(int), defaultdict(int)
    for e in _events(p.project):
        for provider, n in e.properties.get("provider_usage", {}).get("tts", {}).items():
            total[provider] += n
            having[provider] += 1
    result = breakdown(
        project=p.project, prop="provider_usage.tts", metric="events", start=start, end=end
    )
    assert {r["key"]: r["value"] for r in result["rows"]} == total
    assert {r["key"]: r["events"] for r in result["rows"]} == having


@pytest.mark.parametrize("kind", ["sum", "avg", "p50", "p95"])
def test_numeric_metrics_agree_with_python(client, kind):
    p = seeded_project(client, seed=41)
    start, end = _range()
    values = defaultdict(list)
    for e in _events(p.project):
        values[e.name].append(e.properties["duration_ms"])
    expect = {
        "sum": lambda v: sum(v),
        "avg": lambda v: sum(v) / len(v),
        # Independent of the product's percentile(): the standard library's inclusive
        # quantiles interpolate linearly between closest ranks, as percentile_cont does.
        "p50": lambda v: statistics.quantiles(v, n=100, method="inclusive")[49],
        "p95": lambda v: statistics.quantiles(v, n=100, method="inclusive")[94],
    }[kind]
    result = breakdown(
        project=p.project, prop="name", metric=f"{kind}:duration_ms", start=start, end=end
    )
    got = {r["key"]: r["value"] for r in result["rows"]}
    assert got.keys() == values.keys()
    for name, v in values.items():
        assert got[name] == pytest.approx(expect(v), abs=1e-3)


def test_percentiles_interpolate_between_ranks_worked_by_hand():
    values = [10, 1, 9, 2, 8, 3, 7, 4, 6, 5]  # 1..10, unsorted
    # rank q * (n - 1): p50 at 4.5 → between 5 and 6; p95 at 8.55 → 9 + 0.55 * (10 - 9)
    assert percentile(values, 0.5) == 5.5
    assert percentile(values, 0.95) == pytest.approx(9.55)
    assert percentile([7], 0.95) == 7
    assert percentile([], 0.5) is None


def test_booleans_and_top_level_fields_group_like_their_json(client):
    p = seeded_project(client, seed=43)
    start, end = _range()
    evs = _events(p.project)
    result = breakdown(project=p.project, prop="ok", metric=None, start=start, end=end)
    assert {r["key"]: r["value"] for r in result["rows"]} == {
        "true": sum(1 for e in evs if e.properties["ok"]),
        "false": sum(1 for e in evs if not e.properties["ok"]),
    }
    versions = breakdown(project=p.project, prop="app_version", metric=None, start=start, end=end)
    assert sum(r["value"] for r in versions["rows"]) == len(evs)


def test_time_series_splits_each_group_by_day(client):
    p = seeded_project(client, seed=47, days=10)
    end = timezone.now().date()
    start = end - dt.timedelta(days=11)
    result = breakdown(
        project=p.project,
        prop="provider_usage.tts",
        metric="events",
        start=start,
        end=end,
        interval="day",
    )
    assert len(result["series"]) == 12
    expect = defaultdict(int)
    for e in _events(p.project):
        for provider, n in e.properties.get("provider_usage", {}).get("tts", {}).items():
            expect[(e.timestamp.date().isoformat(), provider)] += n
    for point in result["series"]:
        for provider, value in point["values"].items():
            assert value == expect.get((point["period"], provider), 0)
    totals = {r["key"]: r["value"] for r in result["rows"]}
    for provider, value in totals.items():
        assert value == sum(pt["values"][provider] for pt in result["series"])


def test_range_bounds_the_events_read(client):
    p = seeded_project(client, seed=53)
    end = timezone.now().date()
    day = end - dt.timedelta(days=3)
    result = breakdown(project=p.project, prop="name", metric=None, start=day, end=day)
    assert sum(r["value"] for r in result["rows"]) == sum(
        1 for e in _events(p.project) if e.timestamp.date() == day
    )


@pytest.mark.parametrize(
    ("prop", "metric", "code"),
    [
        ("install_id", None, "invalid_property"),
        ("a..b", None, "invalid_property"),
        ("x'; drop", None, "invalid_property"),
        ("no.such.thing", None, "unknown_property"),
        ("name", "median:duration_ms", "invalid_metric"),
        ("name", "sum:", "invalid_metric"),
    ],
)
def test_bad_property_or_metric_is_refused_with_a_code(client, prop, metric, code):
    p = seeded_project(client, seed=59, events=50)
    start, end = _range()
    with pytest.raises(BadRequest) as exc:
        breakdown(project=p.project, prop=prop, metric=metric, start=start, end=end)
    assert exc.value.code == code
