"""The one ingest pipeline: dedupe → rate limit → hash IP → store events and rollups.

Front doors validate their own wire format into IncomingEvents and call `ingest`; this module is
the only writer of events and rollups. Order matters (CONTRACTS A2): a duplicate consumes no
quota, a refused event stores nothing, and the rollups move in the same transaction as the rows.
"""

import datetime as dt
import json
import logging
from collections import defaultdict
from dataclasses import dataclass, field

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from telemetry.ingest import limits
from telemetry.ingest.privacy import hash_ip, redact
from telemetry.ingest.schema import IncomingEvent
from telemetry.models import Project

log = logging.getLogger(__name__)

ACCEPTED = "accepted"
DUPLICATE = "duplicate"
LIMITED = "limited"


class ServiceUnavailable(Exception):
    """A backing service (database or cache) failed; answer 503 with Retry-After, store nothing."""

    def __init__(self, service: str) -> None:
        super().__init__(f"{service} unavailable")
        self.service = service
        self.retry_after = settings.TELEMETRY_RETRY_AFTER_SECONDS


@dataclass(slots=True)
class Outcome:
    status: str  # ACCEPTED, DUPLICATE or LIMITED
    limited_by: str = ""  # "install" or "ip" (or "key" when limited per key)
    retry_after: int = 0


@dataclass(slots=True)
class IngestResult:
    outcomes: list[Outcome] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    @property
    def accepted(self) -> int:
        return self.count(ACCEPTED)

    @property
    def duplicates(self) -> int:
        return self.count(DUPLICATE)

    @property
    def retry_after(self) -> int:
        return max((o.retry_after for o in self.outcomes if o.status == LIMITED), default=0)


def ingest(
    *,
    project: Project,
    events: list[IncomingEvent],
    client_ip: str,
    now: dt.datetime | None = None,
    limit_key: str | None = None,
) -> IngestResult:
    """Run validated events through dedupe, limits and storage; one Outcome per event, in order.

    `limit_key` replaces the client IP as the second rate-limit bucket, for senders that are one
    server behind many users (an API gateway posting with one key).
    """
    now = now or timezone.now()
    outcomes: list[Outcome | None] = [None] * len(events)
    try:
        fresh = _drop_duplicates(project, events, outcomes)
        ip_hash = hash_ip(ip=client_ip, project_id=project.pk, now=now)
    except DatabaseError as exc:
        raise _unavailable("database", exc) from exc
    allowed, refunds = _apply_limits(project, events, fresh, outcomes, ip_hash, limit_key)
    try:
        inserted = _store(project, [events[i] for i in allowed], ip_hash, now)
    except DatabaseError as exc:
        limits.refund(refunds)
        raise _unavailable("database", exc) from exc
    lost = []
    for i, ok in zip(allowed, inserted, strict=True):
        outcomes[i] = Outcome(ACCEPTED if ok else DUPLICATE)
        if not ok:  # a concurrent request stored the same event_id first
            lost.append(i)
    if lost:
        limits.refund(_charges_for(project, [events[i] for i in lost], ip_hash, limit_key))
    return IngestResult(outcomes=outcomes)  # type: ignore[arg-type]


def _unavailable(service: str, exc: Exception) -> ServiceUnavailable:
    log.warning("ingest: %s unavailable (%s)", service, type(exc).__name__)
    return ServiceUnavailable(service)


def _drop_duplicates(
    project: Project, events: list[IncomingEvent], outcomes: list[Outcome | None]
) -> list[int]:
    """Mark events whose event_id is stored already (or repeats within the batch)."""
    ids = [e.event_id for e in events if e.event_id]
    known: set[str] = set()
    if ids:
        with connection.cursor() as cursor:
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                cursor.execute(
                    "SELECT event_id FROM telemetry_event WHERE project_id = %s AND event_id IN ("
                    + ",".join(["%s"] * len(chunk))
                    + ")",
                    [project.pk, *chunk],
                )
                known.update(row[0] for row in cursor.fetchall())
    fresh = []
    for i, e in enumerate(events):
        if e.event_id and e.event_id in known:
            outcomes[i] = Outcome(DUPLICATE)
        else:
            if e.event_id:
                known.add(e.event_id)
            fresh.append(i)
    return fresh


def _groups(project: Project, ip_hash: str, limit_key: str | None) -> tuple[str, str, str]:
    second = "key" if limit_key else "ip"
    return f"tm:{project.pk}:install", f"tm:{project.pk}:{second}", limit_key or ip_hash


def _charges_for(
    project: Project,
    events: list[IncomingEvent],
    ip_hash: str,
    limit_key: str | None,
    *,
    client: bool = True,
) -> list[limits.Charge]:
    """What `events` cost: one charge per install id, plus the client's unless client=False."""
    install_group, client_group, client_value = _groups(project, ip_hash, limit_key)
    per_install: dict[str, int] = defaultdict(int)
    for e in events:
        if e.install_id:
            per_install[e.install_id] += 1
    charges = [
        limits.Charge(install_group, k, project.install_rate, n) for k, n in per_install.items()
    ]
    if client:
        charges.append(limits.Charge(client_group, client_value, project.ip_rate, len(events)))
    return charges


def _apply_limits(
    project: Project,
    events: list[IncomingEvent],
    fresh: list[int],
    outcomes: list[Outcome | None],
    ip_hash: str,
    limit_key: str | None,
) -> tuple[list[int], list[limits.Charge]]:
    """Charge the install counters, then the client counter for what passed; return survivors.

    Returns the indexes allowed and the charges to refund should storage fail.
    """
    if not fresh:
        return [], []
    install_group, client_group, client_value = _groups(project, ip_hash, limit_key)
    by_install: dict[str, list[int]] = defaultdict(list)
    for i in fresh:
        by_install[events[i].install_id].append(i)
    install_charges = [
        limits.Charge(install_group, install_id, project.install_rate, len(idx))
        for install_id, idx in by_install.items()
        if install_id
    ]
    try:
        usages = limits.charge(install_charges)
        passed: list[int] = list(by_install.get("", []))  # events with no install id
        for c, usage in zip(install_charges, usages, strict=True):
            idx = by_install[c.value]
            ok = usage.allowed(len(idx))
            passed.extend(idx[:ok])
            for i in idx[ok:]:
                outcomes[i] = Outcome(LIMITED, "install", usage.retry_after)
        passed.sort()
        if not passed:
            return [], []
        client_charge = limits.Charge(client_group, client_value, project.ip_rate, len(passed))
        (client_usage,) = limits.charge([client_charge])
    except limits.LimiterUnavailable as exc:
        if settings.RATELIMIT_FAIL_OPEN:
            log.warning("ingest: rate-limit cache unavailable (%s), failing open", exc)
            return fresh, []
        raise _unavailable("cache", exc) from exc
    ok = client_usage.allowed(len(passed))
    allowed, refused = passed[:ok], passed[ok:]
    for i in refused:
        outcomes[i] = Outcome(LIMITED, "key" if limit_key else "ip", client_usage.retry_after)
    if refused:
        # Events the client counter refused did not happen: give their install hits back.
        refused_events = [events[i] for i in refused]
        limits.refund(_charges_for(project, refused_events, ip_hash, limit_key, client=False))
    charged = _charges_for(project, [events[i] for i in allowed], ip_hash, limit_key)
    return allowed, charged


def _store(
    project: Project, events: list[IncomingEvent], ip_hash: str, now: dt.datetime
) -> list[bool]:
    """Insert events and bump rollups in one transaction; False where the event_id was taken."""
    if not events:
        return []
    ops = connection.ops
    received = ops.adapt_datetimefield_value(now)
    rows = []
    for e in events:
        properties = redact(e.properties) if project.redact_pii else e.properties
        rows.append(
            (
                project.pk,
                e.event_id,
                e.install_id,
                e.name,
                ops.adapt_datetimefield_value(e.timestamp),
                received,
                e.session_id,
                e.app_version,
                e.os,
                json.dumps(properties, separators=(",", ":")),
                ip_hash,
            )
        )
    with transaction.atomic(), connection.cursor() as cursor:
        stored_ids = _insert_events(cursor, rows)
        inserted = [e.event_id is None or e.event_id in stored_ids for e in events]
        kept = [e for e, ok in zip(events, inserted, strict=True) if ok]
        if kept:
            _bump_rollups(cursor, project, kept)
    return inserted


def _insert_events(cursor, rows: list[tuple]) -> set[str]:
    stored: set[str] = set()
    for start in range(0, len(rows), 500):
        chunk = rows[start : start + 500]
        cursor.execute(
            "INSERT INTO telemetry_event (project_id, event_id, install_id, name, timestamp,"
            " received_at, session_id, app_version, os, properties, ip_hash) VALUES "
            + ",".join(["(%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)"] * len(chunk))
            + " ON CONFLICT (project_id, event_id) WHERE event_id IS NOT NULL DO NOTHING"
            " RETURNING event_id",
            [value for row in chunk for value in row],
        )
        stored.update(r[0] for r in cursor.fetchall() if r[0] is not None)
    return stored


_INSTALL_UPSERT = """
INSERT INTO telemetry_install
    (project_id, install_id, first_seen, last_seen, first_version, last_version, os, event_count)
VALUES {values}
ON CONFLICT (project_id, install_id) DO UPDATE SET
    first_seen = CASE WHEN excluded.first_seen < telemetry_install.first_seen
        THEN excluded.first_seen ELSE telemetry_install.first_seen END,
    first_version = CASE WHEN excluded.first_seen < telemetry_install.first_seen
        AND excluded.first_version <> '' THEN excluded.first_version
        ELSE telemetry_install.first_version END,
    last_seen = CASE WHEN excluded.last_seen > telemetry_install.last_seen
        THEN excluded.last_seen ELSE telemetry_install.last_seen END,
    last_version = CASE WHEN excluded.last_seen >= telemetry_install.last_seen
        AND excluded.last_version <> '' THEN excluded.last_version
        ELSE telemetry_install.last_version END,
    os = CASE WHEN excluded.last_seen >= telemetry_install.last_seen AND excluded.os <> ''
        THEN excluded.os ELSE telemetry_install.os END,
    event_count = telemetry_install.event_count + excluded.event_count
"""

_ACTIVITY_UPSERT = """
INSERT INTO telemetry_dailyactivity (project_id, install_id, day, events, app_version, os)
VALUES {values}
ON CONFLICT (project_id, install_id, day) DO UPDATE SET
    events = telemetry_dailyactivity.events + excluded.events,
    app_version = CASE WHEN excluded.app_version <> '' THEN excluded.app_version
        ELSE telemetry_dailyactivity.app_version END,
    os = CASE WHEN excluded.os <> '' THEN excluded.os ELSE telemetry_dailyactivity.os END
"""

_COUNT_UPSERT = """
INSERT INTO telemetry_dailycount (project_id, day, name, events) VALUES {values}
ON CONFLICT (project_id, day, name) DO UPDATE SET
    events = telemetry_dailycount.events + excluded.events
"""


def _upsert(cursor, sql: str, rows: list[tuple]) -> None:
    """Run a multi-row upsert; rows are unique by conflict key (PostgreSQL insists)."""
    width = len(rows[0])
    placeholder = "(" + ",".join(["%s"] * width) + ")"
    for start in range(0, len(rows), 500):
        chunk = rows[start : start + 500]
        cursor.execute(
            sql.format(values=",".join([placeholder] * len(chunk))),
            [value for row in chunk for value in row],
        )


def _bump_rollups(cursor, project: Project, events: list[IncomingEvent]) -> None:
    ops = connection.ops
    installs: dict[str, list] = {}
    activity: dict[tuple[str, dt.date], list] = {}
    counts: dict[tuple[dt.date, str], int] = defaultdict(int)
    for e in sorted(events, key=lambda e: e.timestamp):
        day = e.timestamp.date()
        counts[(day, e.name)] += 1
        if not e.install_id:
            continue
        row = installs.get(e.install_id)
        if row is None:
            installs[e.install_id] = [
                e.timestamp,
                e.timestamp,
                e.app_version,
                e.app_version,
                e.os,
                1,
            ]
        else:
            row[1] = e.timestamp
            row[3] = e.app_version or row[3]
            row[4] = e.os or row[4]
            row[5] += 1
            if not row[2]:
                row[2] = e.app_version
        act = activity.get((e.install_id, day))
        if act is None:
            activity[(e.install_id, day)] = [1, e.app_version, e.os]
        else:
            act[0] += 1
            act[1] = e.app_version or act[1]
            act[2] = e.os or act[2]
    if installs:
        _upsert(
            cursor,
            _INSTALL_UPSERT,
            [
                (
                    project.pk,
                    install_id,
                    ops.adapt_datetimefield_value(first),
                    ops.adapt_datetimefield_value(last),
                    first_version,
                    last_version,
                    os_name,
                    n,
                )
                for install_id, (
                    first,
                    last,
                    first_version,
                    last_version,
                    os_name,
                    n,
                ) in installs.items()
            ],
        )
        _upsert(
            cursor,
            _ACTIVITY_UPSERT,
            [
                (project.pk, install_id, ops.adapt_datefield_value(day), n, version, os_name)
                for (install_id, day), (n, version, os_name) in activity.items()
            ],
        )
    _upsert(
        cursor,
        _COUNT_UPSERT,
        [
            (project.pk, ops.adapt_datefield_value(day), name, n)
            for (day, name), n in counts.items()
        ],
    )
