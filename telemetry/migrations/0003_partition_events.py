"""Events v2: the dedupe key gains the timestamp, and on PostgreSQL the table becomes daily
range partitions by timestamp. Every existing row is copied into its day's partition.

On PostgreSQL the move holds an exclusive lock on the old table while it copies (ingest answers
503 meanwhile, and clients retry); measured duration at 10M rows is in bench/RESULTS.md and the
procedure in the README. SQLite keeps one plain table and only swaps the unique index.
"""

from django.db import migrations, models
from django.db.models import Q

OLD_UNIQUE = models.UniqueConstraint(
    fields=["project", "event_id"],
    condition=Q(event_id__isnull=False),
    name="event_unique_event_id_per_project",
)
NEW_UNIQUE = models.UniqueConstraint(
    fields=["project", "event_id", "timestamp"],
    condition=Q(event_id__isnull=False),
    name="event_unique_id_ts_per_project",
)

# Index definitions of the partitioned parent; each partition gets its own copy.
PARENT_INDEXES = [
    'CREATE UNIQUE INDEX event_unique_id_ts_per_project ON telemetry_event'
    ' (project_id, event_id, "timestamp") WHERE event_id IS NOT NULL',
    "CREATE INDEX event_project_received ON telemetry_event (project_id, received_at)",
    'CREATE INDEX event_project_name_ts ON telemetry_event (project_id, name, "timestamp")',
    'CREATE INDEX event_project_install_ts ON telemetry_event'
    ' (project_id, install_id, "timestamp")',
]
PLAIN_INDEXES = [
    'CREATE UNIQUE INDEX event_unique_event_id_per_project ON telemetry_event'
    ' (project_id, event_id) WHERE event_id IS NOT NULL',
    "CREATE INDEX event_project_received ON telemetry_event (project_id, received_at)",
    'CREATE INDEX event_project_name_ts ON telemetry_event (project_id, name, "timestamp")',
    'CREATE INDEX event_project_install_ts ON telemetry_event'
    ' (project_id, install_id, "timestamp")',
]
FK = (
    "ALTER TABLE telemetry_event ADD CONSTRAINT telemetry_event_project_id_fk_v2"
    " FOREIGN KEY (project_id) REFERENCES telemetry_project (id) DEFERRABLE INITIALLY DEFERRED"
)


def _columns(cursor) -> str:
    cursor.execute(
        "SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) FROM pg_attribute"
        " WHERE attrelid = 'telemetry_event_old'::regclass AND attnum > 0 AND NOT attisdropped"
    )
    return cursor.fetchone()[0]


def forwards(apps, schema_editor):
    connection = schema_editor.connection
    Event = apps.get_model("telemetry", "Event")
    if connection.vendor != "postgresql":
        schema_editor.remove_constraint(Event, OLD_UNIQUE)
        schema_editor.add_constraint(Event, NEW_UNIQUE)
        return
    from telemetry.services import partitions

    with connection.cursor() as cursor:
        cursor.execute("LOCK TABLE telemetry_event IN ACCESS EXCLUSIVE MODE")
        cursor.execute("ALTER TABLE telemetry_event RENAME TO telemetry_event_old")
        # Index names are per schema: free them for the new parent (the old table goes anyway).
        cursor.execute(
            "SELECT indexrelid::regclass::text, conname FROM pg_index"
            " LEFT JOIN pg_constraint ON conindid = indexrelid AND conrelid = indrelid"
            " WHERE indrelid = 'telemetry_event_old'::regclass"
        )
        for index, constraint in cursor.fetchall():
            if constraint:
                cursor.execute(f"ALTER TABLE telemetry_event_old DROP CONSTRAINT {constraint}")
            else:
                cursor.execute(f"DROP INDEX {index}")
        cursor.execute(
            "CREATE TABLE telemetry_event (LIKE telemetry_event_old INCLUDING DEFAULTS)"
            ' PARTITION BY RANGE ("timestamp")'
        )
        # PostgreSQL 15 has no identity columns on partitioned tables: a plain sequence.
        cursor.execute("CREATE SEQUENCE telemetry_event_id_seq_v2 OWNED BY telemetry_event.id")
        cursor.execute(
            "ALTER TABLE telemetry_event ALTER COLUMN id"
            " SET DEFAULT nextval('telemetry_event_id_seq_v2')"
        )
        cursor.execute('ALTER TABLE telemetry_event ADD PRIMARY KEY (id, "timestamp")')
        import datetime as dt

        today = dt.datetime.now(dt.UTC).date()
        ahead = {today + dt.timedelta(days=i) for i in range(-1, partitions.DAYS_AHEAD + 1)}
        days = set(partitions.event_days(cursor, "telemetry_event_old")) | ahead
        for day in sorted(days):
            cursor.execute(partitions.create_sql(day))
        columns = _columns(cursor)
        cursor.execute(
            f"INSERT INTO telemetry_event ({columns}) SELECT {columns} FROM telemetry_event_old"
        )
        cursor.execute(
            "SELECT setval('telemetry_event_id_seq_v2',"
            " GREATEST((SELECT max(id) FROM telemetry_event_old), 1))"
        )
        for sql in PARENT_INDEXES:
            cursor.execute(sql)
        cursor.execute(FK)
        cursor.execute("DROP TABLE telemetry_event_old")
        cursor.execute("ANALYZE telemetry_event")


def backwards(apps, schema_editor):
    connection = schema_editor.connection
    Event = apps.get_model("telemetry", "Event")
    if connection.vendor != "postgresql":
        schema_editor.remove_constraint(Event, NEW_UNIQUE)
        schema_editor.add_constraint(Event, OLD_UNIQUE)
        return
    with connection.cursor() as cursor:
        cursor.execute("LOCK TABLE telemetry_event IN ACCESS EXCLUSIVE MODE")
        cursor.execute("ALTER TABLE telemetry_event RENAME TO telemetry_event_old")
        for name in ("event_unique_id_ts_per_project", "event_project_received",
                     "event_project_name_ts", "event_project_install_ts"):
            cursor.execute(f"DROP INDEX {name}")
        cursor.execute(
            "CREATE TABLE telemetry_event (LIKE telemetry_event_old INCLUDING DEFAULTS)"
        )
        cursor.execute("ALTER TABLE telemetry_event ALTER COLUMN id DROP DEFAULT")
        cursor.execute(
            "ALTER TABLE telemetry_event ALTER COLUMN id ADD GENERATED BY DEFAULT AS IDENTITY"
        )
        cursor.execute("ALTER TABLE telemetry_event ADD PRIMARY KEY (id)")
        columns = _columns(cursor)
        # Copies of one event_id at two timestamps were allowed by v2; the plain key keeps one.
        cursor.execute(
            f"INSERT INTO telemetry_event ({columns}) SELECT DISTINCT ON"
            " (project_id, event_id, CASE WHEN event_id IS NULL THEN id END)"
            f" {columns} FROM telemetry_event_old"
            " ORDER BY project_id, event_id, CASE WHEN event_id IS NULL THEN id END, id"
        )
        cursor.execute(
            "SELECT setval(pg_get_serial_sequence('telemetry_event', 'id'),"
            " GREATEST((SELECT max(id) FROM telemetry_event), 1))"
        )
        for sql in PLAIN_INDEXES:
            cursor.execute(sql)
        cursor.execute(FK)
        cursor.execute("DROP TABLE telemetry_event_old CASCADE")
        cursor.execute("ANALYZE telemetry_event")


class Migration(migrations.Migration):
    atomic = True

    dependencies = [
        ("telemetry", "0002_period_activity"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.RemoveConstraint(model_name="event", name=OLD_UNIQUE.name),
                migrations.AddConstraint(model_name="event", constraint=NEW_UNIQUE),
            ],
            database_operations=[migrations.RunPython(forwards, backwards)],
        ),
    ]
