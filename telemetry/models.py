"""The platform's data: projects and their keys, events, installs, rollups, salts, task runs.

Rollups (Install, DailyActivity, DailyCount) are written only by telemetry.ingest.pipeline, in the
same transaction as the events they count; DailySummary and CohortSummary outlive the purge.
"""

from django.conf import settings
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Q


class Contract(models.TextChoices):
    NATIVE = "native", "Native API"
    VOICEMODE = "voicemode", "VoiceMode"
    DOMSCRIBE = "domscribe", "Domscribe"
    BAOFENG = "baofeng", "Baofeng flasher"
    PRYX = "pryx", "Pryx"
    AXIOM = "axiom", "Axiom-style ingest"


def default_retention_days() -> int:
    return settings.TELEMETRY_DEFAULT_RETENTION_DAYS


class Project(models.Model):
    """One maintainer's product and everything that decides how its events are accepted."""

    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    contract = models.CharField(max_length=16, choices=Contract.choices, default=Contract.NATIVE)
    hostnames = models.JSONField(
        default=list, blank=True, help_text="Hosts routed to this project at the root path."
    )
    operator_token_hash = models.CharField(max_length=64, blank=True, editable=False)
    retention_days = models.PositiveIntegerField(default=default_retention_days)
    install_rate = models.CharField(
        max_length=16, default="10/h", help_text="Events per install id, e.g. 10/h, 600/d."
    )
    ip_rate = models.CharField(
        max_length=16, default="100/h", help_text="Events per client IP, e.g. 100/h."
    )
    allowed_origins = models.JSONField(default=list, blank=True)
    property_schema = models.JSONField(
        default=dict,
        blank=True,
        help_text='{"key": {"type": "string|number|integer|boolean|object|array", '
        '"max_length": 100, "enum": [...]}}',
    )
    strict = models.BooleanField(default=False, help_text="Reject properties not in the schema.")
    redact_pii = models.BooleanField(default=False)
    public_page = models.BooleanField(default=False)
    public_min_installs = models.PositiveSmallIntegerField(
        default=5,
        validators=[MinValueValidator(1)],
        help_text="Public page: cells counting fewer installs than this are shown as '< k'.",
    )
    members_can_rotate_keys = models.BooleanField(
        default=False,
        help_text="Members may issue and revoke this project's ingest keys from the dashboard.",
    )
    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL, blank=True, related_name="telemetry_projects"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return f"{self.name} ({self.slug})"


class IngestKey(models.Model):
    """A write-only key for one project; only its SHA-256 is stored."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="ingest_keys")
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    prefix = models.CharField(
        max_length=12, editable=False, help_text="First characters, to tell keys apart."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    # Written by telemetry.ingest.auth at most once per key per few minutes, not per event.
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.project.slug})"


class Event(models.Model):
    """One accepted event; contract-specific fields live in `properties`, named as sent.

    On PostgreSQL the table is range-partitioned by `timestamp`, one partition per UTC day
    (telemetry.services.partitions); its primary key there is (id, timestamp).
    """

    # No foreign key in the database on PostgreSQL (migration 0014): checking it cost a
    # lookup and a row lock on the project for every event stored, a fifth of the server's work
    # per event. Deleting a project still deletes its events (Django's cascade); a row that
    # lands while its project is being deleted is removed by the rollup fold (its queue row has
    # no project), or else by the purge.
    project = models.ForeignKey(
        Project, on_delete=models.CASCADE, related_name="+", db_constraint=False
    )
    event_id = models.CharField(max_length=64, null=True, blank=True)
    install_id = models.CharField(max_length=64, blank=True)
    name = models.CharField(max_length=64)
    timestamp = models.DateTimeField()
    received_at = models.DateTimeField()
    session_id = models.CharField(max_length=64, blank=True)
    app_version = models.CharField(max_length=64, blank=True)
    os = models.CharField(max_length=64, blank=True)
    properties = models.JSONField(default=dict, blank=True)
    ip_hash = models.CharField(max_length=32, blank=True)

    class Meta:
        constraints = [
            # The dedupe key includes the timestamp because PostgreSQL partitions events by it
            # (a unique index must hold the partition key): a retry resends the same body, so
            # the same (event_id, timestamp). Copies in flight are stopped earlier by the claim.
            models.UniqueConstraint(
                fields=["project", "event_id", "timestamp"],
                condition=Q(event_id__isnull=False),
                name="event_unique_id_ts_per_project",
            )
        ]
        indexes = [
            # The explorer and exports page by (project, received_at).
            models.Index(fields=["project", "received_at"], name="event_project_received"),
            models.Index(fields=["project", "name", "timestamp"], name="event_project_name_ts"),
            models.Index(
                fields=["project", "install_id", "timestamp"], name="event_project_install_ts"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} from {self.install_id or '-'} at {self.timestamp:%Y-%m-%d %H:%M:%S}"


class Install(models.Model):
    """First and last sight of one pseudonymous install id, kept in step with ingest."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    install_id = models.CharField(max_length=64)
    first_seen = models.DateTimeField()
    last_seen = models.DateTimeField()
    first_version = models.CharField(max_length=64, blank=True)
    last_version = models.CharField(max_length=64, blank=True)
    os = models.CharField(max_length=64, blank=True)
    event_count = models.PositiveBigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["project", "install_id"], name="install_unique_per_project"
            )
        ]
        indexes = [
            models.Index(fields=["project", "first_seen"], name="install_project_first_seen"),
            models.Index(fields=["project", "last_seen"], name="install_project_last_seen"),
        ]

    def __str__(self) -> str:
        return self.install_id


class DailyActivity(models.Model):
    """One row per (project, install, UTC day) with an event: the source of DAU/WAU/MAU."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    install_id = models.CharField(max_length=64)
    day = models.DateField()
    events = models.PositiveIntegerField(default=0)
    app_version = models.CharField(max_length=64, blank=True)
    os = models.CharField(max_length=64, blank=True)

    class Meta:
        verbose_name_plural = "daily activity"
        constraints = [
            models.UniqueConstraint(
                fields=["project", "install_id", "day"], name="activity_unique_install_day"
            )
        ]
        indexes = [models.Index(fields=["project", "day"], name="activity_project_day")]

    def __str__(self) -> str:
        return f"{self.install_id} on {self.day}"


class PeriodActivity(models.Model):
    """One row per (project, install, ISO week or calendar month) with an event.

    WAU and MAU series and weekly cohorts count these rows instead of a COUNT(DISTINCT) over
    every day's activity, which measured ten times too slow at 10M events (bench/RESULTS.md).
    """

    WEEK = "w"
    MONTH = "m"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    install_id = models.CharField(max_length=64)
    period = models.CharField(max_length=1, choices=[(WEEK, "ISO week"), (MONTH, "month")])
    start = models.DateField(help_text="Monday of the ISO week, or the 1st of the month.")

    class Meta:
        verbose_name_plural = "period activity"
        constraints = [
            # Column order serves "count per period start" as an index-only scan.
            models.UniqueConstraint(
                fields=["project", "period", "start", "install_id"],
                name="period_unique_install_period",
            )
        ]

    def __str__(self) -> str:
        return f"{self.install_id} in {self.period}{self.start}"


class DailyCount(models.Model):
    """Events per (project, UTC day, event name), spread over a few shard rows: read the sum.

    One row per (day, name) would be updated by every event of that name, and concurrent
    writers queue on its lock until each commits (bench/RESULTS.md); the shard, picked from the
    install id, lets them write side by side.
    """

    SHARDS = 16

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    name = models.CharField(max_length=64)
    shard = models.PositiveSmallIntegerField(default=0, db_default=0)
    events = models.PositiveBigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["project", "day", "name", "shard"], name="count_unique_day_name_shard"
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} on {self.day}: {self.events}"


class DailySummary(models.Model):
    """Anonymous per-day totals snapshotted before the purge, so old charts keep their totals."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    active_installs = models.PositiveIntegerField(default=0)
    new_installs = models.PositiveIntegerField(default=0)
    events = models.PositiveBigIntegerField(default=0)

    class Meta:
        verbose_name_plural = "daily summaries"
        constraints = [
            models.UniqueConstraint(fields=["project", "day"], name="summary_unique_project_day")
        ]

    def __str__(self) -> str:
        return f"{self.project.slug} {self.day}"


class CohortSummary(models.Model):
    """Anonymous weekly cohort sizes and retained counts, kept past the raw-data purge."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    week_start = models.DateField()
    size = models.PositiveIntegerField(default=0)
    retained = models.JSONField(default=list)

    class Meta:
        verbose_name_plural = "cohort summaries"
        constraints = [
            models.UniqueConstraint(
                fields=["project", "week_start"], name="cohort_unique_project_week"
            )
        ]

    def __str__(self) -> str:
        return f"{self.project.slug} week of {self.week_start}"


class Batch(models.Model):
    """A batch posted to a front door that promises a batch id and a final status (Pryx)."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    batch_id = models.CharField(max_length=64)
    event_count = models.PositiveIntegerField(default=0)
    accepted = models.PositiveIntegerField(default=0)
    status = models.CharField(max_length=16, default="completed")
    received_at = models.DateTimeField()

    class Meta:
        verbose_name_plural = "batches"
        constraints = [
            models.UniqueConstraint(fields=["project", "batch_id"], name="batch_unique_per_project")
        ]
        indexes = [models.Index(fields=["project", "received_at"], name="batch_project_received")]

    def __str__(self) -> str:
        return f"{self.batch_id} ({self.status})"


class IpSalt(models.Model):
    """The secret mixed into IP hashes for one UTC day; destroyed after 48 hours."""

    day = models.DateField(unique=True)
    salt = models.CharField(max_length=64, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"salt for {self.day}"


class TaskRun(models.Model):
    """One run of a scheduled job: what it did, how long it took, what went wrong."""

    task = models.CharField(max_length=64)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    rows = models.BigIntegerField(default=0)
    duration_ms = models.PositiveIntegerField(default=0)
    ok = models.BooleanField(default=False)
    error = models.TextField(blank=True)
    details = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-started_at"]
        indexes = [models.Index(fields=["task", "started_at"], name="taskrun_task_started")]

    def __str__(self) -> str:
        return f"{self.task} at {self.started_at:%Y-%m-%d %H:%M:%S}"


class CohortActivity(models.Model):
    """One retention cell: installs of a cohort (the ISO week or UTC day of their first event)
    active in a later week or day. Rebuilt set-based from Install + PeriodActivity/DailyActivity
    by telemetry.services.cohorts, so the retention grid reads O(cells) rows."""

    WEEK = "w"
    DAY = "d"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    period = models.CharField(max_length=1, choices=[(WEEK, "ISO week"), (DAY, "UTC day")])
    cohort = models.DateField(help_text="First day of the cohort's week or day.")
    start = models.DateField(help_text="First day of the week or day it was active in.")
    installs = models.PositiveIntegerField(default=0)

    class Meta:
        verbose_name_plural = "cohort activity"
        constraints = [
            models.UniqueConstraint(
                fields=["project", "period", "cohort", "start"], name="cohort_unique_cell"
            )
        ]

    def __str__(self) -> str:
        return f"{self.period}{self.cohort} active {self.start}: {self.installs}"


class RollingActivity(models.Model):
    """One closed UTC day of a project: DAU, rolling WAU and MAU (the 7 and 30 days ending on
    it) and active installs per app version, counted from DailyActivity by
    telemetry.services.rolling so the overview reads O(days) rows instead of a month of activity.

    `fingerprint` says what the counts were made from (the events counted in the 30 days and the
    oldest activity day inside them); a reader uses a row only while it still matches, so a late
    event or a purge falls back to counting until the next refresh."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    dau = models.PositiveIntegerField(default=0)
    wau = models.PositiveIntegerField(default=0)
    mau = models.PositiveIntegerField(default=0)
    versions = models.JSONField(default=dict, help_text="{app_version: installs active that day}")
    fingerprint = models.CharField(max_length=128)
    day_events = models.PositiveBigIntegerField(
        default=0, help_text="Events of the day itself when its activity went into OsActivity."
    )

    class Meta:
        verbose_name_plural = "rolling activity"
        constraints = [
            models.UniqueConstraint(fields=["project", "day"], name="rolling_unique_project_day")
        ]

    def __str__(self) -> str:
        return f"{self.day}: DAU {self.dau}, WAU {self.wau}, MAU {self.mau}"


class OsActivity(models.Model):
    """Per (project, install, OS): the last closed day the install was active with that OS, kept
    with RollingActivity, so "installs per OS up to today" reads the month's active installs
    instead of every activity row of the month (telemetry.analytics.active.os_breakdown)."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    install_id = models.CharField(max_length=64)
    os = models.CharField(max_length=64, blank=True)
    last_day = models.DateField()

    class Meta:
        verbose_name_plural = "OS activity"
        constraints = [
            models.UniqueConstraint(
                fields=["project", "install_id", "os"], name="osactivity_unique_install_os"
            )
        ]
        indexes = [models.Index(fields=["project", "last_day"], name="osactivity_project_last_day")]

    def __str__(self) -> str:
        return f"{self.install_id} on {self.os or '-'} until {self.last_day}"


class ClosedPeriod(models.Model):
    """One closed UTC day, ISO week or month of a project: its active installs, new installs and
    events, counted from DailyActivity/PeriodActivity, Install and DailyCount by
    telemetry.services.rolling, so the activity series read one row per closed period instead of
    a period's worth of activity rows.

    `fingerprint` says what the counts were made from: every event counted from the oldest
    activity day through the period's last day, and that oldest day. A late event on or before
    the period (which may also move an install's first day out of it), a purge or a history
    import changes it, and readers count such a period until the next refresh."""

    DAY, WEEK, MONTH = "d", "w", "m"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    period = models.CharField(
        max_length=1, choices=[(DAY, "UTC day"), (WEEK, "ISO week"), (MONTH, "month")]
    )
    start = models.DateField(help_text="The day, the Monday of the ISO week, or the 1st.")
    active_installs = models.PositiveIntegerField(default=0)
    new_installs = models.PositiveIntegerField(default=0)
    events = models.PositiveBigIntegerField(default=0)
    fingerprint = models.CharField(max_length=128)

    class Meta:
        verbose_name_plural = "closed periods"
        constraints = [
            models.UniqueConstraint(
                fields=["project", "period", "start"], name="closedperiod_unique_start"
            )
        ]

    def __str__(self) -> str:
        return f"{self.period}{self.start}: {self.active_installs} active"


class ErrorDay(models.Model):
    """One error group on one closed UTC day of a project: its events, first and last seen and
    the installs it reached, counted from the raw error-like events by
    telemetry.services.error_days so the errors page reads O(days x groups) rows for closed days
    and scans raw events only for today (and any stale day). A closed day with no error-like
    event holds one row with an empty `key`, so it is known to be counted.

    `day_events` says what the row was counted from: the day's events in DailyCount. A late event
    moves it and readers count that day until the next refresh; a purge drops the rows with the
    day's events, and deleting an install drops the rows of the days it had events on, so no
    install id outlives its events here."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    key = models.CharField(max_length=12, blank=True, help_text="The group's fingerprint.")
    kind = models.TextField(blank=True)
    message = models.TextField(blank=True)
    stack_line = models.TextField(blank=True)
    events = models.PositiveIntegerField(default=0)
    first_seen = models.DateTimeField(null=True)
    last_seen = models.DateTimeField(null=True)
    installs = models.JSONField(default=list, help_text="Distinct install ids of the group's day.")
    day_events = models.PositiveBigIntegerField(default=0)

    class Meta:
        verbose_name_plural = "error days"
        constraints = [
            models.UniqueConstraint(fields=["project", "day", "key"], name="errorday_unique_group")
        ]

    def __str__(self) -> str:
        return f"{self.day} {self.kind}: {self.events}"


class RollupState(models.Model):
    """When a derived rollup of a project was last rebuilt, and from what: the fingerprint of
    the rollups it was computed from, so readers can tell whether it is still exact."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    name = models.CharField(max_length=32)
    fingerprint = models.CharField(max_length=128)
    as_of = models.DateField(help_text="The UTC day the rebuild's periods were counted up to.")
    refreshed_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "name"], name="rollupstate_unique_name")
        ]

    def __str__(self) -> str:
        return f"{self.name} of {self.project_id} at {self.refreshed_at:%Y-%m-%d %H:%M:%S}"


class RollupQueue(models.Model):
    """What one stored event adds to the rollups, until `rollups.fold_rollups` folds it in
    (PostgreSQL; SQLite writes rollups with the event and leaves this table empty). Written and
    read by raw SQL only; no foreign key, so ingest checks nothing more per event, and the fold
    drops the rows of a project deleted meanwhile."""

    project_id = models.BigIntegerField()
    install_id = models.CharField(max_length=64, blank=True)
    name = models.CharField(max_length=64)
    timestamp = models.DateTimeField()
    app_version = models.CharField(max_length=64, blank=True)
    os = models.CharField(max_length=64, blank=True)

    def __str__(self) -> str:
        return f"{self.name} of project {self.project_id} at {self.timestamp:%Y-%m-%d %H:%M:%S}"
