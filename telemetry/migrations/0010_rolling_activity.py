"""The closed-day rollups: RollingActivity (per project and closed day) and OsActivity (per
install and OS, its last closed active day), new tables derived from DailyActivity, created
empty. Nothing existing changes; readers count from the activity rows until the one-minute
`refresh_cohorts` job (or seed_demo) has filled them, so no answer changes either."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("telemetry", "0009_rollup_queue"),
    ]

    operations = [
        migrations.CreateModel(
            name="OsActivity",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("install_id", models.CharField(max_length=64)),
                ("os", models.CharField(blank=True, max_length=64)),
                ("last_day", models.DateField()),
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
                "verbose_name_plural": "OS activity",
                "indexes": [
                    models.Index(fields=["project", "last_day"], name="osactivity_project_last_day")
                ],
                "constraints": [
                    models.UniqueConstraint(
                        fields=("project", "install_id", "os"), name="osactivity_unique_install_os"
                    )
                ],
            },
        ),
        migrations.CreateModel(
            name="RollingActivity",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("day", models.DateField()),
                ("dau", models.PositiveIntegerField(default=0)),
                ("wau", models.PositiveIntegerField(default=0)),
                ("mau", models.PositiveIntegerField(default=0)),
                (
                    "versions",
                    models.JSONField(
                        default=dict, help_text="{app_version: installs active that day}"
                    ),
                ),
                ("fingerprint", models.CharField(max_length=128)),
                (
                    "day_events",
                    models.PositiveBigIntegerField(
                        default=0,
                        help_text="Events of the day itself when its activity went into OsActivity.",
                    ),
                ),
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
                "verbose_name_plural": "rolling activity",
                "constraints": [
                    models.UniqueConstraint(
                        fields=("project", "day"), name="rolling_unique_project_day"
                    )
                ],
            },
        ),
    ]
