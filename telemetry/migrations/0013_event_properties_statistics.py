"""ANALYZE skips the events' `properties` column (statistics target 0) on PostgreSQL: on the
parent, every existing partition (ALTER TABLE recurses) and, through
telemetry.services.partitions, every partition made from now on. No plan reads those statistics
(filters on `properties` are on its keys, expressions estimated without them) and gathering
them was half of each partition's ANALYZE. A catalog change only: no row is touched, inserts
are not blocked (SHARE UPDATE EXCLUSIVE), and going back restores the default target.
SQLite has no per-column targets: nothing to do there."""

from django.db import migrations


def set_target(target: int):
    def run(apps, schema_editor) -> None:
        if schema_editor.connection.vendor != "postgresql":
            return
        with schema_editor.connection.cursor() as cursor:
            cursor.execute(
                f"ALTER TABLE telemetry_event ALTER COLUMN properties SET STATISTICS {target}"
            )

    return run


class Migration(migrations.Migration):
    dependencies = [
        ("telemetry", "0012_error_days"),
    ]

    operations = [migrations.RunPython(set_target(0), set_target(-1))]
