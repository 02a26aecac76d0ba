"""Purge benchmark on PostgreSQL + Redis: `manage.py purge_events` wall time and exactness after a
retention cut, ingest p99 during the purge, and total size over repeated purge cycles.

Scenario A (default, 1M events): one project, retention 180 days, --events spread over 180 days
(none on the three days around the 90-day line, so a purge by day and a purge by instant must
agree); retention lowered to 90; `manage.py purge_events --project …` timed as a subprocess,
whole command; events counted by UTC day before and after: no expired event may be left, no
younger one lost. Size (all partitions included) before the purge and after it + VACUUM.

Before the purge the loaded days are summarised as the nightly `refresh_aggregates` leaves a
running deployment (untimed); --no-refresh skips that (a first purge right after a bulk load).

Scenario B (--scenario B, 10M events by default): A, plus ingest p99 through the real HTTP
front door (gunicorn, a second process sending single native events with event ids) without and
during the purge, plus --cycles purge cycles (refill the expired days, purge, VACUUM, size).

    .venv/bin/python bench/purge.py                          # A, 1M events
    .venv/bin/python bench/purge.py --scenario B             # B, 10M events (about an hour)
    .venv/bin/python bench/purge.py --scenario B --events 100000   # a short check of B

Uses a fresh database (DATABASE_URL, default tm_bench_ev2_purge) and Redis db 7, both its own.
Works on a plain or a time-partitioned telemetry_event: rows go in by COPY through the parent
table, after `telemetry.services.partitions.ensure_range(start=, end=)` when events are partitioned.
"""

import argparse
import datetime as dt
import http.client
import json
import os
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/tm_bench_ev2_purge")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/7")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("DATA_DIR", "/tmp/tm-bench-purge")
os.environ.setdefault("SECRET_KEY", "bench-only")
os.environ.setdefault("SECURE_SSL_REDIRECT", "0")
os.environ.setdefault("TRUSTED_PROXIES", "127.0.0.1/32")
os.environ.setdefault("LOG_LEVEL", "WARNING")

import harness  # noqa: E402 (bench/harness.py, after the environment it passes on)

SLUG = "bench-purge"
LIVE_SLUG = "bench-purge-live"  # the concurrent ingest writes here, so day counts stay exact
NAMES = ["app.start", "app.stop", "cmd.run", "app.crash"]
SPAN_DAYS = 180
OLD_RETENTION, NEW_RETENTION = 180, 90
# Days ago left empty around the new retention line: whether a purge cuts at the start of the
# cutoff day or at the exact instant, the expired set is then the same.
GAP = {NEW_RETENTION - 1, NEW_RETENTION, NEW_RETENTION + 1}
EVENT_COLUMNS = [
    "project_id",
    "event_id",
    "install_id",
    "name",
    "timestamp",
    "received_at",
    "session_id",
    "app_version",
    "os",
    "properties",
    "ip_hash",
]
SIZE_TABLES = ["telemetry_event", "telemetry_dailyactivity", "telemetry_install"]
PORTS = range(18300, 18400)


def _admin():
    import psycopg

    url = os.environ["DATABASE_URL"].rsplit("/", 1)[0] + "/postgres"
    return psycopg.connect(url.replace("postgres://", "postgresql://"), autocommit=True)


def reset_database(url: str, *, template: str | None = None) -> None:
    """Drop and recreate this benchmark's database, empty or as a copy of `template`, and
    empty its Redis db (7, its own)."""
    name = url.rsplit("/", 1)[1]
    if not name.startswith("tm_bench_"):
        sys.exit(f"bench/purge.py drops and recreates its database: {name!r} is not tm_bench_*")
    copy = f' TEMPLATE "{template}" STRATEGY FILE_COPY' if template else ""
    with _admin() as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        c.execute(f'CREATE DATABASE "{name}"{copy}')
    import redis

    redis.Redis.from_url(os.environ["REDIS_URL"]).flushdb()


def template_day(name: str) -> str | None:
    """The UTC day a --template database was loaded on, or None when there is none."""
    with _admin() as c:
        row = c.execute(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
            [name],
        ).fetchone()
    return row[0] if row else None


def save_template(url: str, name: str, day: dt.date) -> None:
    """Copy the loaded database to `name` (file copy: no WAL for every block)."""
    from django.db import connections

    connections.close_all()
    source = url.rsplit("/", 1)[1]
    with _admin() as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        c.execute(f'CREATE DATABASE "{name}" TEMPLATE "{source}" STRATEGY FILE_COPY')
        c.execute(f"COMMENT ON DATABASE \"{name}\" IS '{day.isoformat()}'")


def ensure_partitions(start: dt.datetime, end: dt.datetime) -> str:
    """Create the event partitions for [start, end) when the code has partitions; else no-op
    (so the same benchmark runs on the code before partitions, for a side-by-side figure)."""
    try:
        from telemetry.services import partitions
    except ImportError:
        return "no partitions module"
    if not partitions.partitioned():
        return "events in one table"
    partitions.ensure_range(start=start.date(), end=end.date())
    return "ensured"


def load(project, *, events: int, days: list[int], now: dt.datetime, tag: str) -> None:
    """Write `events` events on the given days-ago (uniform over them and over each day's
    seconds, never in the future; names and installs uniform, fresh install ids per tag), plus
    the rollups the pipeline would have written for them, then ANALYZE the touched tables.

    The rows are made by PostgreSQL itself (generate_series, seeded random()) and the rollups
    counted from them by GROUP BY; what is left of the load time is the indexes' upkeep (10M
    events in 23 min on a quiet 2-vCPU machine: bench/RESULTS.md, session 6).
    """
    from django.db import connection, transaction

    today = dt.datetime.combine(now.date(), dt.time.min, tzinfo=dt.UTC)
    oldest = today - dt.timedelta(days=max(days) + 1)
    ensure_partitions(oldest, now + dt.timedelta(days=2))
    params = {
        "project": project.pk,
        "tag": tag,
        "installs": max(10, events // 50),
        "names": NAMES,
        "days": days,
        "today": today,
        "today_seconds": max(1.0, (now - today).total_seconds() - 60),
        "events": events,
    }
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT setseed(%s)", [(zlib.crc32(tag.encode()) % 1000) / 1000])
        cursor.execute(
            "CREATE TEMP TABLE bench_new ON COMMIT DROP AS"
            " SELECT %(tag)s || '_' || lpad(floor(random() * %(installs)s)::int::text, 8, '0')"
            "   AS install_id,"
            " (%(names)s::text[])[1 + floor(random() * cardinality(%(names)s::text[]))::int]"
            "   AS name,"
            " %(today)s::timestamptz - make_interval(days => ago) + make_interval(secs =>"
            "   random() * CASE WHEN ago = 0 THEN %(today_seconds)s ELSE 86399 END) AS ts"
            " FROM (SELECT (%(days)s::int[])"
            "   [1 + floor(random() * cardinality(%(days)s::int[]))::int] AS ago"
            "   FROM generate_series(1, %(events)s)) d",
            params,
        )
        cursor.execute(
            f"INSERT INTO telemetry_event ({', '.join(EVENT_COLUMNS)})"
            " SELECT %(project)s, NULL, install_id, name, ts, ts, '', '1.0', 'linux', '{}', ''"
            " FROM bench_new",
            params,
        )
        cursor.execute(
            "INSERT INTO telemetry_dailyactivity"
            " (project_id, install_id, day, events, app_version, os)"
            " SELECT %(project)s, install_id, (ts AT TIME ZONE 'UTC')::date, count(*),"
            " '1.0', 'linux' FROM bench_new GROUP BY 2, 3",
            params,
        )
        cursor.execute(
            "INSERT INTO telemetry_install (project_id, install_id, first_seen, last_seen,"
            " first_version, last_version, os, event_count)"
            " SELECT %(project)s, install_id, min(ts), max(ts), '1.0', '1.0', 'linux', count(*)"
            " FROM bench_new GROUP BY 2",
            params,
        )
        # Refills land on days whose counts exist already; the aggregates add up. Shard 0 of
        # DailyCount's (day, name) rows where the key has shards (the store after issue 10).
        cursor.execute(
            "SELECT 1 FROM information_schema.columns"
            " WHERE table_name = 'telemetry_dailycount' AND column_name = 'shard'"
        )
        key = "project_id, day, name, shard" if cursor.fetchone() else "project_id, day, name"
        cursor.execute(
            "INSERT INTO telemetry_dailycount (project_id, day, name, events)"
            " SELECT %(project)s, (ts AT TIME ZONE 'UTC')::date, name, count(*) FROM bench_new"
            f" GROUP BY 2, 3 ON CONFLICT ({key})"
            " DO UPDATE SET events = telemetry_dailycount.events + EXCLUDED.events",
            params,
        )
    analyze()


def analyze() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        for table in [*SIZE_TABLES, "telemetry_dailycount"]:
            cursor.execute(f"ANALYZE {table}")


def summarise(project, *, now: dt.datetime) -> float:
    """What the nightly `refresh_aggregates` leaves on a running deployment: the daily and
    weekly-cohort summaries of the closed days inside retention as of `now`. Untimed setup."""
    from telemetry.services import aggregates

    t0 = time.monotonic()
    project.refresh_from_db()
    aggregates.refresh_project(project=project, now=now)
    return round(time.monotonic() - t0, 1)


def vacuum() -> None:
    from django.db import connection

    with connection.cursor() as cursor:  # on a partitioned table, VACUUM covers every partition
        for table in SIZE_TABLES:
            cursor.execute(f"VACUUM (ANALYZE) {table}")


def sizes() -> dict[str, int]:
    """pg_total_relation_size summed over each table's partition tree (itself if plain)."""
    from django.db import connection

    with connection.cursor() as cursor:
        out = {}
        for table in SIZE_TABLES:
            # pg_partition_tree lists nothing for a plain table: then the table's own size.
            cursor.execute(
                "SELECT coalesce((SELECT sum(pg_total_relation_size(relid))"
                " FROM pg_partition_tree(%s::regclass)), pg_total_relation_size(%s::regclass))",
                [table, table],
            )
            out[table] = int(cursor.fetchone()[0])
        out["total"] = sum(out.values())
        return out


def counts_by_day(project) -> dict[str, dict[str, int]]:
    from django.db import connection

    out: dict[str, dict[str, int]] = {}
    with connection.cursor() as cursor:
        for key, sql in {
            "events": "SELECT (timestamp AT TIME ZONE 'UTC')::date, count(*)"
            " FROM telemetry_event WHERE project_id = %s GROUP BY 1",
            "daily_activity": "SELECT day, count(*) FROM telemetry_dailyactivity"
            " WHERE project_id = %s GROUP BY 1",
        }.items():
            cursor.execute(sql, [project.pk])
            out[key] = {d.isoformat(): n for d, n in cursor.fetchall()}
    return out


def check_exact(before: dict, after: dict, *, cutoff: dt.date) -> dict:
    """No row dated before the cutoff day left; every day from it on exactly as before."""
    report = {}
    for key in before:
        old = {d: n for d, n in before[key].items() if d < cutoff.isoformat()}
        kept = {d: n for d, n in before[key].items() if d >= cutoff.isoformat()}
        left = sum(n for d, n in after[key].items() if d < cutoff.isoformat())
        changed = {
            d: [n, after[key].get(d, 0)] for d, n in kept.items() if after[key].get(d, 0) != n
        }
        report[key] = {
            "expired_before": sum(old.values()),
            "kept_before": sum(kept.values()),
            "expired_left": left,
            "kept_after": sum(n for d, n in after[key].items() if d >= cutoff.isoformat()),
            "days_changed": changed,
            "exact": left == 0 and not changed,
        }
    return report


def manage(*args: str, timed: bool = False) -> tuple[float, str]:
    """Run manage.py as its own process; returns (wall seconds, stdout). Exits on failure."""
    t0 = time.monotonic()
    proc = subprocess.run(
        [PY, "manage.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=7200
    )
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        sys.exit(f"manage.py {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return wall, proc.stdout


def lower_retention(project, days: int) -> None:
    project.retention_days = days
    project.save(update_fields=["retention_days"])  # through the model, so signals see it


# --- the concurrent ingest (scenario B) --------------------------------------------------------


def ingest_role(port: int, key: str, stop_file: str, out_file: str) -> None:
    """POST single native events, one at a time, until stop_file appears (at most 200,000)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    samples = []
    for n in range(200_000):
        if os.path.exists(stop_file):
            break
        body = json.dumps(
            {
                "install_id": f"live_{os.getpid()}_{n % 500:05d}",
                "name": "app.start",
                "timestamp": dt.datetime.now(dt.UTC).isoformat(),
                "event_id": f"live_{os.getpid()}_{n:08d}",
            }
        ).encode()
        headers = {
            "Content-Type": "application/json",
            "Authorization": f"Bearer {key}",
            "X-Forwarded-For": f"10.77.{n // 250 % 250}.{n % 250 + 1}",
        }
        t0 = time.time()
        try:
            conn.request("POST", "/api/v1/events", body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            status = response.status
        except (OSError, http.client.HTTPException):
            conn.close()
            status = 0
        samples.append((t0, time.time() - t0, status))
    conn.close()
    Path(out_file).write_text(json.dumps(samples))


def run_ingest(port: int, key: str, during) -> list[tuple[float, float, int]]:
    """Run the ingest loop in a subprocess around `during()`; (start, latency, status) rows."""
    tmp = Path(tempfile.mkdtemp(prefix="tm-bench-purge-"))
    stop, out = tmp / "stop", tmp / "latencies.json"
    child = subprocess.Popen(
        [
            PY,
            __file__,
            "--role",
            "ingest",
            "--port",
            str(port),
            "--key",
            key,
            "--stop",
            str(stop),
            "--out",
            str(out),
        ]
    )
    try:
        time.sleep(2.0)  # let it connect and warm the workers up
        during()
        time.sleep(0.5)
    finally:
        stop.touch()
        try:
            child.wait(60)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(5)
    return json.loads(out.read_text())


def p99(values: list[float]) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * 0.99))] if values else float("nan")


# --- main --------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", choices=["A", "B"], default="A")
    parser.add_argument("--events", type=int, help="default: 1,000,000 (A), 10,000,000 (B)")
    parser.add_argument("--cycles", type=int, default=3, help="purge cycles (B)")
    parser.add_argument(
        "--refill-events", type=int, help="events per refill in cycles 2+ (B; default: as purged)"
    )
    parser.add_argument(
        "--no-refresh",
        action="store_true",
        help="leave the loaded days unsummarised (a first purge right after a bulk load)",
    )
    parser.add_argument(
        "--template",
        help="a tm_bench_* database: saved after the first run's load, then cloned by the next"
        " runs of the same UTC day instead of loading (before/after pairs at 10M)",
    )
    parser.add_argument("--baseline-seconds", type=float, default=6.0, help="ingest without purge")
    parser.add_argument("--role", default="main", choices=["main", "ingest"])
    parser.add_argument("--port", type=int)
    parser.add_argument("--key")
    parser.add_argument("--stop")
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.role == "ingest":
        ingest_role(args.port, args.key, args.stop, args.out)
        return
    events = args.events or (1_000_000 if args.scenario == "A" else 10_000_000)
    if not 1_000 <= events <= 20_000_000 or not 1 <= args.cycles <= 5:
        parser.error("--events in 1,000..20,000,000, --cycles in 1..5")

    url = os.environ["DATABASE_URL"]
    if not url.startswith("postgres"):
        sys.exit(
            "bench/purge.py measures PostgreSQL: set DATABASE_URL=postgres://…/tm_bench_ev2_purge"
        )
    if args.template and not args.template.startswith("tm_bench_"):
        parser.error("--template must name a tm_bench_* database")
    loaded_on = template_day(args.template) if args.template else None
    if loaded_on and loaded_on != dt.datetime.now(dt.UTC).date().isoformat():
        sys.exit(f"template {args.template} was loaded on {loaded_on}: load it again today")
    reset_database(url, template=args.template if loaded_on else None)
    import django

    django.setup()
    from django.core.management import call_command
    from django.utils import timezone

    from telemetry.models import Project
    from telemetry.services.projects import create_project

    call_command("migrate", verbosity=0)
    rates = {"install_rate": "1000000/h", "ip_rate": "100000000/h"}
    if loaded_on:
        project = Project.objects.get(slug=SLUG)
    else:
        project = create_project(slug=SLUG, retention_days=OLD_RETENTION, **rates).project
    now = timezone.now()
    report: dict = {
        "scenario": args.scenario,
        "command": " ".join(["bench/purge.py", *sys.argv[1:]]),
        "date": now.isoformat(timespec="seconds"),
        "events": events,
        "partitions": ensure_partitions(now - dt.timedelta(days=1), now + dt.timedelta(days=2)),
    }
    all_days = [d for d in range(SPAN_DAYS) if d not in GAP]
    old_days = [d for d in all_days if d > NEW_RETENTION]

    t0 = time.monotonic()
    if loaded_on:
        report["template"] = f"cloned from {args.template} (loaded {loaded_on})"
    else:
        load(project, events=events, days=all_days, now=now, tag="c0")
        vacuum()
        if not args.no_refresh:
            report["refresh_seconds"] = summarise(project, now=now)
        if args.template:
            save_template(url, args.template, now.date())
            report["template"] = f"saved as {args.template}"
    report["load_seconds"] = round(time.monotonic() - t0, 1)
    report["summaries"] = "none" if args.no_refresh else "as the nightly refresh leaves them"
    print(
        f"loaded {events:,} events over {SPAN_DAYS} days in {report['load_seconds']} s", flush=True
    )
    report["size_before_purge_bytes"] = sizes()
    before = counts_by_day(project)
    report["startup_seconds"] = round(manage("purge_events", "--help")[0], 2)

    lower_retention(project, NEW_RETENTION)
    cutoff = now.date() - dt.timedelta(days=NEW_RETENTION)
    _, dry = manage("purge_events", "--project", SLUG, "--dry-run", "--json")
    report["dry_run"] = json.loads(dry) if dry.strip().startswith("{") else dry.strip()

    purge_cmd = ["purge_events", "--project", SLUG, "--json"]
    if args.scenario == "A":
        wall, out = manage(*purge_cmd)
    else:
        live = create_project(slug=LIVE_SLUG, retention_days=NEW_RETENTION, **rates)
        port = harness.free_port(PORTS)
        server = harness.start_server(
            harness.gunicorn_cmd("config.wsgi:application", port, 2),
            env=dict(os.environ),
            port=port,
        )
        try:
            baseline = run_ingest(port, live.ingest_key, lambda: time.sleep(args.baseline_seconds))
            window: dict = {}

            def purge_now() -> None:
                window["start"] = time.time()
                window["wall"], window["out"] = manage(*purge_cmd)
                window["end"] = time.time()

            during = run_ingest(port, live.ingest_key, purge_now)
        finally:
            harness.stop(server)
        wall, out = window["wall"], window["out"]
        in_purge = [lat for start, lat, _ in during if window["start"] <= start <= window["end"]]
        base = [lat for _, lat, _ in baseline]
        report["ingest_p99_ms_without_purge"] = round(p99(base) * 1000, 2)
        report["ingest_p99_ms_during_purge"] = round(p99(in_purge) * 1000, 2)
        report["ingest_samples_without_during"] = [len(base), len(in_purge)]
        report["ingest_non_2xx"] = sum(1 for *_, s in baseline + during if not 200 <= s < 300)
        report["p99_ratio"] = round(
            report["ingest_p99_ms_during_purge"] / report["ingest_p99_ms_without_purge"], 2
        )
    report["purge_wall_seconds"] = round(wall, 2)
    report["purge_output"] = json.loads(out) if out.strip().startswith("{") else out.strip()
    after = counts_by_day(project)
    report["exactness"] = check_exact(before, after, cutoff=cutoff)
    vacuum()
    cycle_sizes = [sizes()]

    if args.scenario == "B":
        refill = args.refill_events or report["exactness"]["events"]["expired_before"]
        walls = [report["purge_wall_seconds"]]
        for cycle in range(1, args.cycles):
            # Refill the expired days, purge them again, VACUUM: space is reused, not added.
            load(project, events=refill, days=old_days, now=now, tag=f"c{cycle}")
            if not args.no_refresh:
                # As if these days had been summarised while still inside retention.
                summarise(project, now=now - dt.timedelta(days=NEW_RETENTION - 1))
            before = counts_by_day(project)
            wall, _ = manage(*purge_cmd)
            walls.append(round(wall, 2))
            check = check_exact(before, counts_by_day(project), cutoff=cutoff)
            report.setdefault("exact_each_cycle", []).append(
                all(v["exact"] for v in check.values())
            )
            vacuum()
            cycle_sizes.append(sizes())
        report["refill_events"] = refill
        report["purge_wall_seconds_each_cycle"] = walls
    report["size_after_each_cycle_bytes"] = cycle_sizes
    first, last = cycle_sizes[0]["total"], cycle_sizes[-1]["total"]
    report["size_after_vs_before_purge"] = round(
        first / report["size_before_purge_bytes"]["total"], 3
    )
    report["size_growth_last_vs_first_cycle"] = round(last / first, 3)
    checks = {
        "purge_wall_le_2s": all(
            w <= 2.0 for w in report.get("purge_wall_seconds_each_cycle", [wall])
        ),
        "exact": all(v["exact"] for v in report["exactness"].values())
        and all(report.get("exact_each_cycle", [True])),
        "size_after_purge_smaller": first < report["size_before_purge_bytes"]["total"],
    }
    if args.scenario == "B":
        checks["ingest_p99_during_le_1_2x"] = report["p99_ratio"] <= 1.2
        checks["ingest_zero_non_2xx"] = report["ingest_non_2xx"] == 0
        # "No creeping growth": no cycle ends more than 2 % above the first.
        checks["no_growth_over_cycles"] = all(c["total"] <= first * 1.02 for c in cycle_sizes)
    report["checks"] = checks
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
