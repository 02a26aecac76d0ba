"""The admin index's telemetry overview, rendered by the index template itself (the admin
site's index view has no hook of ours)."""

from django import template
from django.utils import timezone

from telemetry.analytics import db, summary

register = template.Library()


@register.inclusion_tag("admin/telemetry/_overview.html")
def telemetry_overview() -> dict:
    try:
        return {"overview": db.run(summary.overview, now=timezone.now())}
    except db.AnalyticsTimeout:
        return {"overview": None}
