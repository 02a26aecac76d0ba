"""The events' foreign key to their project goes, on PostgreSQL.

PostgreSQL checked it for every event stored: a lookup of the project and a row lock on it, a
fifth of the server's CPU per batch event (bench/RESULTS.md, session 10), and once more for
every row of a partition the importer attaches. Nothing depends on it: deleting a project
deletes its events through Django's cascade, as before; a row that lands while its project is
being deleted is removed by the next purge (telemetry.services.purge).

A catalog change only: no row is touched. Going back deletes the rows of projects that no
longer exist, then adds the constraint again. SQLite keeps the constraint it was created with:
it costs little there and removing it would rebuild the table.
"""

from django.db import migrations, models

FK_NAME = "telemetry_event_project_id_fk_v2"


def drop(apps, schema_editor) -> None:
    if schema_editor.connection.vendor != "postgresql":
        return
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE telemetry_event DROP CONSTRAINT IF EXISTS {FK_NAME}")


def restore(apps, schema_editor) -> None:
    if schema_editor.connection.vendor != "postgresql":
        return
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(
            "DELETE FROM telemetry_event e WHERE NOT EXISTS"
            " (SELECT 1 FROM telemetry_project p WHERE p.id = e.project_id)"
        )
        cursor.execute(
            f"ALTER TABLE telemetry_event ADD CONSTRAINT {FK_NAME} FOREIGN KEY (project_id)"
            " REFERENCES telemetry_project (id) DEFERRABLE INITIALLY DEFERRED"
        )


class Migration(migrations.Migration):
    dependencies = [
        ("telemetry", "0013_event_properties_statistics"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="event",
                    name="project",
                    field=models.ForeignKey(
                        db_constraint=False,
                        on_delete=models.deletion.CASCADE,
                        related_name="+",
                        to="telemetry.project",
                    ),
                )
            ],
            database_operations=[migrations.RunPython(drop, restore)],
        )
    ]
