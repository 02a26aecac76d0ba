"""ClosedPeriod: active installs, new installs and events per closed day, ISO week and month of a
project, a new table derived from the activity rollups, created empty. Nothing existing changes;
readers count from the activity rows until the one-minute `refresh_cohorts` job (or seed_demo)
has filled it, so no answer changes either, and going back drops only this derived table."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("telemetry", "0010_rolling_activity"),
    ]

    operations = [
        migrations.CreateModel(
            name="ClosedPeriod",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "period",
                    models.CharField(
                        choices=[("d", "UTC day"), ("w", "ISO week"), ("m", "month")],
                        max_length=1,
                    ),
                ),
                (
                    "start",
                    models.DateField(help_text="The day, the Monday of the ISO week, or the 1st."),
                ),
                ("active_installs", models.PositiveIntegerField(default=0)),
                ("new_installs", models.PositiveIntegerField(default=0)),
                ("events", models.PositiveBigIntegerField(default=0)),
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
                "verbose_name_plural": "closed periods",
                "constraints": [
                    models.UniqueConstraint(
                        fields=("project", "period", "start"), name="closedperiod_unique_start"
                    )
                ],
            },
        ),
    ]
