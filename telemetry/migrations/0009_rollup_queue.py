"""The rollup queue: on PostgreSQL each stored event's rollup row waits here until
`rollups.fold_rollups` folds it into Install, DailyActivity, PeriodActivity and DailyCount, so
ingest appends one small row instead of four upserts. SQLite keeps writing rollups with the
events and leaves the table empty. Before this migration every rollup was written inline, so
there is nothing to move; going back folds what is queued first, so nothing is lost either way."""

from django.db import migrations, models

# Vacuum early: the table is emptied every few seconds.
TUNE = (
    "ALTER TABLE telemetry_rollupqueue SET (autovacuum_vacuum_scale_factor = 0,"
    " autovacuum_vacuum_threshold = 10000, autovacuum_vacuum_insert_scale_factor = 0,"
    " autovacuum_vacuum_insert_threshold = 10000)"
)


def tune(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(TUNE)


def fold_queued(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    from telemetry.ingest import rollups

    rollups.fold_rollups()


class Migration(migrations.Migration):
    dependencies = [
        ("telemetry", "0008_partition_activity"),
    ]

    operations = [
        migrations.CreateModel(
            name="RollupQueue",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("project_id", models.BigIntegerField()),
                ("install_id", models.CharField(blank=True, max_length=64)),
                ("name", models.CharField(max_length=64)),
                ("timestamp", models.DateTimeField()),
                ("app_version", models.CharField(blank=True, max_length=64)),
                ("os", models.CharField(blank=True, max_length=64)),
            ],
        ),
        # Reversed last to first: going back folds the queue before its table goes.
        migrations.RunPython(tune, fold_queued),
    ]
