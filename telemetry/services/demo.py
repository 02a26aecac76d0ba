"""Demo data: realistic usage (growth, churn, weekly rhythm, upgrades, OS mix, errors) written
as events together with exactly the rollups the ingest pipeline would have kept for them.

Each install is generated whole, so its Install and DailyActivity rows are final when written;
PostgreSQL gets COPY (psycopg's cursor.copy), SQLite batched executemany, all in one transaction;
then the tables are analyzed and the cohort and closed-day rollups rebuilt, so the first page
is planned well.
"""

import datetime as dt
import json
import math
import random
from collections import defaultdict
from dataclasses import dataclass

from django.db import connection, transaction

from telemetry.ingest.rollups import rebuild_period_activity
from telemetry.models import (
    ClosedPeriod,
    CohortSummary,
    DailyActivity,
    DailyCount,
    DailySummary,
    ErrorDay,
    Event,
    Install,
    OsActivity,
    PeriodActivity,
    Project,
    RollingActivity,
)
from telemetry.services import partitions
from telemetry.services.cohorts import refresh_cohorts
from telemetry.services.error_days import refresh_error_days
from telemetry.services.maintenance import ANALYTICS_TABLES, analyze
from telemetry.services.rolling import refresh_rolling

OS_MIX = [("linux", "Linux", 0.46), ("darwin", "Darwin", 0.36), ("windows", "Windows", 0.18)]
NAMES = [("session.start", 0.3), ("command.run", 0.42), ("tts.request", 0.2), ("app.start", 0.06)]
ERRORS = [
    ("error.crash", "ConnectionError", "Connection refused", "at connect (client.py:88)"),
    ("error.crash", "TimeoutError", "TTS request timed out after 30s", "at speak (tts.py:142)"),
    ("flash_error", "flash_error", "Serial port busy", "at openPort (serial.ts:51)"),
    ("log", "", "disk quota exceeded", ""),
]
PROVIDERS = ["openai", "kokoro", "elevenlabs"]
EVENT_COLUMNS = (
    "project_id, event_id, install_id, name, timestamp, received_at, session_id, app_version,"
    " os, properties, ip_hash"
)
BATCH = 20_000


@dataclass
class Seeded:
    installs: int
    events: int
    activity_rows: int
    days: int


class Writer:
    """Buffers rows per table and flushes them with COPY (PostgreSQL) or executemany."""

    def __init__(self, cursor) -> None:
        self.cursor = cursor
        self.pg = connection.vendor == "postgresql"
        self.buffers: dict[str, tuple[str, list]] = {}

    def add(self, table: str, columns: str, row: tuple) -> None:
        buf = self.buffers.setdefault(table, (columns, []))[1]
        buf.append(row)
        if len(buf) >= BATCH:
            self.flush(table)

    def flush(self, table: str | None = None) -> None:
        for name in [table] if table else list(self.buffers):
            columns, rows = self.buffers[name]
            if not rows:
                continue
            if self.pg:
                with self.cursor.cursor.copy(f"COPY {name} ({columns}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
            else:
                marks = ",".join(["%s"] * len(rows[0]))
                ops = connection.ops
                adapted = [
                    tuple(
                        ops.adapt_datetimefield_value(v)
                        if isinstance(v, dt.datetime)
                        else (ops.adapt_datefield_value(v) if isinstance(v, dt.date) else v)
                        for v in row
                    )
                    for row in rows
                ]
                self.cursor.executemany(f"INSERT INTO {name} ({columns}) VALUES ({marks})", adapted)
            rows.clear()


def _weighted(rng: random.Random, pairs):
    return rng.choices([p[0] for p in pairs], weights=[p[-1] for p in pairs])[0]


def _plan(rng: random.Random, installs: int, days: int, first_day: dt.date):
    """Arrival day, engagement, lifetime and active days of each install (no events yet)."""
    weights = []
    for d in range(days):
        weekday = (first_day + dt.timedelta(days=d)).weekday()
        weights.append(math.exp(1.6 * d / days) * (0.65 if weekday >= 5 else 1.0))
    arrivals = rng.choices(range(days), weights=weights, k=installs)
    plans = []
    for arrival in arrivals:
        engagement = rng.betavariate(1.3, 2.2)
        lifetime = 0 if rng.random() < 0.3 else int(rng.expovariate(1 / 35)) + 1
        active = [arrival]
        for d in range(arrival + 1, min(days, arrival + lifetime + 1)):
            weekday = (first_day + dt.timedelta(days=d)).weekday()
            if rng.random() < engagement * (0.55 if weekday >= 5 else 1.0):
                active.append(d)
        plans.append(active)
    return plans


def seed_demo(
    *,
    project: Project,
    installs: int,
    events: int,
    days: int,
    seed: int,
    now: dt.datetime,
    replace: bool = False,
    progress=None,
) -> Seeded:
    """Write about `events` events from `installs` installs over the `days` UTC days up to `now`.

    Refuses a project that has events already unless `replace`, which deletes them first:
    rollups written here are whole-install totals and would not add up with existing ones.
    """
    if installs < 1 or events < installs or days < 1:
        raise ValueError("need installs >= 1, events >= installs and days >= 1")
    tables = (Event, Install, DailyActivity, PeriodActivity, DailyCount)
    rng = random.Random(seed)
    today = now.astimezone(dt.UTC).date()
    first_day = today - dt.timedelta(days=days - 1)
    plans = _plan(rng, installs, days, first_day)
    active_days = sum(len(p) for p in plans)
    mean = max(1.0, events / active_days)
    releases = [(0, "1.0.0"), (int(days * 0.3), "1.1.0"), (int(days * 0.6), "1.2.0")]
    releases.append((int(days * 0.85), "1.3.0"))
    counts: dict[tuple[dt.date, str], int] = defaultdict(int)
    total = rows_activity = 0
    if partitions.partitioned():
        partitions.ensure_range(start=first_day, end=today + dt.timedelta(days=1))
    with transaction.atomic():
        if any(m.objects.filter(project=project).exists() for m in tables):
            if not replace:
                raise ValueError(f"project {project.slug!r} has data already; use --replace")
            # The purged days' anonymous snapshots too: a purge keeps a day's summary rather
            # than count it again, so an old seed's would stand for the new one's days.
            derived = (RollingActivity, OsActivity, ClosedPeriod, ErrorDay)
            for model in (*tables, *derived, DailySummary, CohortSummary):
                model.objects.filter(project=project).delete()
        with connection.cursor() as cursor:
            writer = Writer(cursor)
            for n, active in enumerate(plans):
                install_id = f"demo_{seed:x}_{n:07d}"
                os_code, os_name, _ = rng.choices(OS_MIX, weights=[o[2] for o in OS_MIX])[0]
                lag = rng.expovariate(1 / 6)
                sessions = 0
                first = last = None
                first_version = last_version = ""
                install_events = 0
                for d in active:
                    day = first_day + dt.timedelta(days=d)
                    # New installs get the latest release; existing ones upgrade after a lag.
                    version = next(
                        v for r, v in reversed(releases) if r <= active[0] or r + lag <= d
                    )
                    k = 1 + int(rng.expovariate(1 / (mean - 1))) if mean > 1 else 1
                    if day == today:
                        # Today's events stop at `now`, like real ones.
                        limit = max(
                            1,
                            int(
                                (
                                    now - dt.datetime.combine(day, dt.time.min, dt.UTC)
                                ).total_seconds()
                            ),
                        )
                    else:
                        limit = 86400
                    seconds = sorted(rng.randrange(limit) for _ in range(k))
                    base = dt.datetime.combine(day, dt.time.min, tzinfo=dt.UTC)
                    for s in seconds:
                        ts = base + dt.timedelta(seconds=s, microseconds=rng.randrange(1_000_000))
                        name, props = _event(rng, os_name, version, sessions)
                        if name == "session.start":
                            sessions += 1
                        writer.add(
                            "telemetry_event",
                            EVENT_COLUMNS,
                            (
                                project.pk,
                                None,
                                install_id,
                                name,
                                ts,
                                ts + dt.timedelta(seconds=rng.randrange(1, 5)),
                                "",
                                version,
                                os_code,
                                json.dumps(props, separators=(",", ":")),
                                "",
                            ),
                        )
                        counts[(day, name)] += 1
                        # Two events in one second take their microseconds in any order.
                        if first is None or ts < first:
                            first, first_version = ts, version
                        if last is None or ts > last:
                            last, last_version = ts, version
                    install_events += k
                    rows_activity += 1
                    writer.add(
                        "telemetry_dailyactivity",
                        "project_id, install_id, day, events, app_version, os",
                        (project.pk, install_id, day, k, version, os_code),
                    )
                total += install_events
                writer.add(
                    "telemetry_install",
                    "project_id, install_id, first_seen, last_seen, first_version, last_version,"
                    " os, event_count",
                    (
                        project.pk,
                        install_id,
                        first,
                        last,
                        first_version,
                        last_version,
                        os_code,
                        install_events,
                    ),
                )
                if progress is not None:
                    progress(install_events)
            writer.flush()
            for (day, name), n in sorted(counts.items()):
                writer.add(
                    "telemetry_dailycount",
                    "project_id, day, name, events",
                    (project.pk, day, name, n),
                )
            writer.flush()
            rebuild_period_activity(project=project)
    # A freshly loaded table has no statistics: plan the first page on real numbers.
    analyze(ANALYTICS_TABLES, vacuum=True)
    refresh_cohorts(project=project, now=now)
    refresh_rolling(project=project, now=now)
    refresh_error_days(project=project, now=now)
    analyze(
        [
            "telemetry_rollingactivity",
            "telemetry_osactivity",
            "telemetry_closedperiod",
            "telemetry_errorday",
        ]
    )
    return Seeded(installs=installs, events=total, activity_rows=rows_activity, days=days)


def _event(rng: random.Random, os_name: str, version: str, sessions: int) -> tuple[str, dict]:
    props: dict = {"environment": {"os": os_name, "version": version}}
    if rng.random() < 0.025:
        name, kind, message, stack = rng.choice(ERRORS)
        if name == "log":
            props.update(level=rng.choice(["warn", "error", "fatal"]), message=message)
        else:
            props.update(type=kind, message=message, stack=f"{kind}: {message}\n  {stack}")
        return name, props
    name = _weighted(rng, NAMES)
    if name == "session.start":
        tts = {p: rng.randrange(1, 12) for p in rng.sample(PROVIDERS, rng.randrange(1, 3))}
        props["usage"] = {"total_sessions": sessions + 1, "provider_usage": {"tts": tts}}
    elif name == "command.run":
        props["command"] = rng.choice(["converse", "speak", "listen", "config"])
        props["duration_ms"] = int(rng.lognormvariate(6.5, 0.8))
    elif name == "tts.request":
        props["provider"] = rng.choice(PROVIDERS)
        props["chars"] = rng.randrange(20, 800)
    return name, props
