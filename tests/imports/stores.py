"""The old stores, built from their real schemas (CONTRACTS Part B) with rows in the exact shape
each worker wrote them: VoiceMode's JSON strings, Baofeng's millisecond times and 0/1 flags."""

import datetime as dt
import hashlib
import json
import sqlite3
import uuid
from pathlib import Path

# cloudflare-worker/schema.sql (VoiceMode)
VOICEMODE_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    event_id TEXT PRIMARY KEY,
    telemetry_id TEXT NOT NULL,
    timestamp TEXT NOT NULL,
    created_at TEXT NOT NULL,
    environment TEXT NOT NULL,
    usage TEXT NOT NULL,
    client_ip_hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_events_telemetry_id ON events(telemetry_id);
CREATE INDEX IF NOT EXISTS idx_events_timestamp ON events(timestamp);
CREATE INDEX IF NOT EXISTS idx_events_created_at ON events(created_at);
CREATE INDEX IF NOT EXISTS idx_events_telemetry_timestamp ON events(telemetry_id, timestamp);
"""

# cloudflare/log-intake-worker/schema.sql + migrations/001_telemetry_events.sql (Baofeng)
BAOFENG_SCHEMA = """
CREATE TABLE IF NOT EXISTS client_logs (
    id TEXT PRIMARY KEY,
    received_at_ms INTEGER NOT NULL,
    occurred_at TEXT,
    event_type TEXT,
    message TEXT,
    error_name TEXT,
    stack TEXT,
    model TEXT,
    write_mode INTEGER,
    connected INTEGER,
    app_version TEXT,
    user_agent TEXT,
    page_url TEXT,
    log_lines_json TEXT,
    origin TEXT,
    ip_hash TEXT
);
CREATE INDEX IF NOT EXISTS idx_client_logs_received_at ON client_logs(received_at_ms DESC);
CREATE INDEX IF NOT EXISTS idx_client_logs_event_type ON client_logs(event_type);
CREATE TABLE IF NOT EXISTS telemetry_events (
    id TEXT PRIMARY KEY,
    received_at_ms INTEGER NOT NULL,
    occurred_at TEXT NOT NULL,
    event_type TEXT NOT NULL,
    session_id TEXT,
    message TEXT,
    error_name TEXT,
    stack TEXT,
    model TEXT,
    write_mode INTEGER,
    connected INTEGER,
    app_version TEXT,
    log_lines_json TEXT,
    metadata_json TEXT
);
CREATE INDEX IF NOT EXISTS idx_telemetry_events_received ON telemetry_events(received_at_ms DESC);
CREATE INDEX IF NOT EXISTS idx_telemetry_events_type_received
    ON telemetry_events(event_type, received_at_ms DESC);
CREATE UNIQUE INDEX IF NOT EXISTS idx_telemetry_events_flash_session
    ON telemetry_events(event_type, session_id)
    WHERE event_type = 'flash_success' AND session_id IS NOT NULL;
"""


def iso(moment: dt.datetime) -> str:
    """Python's isoformat() with microseconds and +00:00, as the VoiceMode client sends."""
    return moment.astimezone(dt.UTC).isoformat()


def js_iso(moment: dt.datetime) -> str:
    """new Date().toISOString(), as the workers stamp created_at."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.") + (
        f"{moment.microsecond // 1000:03d}Z"
    )


def ms(moment: dt.datetime) -> int:
    return int(moment.timestamp() * 1000)


def voicemode_row(when: dt.datetime, telemetry_id: str | None = None, **overrides) -> dict:
    """One row as the worker inserted it: the client's deterministic event_id, its environment
    and usage objects as JSON strings, and the unsalted SHA-256 prefix of the IP."""
    telemetry_id = telemetry_id or str(uuid.uuid4())
    timestamp = iso(when)
    row = {
        "event_id": hashlib.sha256(f"{telemetry_id}:{timestamp}".encode()).hexdigest()[:16],
        "telemetry_id": telemetry_id,
        "timestamp": timestamp,
        "created_at": js_iso(when + dt.timedelta(seconds=2)),
        "environment": json.dumps(
            {
                "os": "Linux",
                "install_method": "uv",
                "mcp_host": None,
                "exec_source": "mcp",
                "version": "7.0.1",
            }
        ),
        "usage": json.dumps(
            {
                "total_sessions": 5,
                "total_exchanges": 40,
                "duration_distribution": {"<1min": 1, "1-5min": 3, "5-10min": 1},
                "exchanges_per_session": {"1-5": 2, "6-10": 3},
                "transport_usage": {"local": 4, "livekit": 1},
                "provider_usage": {"tts": {"kokoro": 30}, "stt": {"whisper": 10}},
            }
        ),
        "client_ip_hash": hashlib.sha256(b"203.0.113.7").hexdigest()[:16],
    }
    row.update(overrides)
    return row


def baofeng_flash(when: dt.datetime, session: str, **overrides) -> dict:
    """A telemetry_events row of a flash the web client reported (/event)."""
    row = {
        "id": str(uuid.uuid4()),
        "received_at_ms": ms(when + dt.timedelta(milliseconds=350)),
        "occurred_at": js_iso(when),
        "event_type": "flash_success",
        "session_id": session,
        "message": "Flash complete",
        "error_name": None,
        "stack": None,
        "model": "UV-5RM",
        "write_mode": 1,
        "connected": 1,
        "app_version": "abc1234",
        "log_lines_json": json.dumps(["connected", "wrote logo"]),
        "metadata_json": json.dumps({"source": "web-v2"}),
    }
    row.update(overrides)
    return row


def baofeng_error(when: dt.datetime, **overrides) -> dict:
    """A client_logs row of a legacy /client-log error report (ip_hash column filled, as the
    worker's schema allows)."""
    row = {
        "id": str(uuid.uuid4()),
        "received_at_ms": ms(when + dt.timedelta(milliseconds=120)),
        "occurred_at": js_iso(when),
        "event_type": "connect_error",
        "message": "Serial port busy",
        "error_name": "NetworkError",
        "stack": "at connect (serial.ts:42)",
        "model": "UV-5RM",
        "write_mode": 0,
        "connected": 0,
        "app_version": "abc1234",
        "user_agent": "",
        "page_url": "",
        "log_lines_json": json.dumps(["opening port"]),
        "origin": "",
        "ip_hash": hashlib.sha256(b"198.51.100.9").hexdigest(),
    }
    row.update(overrides)
    return row


def write_d1(path: Path, schema: str, tables: dict[str, list[dict]], *, dump: bool = False) -> Path:
    """A local D1 (a SQLite file), or with `dump` the .sql `wrangler d1 export` writes."""
    conn = sqlite3.connect(":memory:" if dump else path)
    conn.executescript(schema)
    for table, rows in tables.items():
        for row in rows:
            names = ", ".join(row)
            conn.execute(
                f"INSERT INTO {table} ({names}) VALUES ({', '.join('?' * len(row))})",
                list(row.values()),
            )
    conn.commit()
    if dump:
        lines = ["PRAGMA defer_foreign_keys=TRUE;"]
        lines += [s for s in conn.iterdump() if s not in ("BEGIN TRANSACTION;", "COMMIT;")]
        path.write_text("\n".join(lines) + "\n")
    conn.close()
    return path


def write_lines(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def domscribe_record(week: str, session_id: str, first_seen: dt.datetime, **overrides) -> dict:
    """A `wrangler kv key list` entry with its value, as the worker put it."""
    value = {
        "protocol_version": "1.0.0",
        "daemon_version": "0.4.2",
        "platform": "linux",
        "node_version": "v22.3.0",
        "primary_framework": "react",
        "first_seen_at": js_iso(first_seen),
    }
    value.update(overrides)
    return {"key": f"session:{week}:{session_id}", "value": json.dumps(value)}


def axiom_record(when: dt.datetime, **overrides) -> dict:
    """A WorldMonitor `request` event as an Axiom export line (`_sysTime` added by Axiom)."""
    record = {
        "_time": js_iso(when),
        "_sysTime": js_iso(when + dt.timedelta(seconds=1)),
        "event_type": "request",
        "request_id": f"fra1::{uuid.uuid4().hex[:12]}",
        "domain": "market",
        "route": "/api/market/v1/quotes",
        "method": "GET",
        "status": 200,
        "duration_ms": 42,
        "customer_id": "user_2abcdefgh",
        "auth_kind": "clerk_jwt",
        "tier": 1,
        "country": "DE",
        "reason": "ok",
    }
    record.update(overrides)
    return record
