"""Daily activity moves into daily partitions by `day` on PostgreSQL, like events (0003), so the
purge drops expired days of it too instead of deleting them row by row. Every row is copied with
its id; SQLite keeps its plain table. The model does not change."""

import datetime as dt

from django.db import migrations


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    from telemetry.services import partitions

    if partitions.partitioned(partitions.ACTIVITY):
        return  # migrated back and forth: reversing this leaves the partitions in place
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("SELECT DISTINCT day FROM telemetry_dailyactivity")
        days = {row[0] for row in cursor.fetchall()}
        today = dt.datetime.now(dt.UTC).date()
        days |= {today + dt.timedelta(days=i) for i in range(-1, partitions.DAYS_AHEAD + 1)}
        partitions.move_into_partitions(
            cursor, table=partitions.ACTIVITY, key="day", days=days
        )


class Migration(migrations.Migration):
    dependencies = [
        ("telemetry", "0007_cohort_activity"),
    ]

    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
