"""ErrorDay: error groups per closed UTC day of a project, a new table derived from the raw
events, created empty. Nothing existing changes; the errors page counts raw events until the
one-minute `refresh_cohorts` job (or seed_demo) has filled it, so no answer changes either, and
going back drops only this derived table."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("telemetry", "0011_closed_periods"),
    ]

    operations = [
        migrations.CreateModel(
            name="ErrorDay",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("day", models.DateField()),
                (
                    "key",
                    models.CharField(
                        blank=True, help_text="The group's fingerprint.", max_length=12
                    ),
                ),
                ("kind", models.TextField(blank=True)),
                ("message", models.TextField(blank=True)),
                ("stack_line", models.TextField(blank=True)),
                ("events", models.PositiveIntegerField(default=0)),
                ("first_seen", models.DateTimeField(null=True)),
                ("last_seen", models.DateTimeField(null=True)),
                (
                    "installs",
                    models.JSONField(
                        default=list, help_text="Distinct install ids of the group's day."
                    ),
                ),
                ("day_events", models.PositiveBigIntegerField(default=0)),
                (
                    "project",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="telemetry.project",
                    ),
                ),
            ],
            options={
                "verbose_name_plural": "error days",
                "constraints": [
                    models.UniqueConstraint(
                        fields=("project", "day", "key"), name="errorday_unique_group"
                    )
                ],
            },
        ),
    ]
