# Issue 13: members may rotate keys (per project); an ingest key's last use.

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("telemetry", "0005_count_shards")]

    operations = [
        migrations.AddField(
            model_name="project",
            name="members_can_rotate_keys",
            field=models.BooleanField(
                default=False,
                help_text="Members may issue and revoke this project's ingest keys from the dashboard.",
            ),
        ),
        migrations.AddField(
            model_name="ingestkey",
            name="last_used_at",
            field=models.DateTimeField(blank=True, editable=False, null=True),
        ),
    ]
