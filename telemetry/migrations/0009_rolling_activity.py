"""The closed-day rollup (RollingActivity): a new table derived from DailyActivity, created empty.
Nothing existing changes; readers count from the activity rows until the one-minute
`refresh_cohorts` job (or seed_demo) has filled it, so no answer changes either."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("telemetry", "0008_partition_activity"),
    ]

    operations = [
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
