"""Breakdowns: events in a date range grouped by one property (any dotted path into
`properties`, or the top-level name/app_version/os), with a metric per group.

This is the one selector that reads events' JSON, in SQL per backend (PostgreSQL jsonb operators,
SQLite json_extract/json_each), always bounded by the project and the date range. A map-valued
property ({"openai": 3, "kokoro": 2}) expands into one group per key, weighted by its value.
"""

import datetime as dt
import math
import re
from dataclasses import dataclass

from django.db.models import Sum

from telemetry.analytics import db
from telemetry.analytics.periods import (
    BadRequest,
    as_date,
    bucket_sql,
    day_start,
    db_datetime,
    label,
    periods,
    utc_date_sql,
)
from telemetry.models import DailyCount, Project

TOP_LEVEL = ("name", "app_version", "os")
# Ids must never become group labels: a breakdown by install would list pseudonymous ids.
FORBIDDEN = ("install_id", "event_id", "session_id", "ip_hash", "id", "project_id")
METRICS = ("events", "installs")
PATH_METRICS = ("sum", "avg", "p50", "p95")
MAX_GROUPS = 50
_SEGMENT = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True)
class Metric:
    kind: str  # events, installs, sum, avg, p50, p95
    path: tuple[str, ...] = ()

    def __str__(self) -> str:
        return self.kind + (":" + ".".join(self.path) if self.path else "")


def parse_path(value: str | None, *, what: str = "property") -> tuple[str, ...]:
    if not value:
        raise BadRequest(
            "invalid_property", f"{what} is required, a dotted path like environment.os"
        )
    parts = tuple(value.split("."))
    if parts[0] == "properties" and len(parts) > 1:
        parts = parts[1:]
    if len(parts) > 5 or not all(_SEGMENT.match(p) for p in parts):
        raise BadRequest(
            "invalid_property",
            f"{what} {value!r} must be up to 5 dot-separated keys of letters, digits, _ or -",
        )
    if len(parts) == 1 and parts[0] in FORBIDDEN and not value.startswith("properties."):
        raise BadRequest("invalid_property", f"{parts[0]} is an identifier and cannot be grouped")
    return parts


def parse_metric(value: str | None) -> Metric:
    if not value:
        return Metric("events")
    if value in METRICS:
        return Metric(value)
    kind, _, path = value.partition(":")
    if kind not in PATH_METRICS or not path:
        raise BadRequest(
            "invalid_metric",
            "metric must be events, installs, or sum|avg|p50|p95 followed by :<property path>",
        )
    parts = parse_path(path, what="metric path")
    if len(parts) == 1 and parts[0] in TOP_LEVEL and not path.startswith("properties."):
        raise BadRequest("invalid_metric", f"{parts[0]} is not numeric")
    return Metric(kind, parts)


def _pg(path: tuple[str, ...]) -> tuple[str, list]:
    return "e.properties #> %s::text[]", [list(path)]


def _sqlite_path(path: tuple[str, ...]) -> str:
    return "$" + "".join(f'."{p}"' for p in path)


def _sources(prop: tuple[str, ...], explicit: bool) -> tuple[list[str], list[list]]:
    """SELECT lists (key, weight) and their params for the scalar and the map branch."""
    if len(prop) == 1 and prop[0] in TOP_LEVEL and not explicit:
        return [f"e.{prop[0]} AS k, 1 AS w"], [[]]
    if db.vendor() == "postgresql":
        expr, params = _pg(prop)
        scalar = (
            "COALESCE(e.properties #>> %s::text[], 'null') AS k, 1 AS w",
            [list(prop)],
            f"jsonb_typeof({expr}) NOT IN ('object', 'array')",
            params,
        )
        mapped = (
            "j.key AS k, CASE WHEN jsonb_typeof(j.value) = 'number'"
            " THEN (j.value #>> '{}')::float8 ELSE 1 END AS w",
            [],
            f"jsonb_typeof({expr}) = 'object'",
            params,
            f" CROSS JOIN LATERAL jsonb_each({expr}) j",
            params,
        )
    else:
        path = _sqlite_path(prop)
        scalar = (
            "CASE json_type(e.properties, %s) WHEN 'true' THEN 'true' WHEN 'false' THEN 'false'"
            " WHEN 'null' THEN 'null' ELSE CAST(json_extract(e.properties, %s) AS TEXT) END AS k,"
            " 1 AS w",
            [path, path],
            "json_type(e.properties, %s) NOT IN ('object', 'array')",
            [path],
        )
        mapped = (
            "j.key AS k, CASE WHEN j.type IN ('integer', 'real') THEN j.value ELSE 1 END AS w",
            [],
            "json_type(e.properties, %s) = 'object'",
            [path],
            ", json_each(e.properties, %s) j",
            [path],
        )
    return [scalar, mapped], []


def _metric_sql(metric: Metric) -> tuple[str, list]:
    if not metric.path:
        return ("CAST(NULL AS float8)" if db.vendor() == "postgresql" else "NULL"), []
    if db.vendor() == "postgresql":
        return (
            "CASE WHEN jsonb_typeof(e.properties #> %s::text[]) = 'number'"
            " THEN (e.properties #>> %s::text[])::float8 END",
            [list(metric.path), list(metric.path)],
        )
    path = _sqlite_path(metric.path)
    return (
        "CASE WHEN json_type(e.properties, %s) IN ('integer', 'real')"
        " THEN CAST(json_extract(e.properties, %s) AS REAL) END",
        [path, path],
    )


def percentile(values: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (PostgreSQL's percentile_cont)."""
    if not values:
        return None
    values = sorted(values)
    pos = q * (len(values) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return values[lo] + (values[hi] - values[lo]) * (pos - lo)


def _number(value) -> float | int | None:
    if value is None:
        return None
    value = float(value)
    return int(value) if value.is_integer() else round(value, 4)


def breakdown(
    *,
    project: Project,
    prop: str,
    metric: str | None,
    start: dt.date,
    end: dt.date,
    interval: str | None = None,
) -> dict:
    """Groups by `prop` over events timestamped in [start, end] (UTC days), largest first.

    For a map-valued property, `events` is the sum of the map's values (e.g. TTS calls per
    provider) and `installs` the installs that sent the key at all.
    """
    path = parse_path(prop)
    explicit = prop.startswith("properties.")
    m = parse_metric(metric)
    schema = project.property_schema or {}
    top_level = len(path) == 1 and path[0] in TOP_LEVEL and not explicit
    if not top_level and project.strict and schema and path[0] not in schema:
        raise BadRequest("unknown_property", f"{prop!r} is not in this project's property schema")

    pg = db.vendor() == "postgresql"
    bucket = bucket_sql(utc_date_sql("e.timestamp"), interval) if interval else "NULL"
    metric_sql, metric_params = _metric_sql(m)
    base = "e.project_id = %s AND e.timestamp >= %s AND e.timestamp < %s"
    base_params = [
        project.pk,
        db_datetime(day_start(start)),
        db_datetime(day_start(end + dt.timedelta(days=1))),
    ]
    branches, params = [], []
    if top_level:
        branches.append(
            f"SELECT e.{path[0]} AS k, 1 AS w, e.install_id AS i, {metric_sql} AS m,"
            f" {bucket} AS p FROM telemetry_event e WHERE {base}"
        )
        params += metric_params + base_params
    else:
        (scalar, mapped), _ = _sources(path, explicit)
        select, sel_params, cond, cond_params = scalar
        branches.append(
            f"SELECT {select}, e.install_id AS i, {metric_sql} AS m, {bucket} AS p"
            f" FROM telemetry_event e WHERE {base} AND {cond}"
        )
        params += sel_params + metric_params + base_params + cond_params
        select, sel_params, cond, cond_params, join, join_params = mapped
        branches.append(
            f"SELECT {select}, e.install_id AS i, {metric_sql} AS m, {bucket} AS p"
            f" FROM telemetry_event e{join} WHERE {base} AND {cond}"
        )
        params += sel_params + metric_params + join_params + base_params + cond_params
    union = " UNION ALL ".join(branches)
    pct = ""
    if m.kind in ("p50", "p95") and pg:
        q = 0.5 if m.kind == "p50" else 0.95
        pct = f", percentile_cont({q}) WITHIN GROUP (ORDER BY m)"
    if pct:
        sql = (
            "SELECT p, k, SUM(w), COUNT(*), COUNT(DISTINCT NULLIF(i, '')), SUM(m), COUNT(m)"
            f"{pct} FROM ({union}) x GROUP BY p, k"
        )
    else:
        # Group by install first, then count the groups: a hash aggregate instead of sorting
        # every event for COUNT(DISTINCT) (2.5 s -> 0.9 s for 1.1M events, bench/RESULTS.md).
        sql = (
            "SELECT p, k, SUM(sw), CAST(SUM(n) AS BIGINT), COUNT(NULLIF(i, '')), SUM(sm),"
            " CAST(SUM(cm) AS BIGINT) FROM ("
            "SELECT p, k, i, SUM(w) AS sw, COUNT(*) AS n, SUM(m) AS sm, COUNT(m) AS cm"
            f" FROM ({union}) x GROUP BY p, k, i) y GROUP BY p, k"
        )
    with db.connection().cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
        samples: dict[tuple, list[float]] = {}
        if m.kind in ("p50", "p95") and not pg:
            cursor.execute(f"SELECT p, k, m FROM ({union}) x WHERE m IS NOT NULL", params)
            for p, k, value in cursor.fetchall():
                samples.setdefault((p, k), []).append(float(value))

    def value_of(row) -> float | int | None:
        p, k, weight, _events, installs, total, counted = row[:7]
        if m.kind == "events":
            return _number(weight)
        if m.kind == "installs":
            return installs
        if m.kind == "sum":
            return _number(total) if counted else None
        if m.kind == "avg":
            return _number(float(total) / counted) if counted else None
        if pg:
            return _number(row[7])
        return _number(percentile(samples.get((p, k), []), 0.5 if m.kind == "p50" else 0.95))

    # Totals per group over the whole range (percentiles need the samples, not sums).
    groups: dict[str, list] = {}
    for row in rows:
        g = groups.setdefault(str(row[1]) if row[1] is not None else "null", [])
        g.append(row)
    if interval:
        totals = _totals(project, path, explicit, m, start, end, top_level) if rows else {}
    else:
        totals = {
            key: {
                "value": value_of(rs[0]),
                "events": rs[0][3],
                "installs": rs[0][4],
            }
            for key, rs in groups.items()
        }
    if not totals and not top_level and path[0] not in schema:
        raise BadRequest(
            "unknown_property",
            f"no event between {start} and {end} has the property {'.'.join(path)!r}",
        )
    ordered = sorted(totals.items(), key=lambda kv: (-(kv[1]["value"] or 0), kv[0]))
    top = ordered[:MAX_GROUPS]
    result = {
        "property": ".".join(path) if not top_level else path[0],
        "metric": str(m),
        "start": start.isoformat(),
        "end": end.isoformat(),
        "rows": [{"key": k, **v} for k, v in top],
        "truncated": len(ordered) > MAX_GROUPS,
    }
    if interval:
        keys = [k for k, _ in top]
        buckets = periods(start, end, interval)
        cells: dict[tuple[dt.date, str], float | int | None] = {}
        for row in rows:
            key = str(row[1]) if row[1] is not None else "null"
            cells[(as_date(row[0]), key)] = value_of(row)
        result["interval"] = interval
        result["series"] = [
            {
                "period": label(b, interval),
                "values": {k: cells.get((b, k), 0 if m.kind in METRICS else None) for k in keys},
            }
            for b in buckets
        ]
    return result


def _totals(project, path, explicit, m, start, end, top_level) -> dict:
    """The range-wide row per group (distinct installs and percentiles do not add up)."""
    prop = ("properties." if explicit else "") + ".".join(path)
    whole = breakdown(project=project, prop=prop, metric=str(m), start=start, end=end)
    return {r["key"]: {k: v for k, v in r.items() if k != "key"} for r in whole["rows"]}


def events_by_name(*, project: Project, start: dt.date, end: dt.date) -> dict:
    """Events per name in [start, end] from the DailyCount rollup (days x names rows, fast at
    any size): the breakdown page's answer before a question is asked. Distinct installs need
    the raw events, so they are left out (None); the "Events by name" preset counts them."""
    rows = (
        DailyCount.objects.filter(project=project, day__gte=start, day__lte=end)
        .values("name")
        .annotate(n=Sum("events"))
        .values_list("name", "n")
    )
    ordered = sorted(((name, int(n)) for name, n in rows), key=lambda kv: (-kv[1], kv[0]))
    return {
        "property": "name",
        "metric": "events",
        "start": start.isoformat(),
        "end": end.isoformat(),
        "rows": [
            {"key": k, "value": n, "events": n, "installs": None} for k, n in ordered[:MAX_GROUPS]
        ],
        "truncated": len(ordered) > MAX_GROUPS,
    }
