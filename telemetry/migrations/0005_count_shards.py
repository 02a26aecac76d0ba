"""DailyCount gains a shard in its key, so concurrent writers of one (day, name) stop queueing
on a single row. Existing rows become shard 0; every reader sums."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("telemetry", "0004_public_min_installs"),
    ]

    operations = [
        migrations.AddField(
            model_name="dailycount",
            name="shard",
            field=models.PositiveSmallIntegerField(db_default=0, default=0),
        ),
        migrations.RemoveConstraint(model_name="dailycount", name="count_unique_day_name"),
        migrations.AddConstraint(
            model_name="dailycount",
            constraint=models.UniqueConstraint(
                fields=("project", "day", "name", "shard"), name="count_unique_day_name_shard"
            ),
        ),
    ]
