"""DRF views of the analytics API: active installs, retention and breakdowns of one project.

Read with the project's operator token (`Authorization: Bearer op_…`) or as a logged-in member.
Each view parses its query, calls one selector in telemetry.analytics, and answers JSON.
"""

import datetime as dt

from django.conf import settings
from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    inline_serializer,
)
from rest_framework import serializers
from rest_framework.authentication import BaseAuthentication
from rest_framework.exceptions import NotAuthenticated, NotFound
from rest_framework.response import Response
from rest_framework.views import APIView

from telemetry.analytics import active, breakdown, db, periods, retention
from telemetry.analytics.access import project_for
from telemetry.analytics.periods import BadRequest
from telemetry.http import compact_json
from telemetry.ingest.auth import operator_token_matches
from telemetry.models import Project


class OperatorTokenOrSession(BaseAuthentication):
    """The logged-in session user, if any; the operator token is checked against the project
    in `resolve_project`, since a token belongs to one project, not to a user."""

    def authenticate(self, request):
        user = getattr(request._request, "user", None)
        if user is not None and user.is_authenticated and user.is_active:
            return (user, None)
        return None

    def authenticate_header(self, request) -> str:
        return 'Bearer realm="analytics"'


class OperatorTokenScheme(OpenApiAuthenticationExtension):
    """Documents OperatorTokenOrSession in the schema (without it, `check --deploy` warns)."""

    target_class = OperatorTokenOrSession
    name = "operatorToken"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "The project's operator token (op_…), or a member's session.",
        }


def _bearer(request) -> str | None:
    header = request.META.get("HTTP_AUTHORIZATION", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip() or None
    return None


def resolve_project(request, slug: str) -> Project:
    """The project if the operator token matches or the logged-in user is a member; 404/401."""
    token = _bearer(request)
    if token is not None:
        project = Project.objects.filter(slug=slug).first()
        if project is None:
            raise NotFound(f"no project {slug!r}")
        if not operator_token_matches(project, token):
            raise NotAuthenticated("the operator token does not match this project")
        return project
    user = request.user
    if user is None:
        raise NotAuthenticated("send the project's operator token as Authorization: Bearer")
    project = project_for(user=user, slug=slug)
    if project is None:
        raise NotFound(f"no project {slug!r}")
    return project


def bad_request(exc: BadRequest) -> Response:
    return Response({"error": exc.code, "detail": exc.detail}, status=400)


_error = inline_serializer(
    "AnalyticsError", {"error": serializers.CharField(), "detail": serializers.CharField()}
)
_errors = {
    400: OpenApiResponse(_error, description="malformed date, interval, property or metric"),
    401: OpenApiResponse(_error, description="no or wrong operator token, not logged in"),
    404: OpenApiResponse(_error, description="no such project, or not a member"),
    503: OpenApiResponse(
        _error, description="query_timeout: the query ran past its deadline; ask for less"
    ),
}
_range = [
    OpenApiParameter("start", OpenApiTypes.DATE, description="first UTC day (YYYY-MM-DD)"),
    OpenApiParameter("end", OpenApiTypes.DATE, description="last UTC day, default today"),
]


class AnalyticsView(APIView):
    authentication_classes = [OperatorTokenOrSession]
    permission_classes: list = []

    def dispatch(self, request, *args, **kwargs):
        # Reads go to the replica when it is up (else the primary), under the request deadline.
        try:
            return db.run(super().dispatch, request, *args, **kwargs)
        except db.AnalyticsTimeout:
            return compact_json(
                503,
                {
                    "error": "query_timeout",
                    "detail": "this query needed more than "
                    f"{settings.TELEMETRY_ANALYTICS_TIMEOUT_SECONDS:g} s; ask for a shorter range"
                    " or fewer cohorts",
                },
                retry_after=settings.TELEMETRY_RETRY_AFTER_SECONDS,
            )

    def now(self) -> dt.datetime:
        return timezone.now()


class ActiveView(AnalyticsView):
    """Active installs, new installs and events per calendar day, ISO week or month."""

    @extend_schema(
        operation_id="analytics_active",
        parameters=[
            OpenApiParameter("interval", str, enum=list(periods.INTERVALS), default="day"),
            *_range,
        ],
        responses={
            200: inline_serializer(
                "ActiveSeries",
                {
                    "interval": serializers.CharField(),
                    "start": serializers.DateField(),
                    "end": serializers.DateField(),
                    "series": serializers.ListField(
                        child=inline_serializer(
                            "ActivePeriod",
                            {
                                "period": serializers.CharField(help_text="2026-11-25, 2026-W47"),
                                "active_installs": serializers.IntegerField(allow_null=True),
                                "new_installs": serializers.IntegerField(),
                                "events": serializers.IntegerField(),
                            },
                        )
                    ),
                },
            ),
            **_errors,
        },
    )
    def get(self, request, slug: str) -> Response:
        project = resolve_project(request, slug)
        q = request.query_params
        try:
            interval = periods.parse_interval(q.get("interval"))
            default_days = {"day": 30, "week": 84, "month": 365}[interval]
            start, end = periods.resolve_range(
                start=periods.parse_day(q.get("start"), "start"),
                end=periods.parse_day(q.get("end"), "end"),
                now=self.now(),
                default_days=default_days,
            )
        except BadRequest as exc:
            return bad_request(exc)
        series = active.active_series(project=project, interval=interval, start=start, end=end)
        return Response(
            {
                "interval": interval,
                "start": start.isoformat(),
                "end": end.isoformat(),
                "series": [
                    {
                        "period": p.label,
                        "active_installs": p.active_installs,
                        "new_installs": p.new_installs,
                        "events": p.events,
                    }
                    for p in series
                ],
            }
        )


class RetentionView(AnalyticsView):
    """Cohorts by the week (or day) of each install's first event, and how many came back."""

    @extend_schema(
        operation_id="analytics_retention",
        parameters=[
            OpenApiParameter("period", str, enum=["week", "day"], default="week"),
            OpenApiParameter(
                "cohorts", int, description="how many cohorts (week ≤ 52, default 12; day ≤ 90)"
            ),
        ],
        responses={
            200: inline_serializer(
                "Retention",
                {
                    "period": serializers.CharField(),
                    "cohorts": serializers.ListField(
                        child=inline_serializer(
                            "Cohort",
                            {
                                "cohort": serializers.CharField(),
                                "size": serializers.IntegerField(),
                                "retained": serializers.ListField(
                                    child=serializers.IntegerField(allow_null=True)
                                ),
                            },
                        )
                    ),
                },
            ),
            **_errors,
        },
    )
    def get(self, request, slug: str) -> Response:
        project = resolve_project(request, slug)
        q = request.query_params
        try:
            period = periods.parse_interval(
                q.get("period"), default=periods.WEEK, allowed=(periods.WEEK, periods.DAY)
            )
            raw = q.get("cohorts") or str(retention.DEFAULT_COHORTS[period])
            if not raw.isdigit() or int(raw) < 1:
                raise BadRequest("invalid_cohorts", "cohorts must be a positive integer")
        except BadRequest as exc:
            return bad_request(exc)
        rows = retention.retention(
            project=project, period=period, cohorts=int(raw[:4]), now=self.now()
        )
        return Response(
            {
                "period": period,
                "cohorts": [
                    {"cohort": c.label, "size": c.size, "retained": c.retained} for c in rows
                ],
            }
        )


class BreakdownView(AnalyticsView):
    """Events grouped by one property, with a count, distinct installs or a numeric aggregate."""

    @extend_schema(
        operation_id="analytics_breakdown",
        parameters=[
            OpenApiParameter(
                "property",
                str,
                required=True,
                description="dotted path into properties (environment.os, "
                "usage.provider_usage.tts) or name, app_version, os",
            ),
            OpenApiParameter(
                "metric",
                str,
                description="events (default), installs, sum:<path>, avg:<path>, p50:<path>, "
                "p95:<path>",
            ),
            *_range,
            OpenApiParameter(
                "interval", str, enum=list(periods.INTERVALS), description="adds a time series"
            ),
        ],
        responses={200: OpenApiTypes.OBJECT, **_errors},
    )
    def get(self, request, slug: str) -> Response:
        project = resolve_project(request, slug)
        q = request.query_params
        try:
            interval = q.get("interval") or None
            if interval is not None:
                interval = periods.parse_interval(interval)
            start, end = periods.resolve_range(
                start=periods.parse_day(q.get("start"), "start"),
                end=periods.parse_day(q.get("end"), "end"),
                now=self.now(),
                default_days=30,
            )
            result = breakdown.breakdown(
                project=project,
                prop=q.get("property", ""),
                metric=q.get("metric"),
                start=start,
                end=end,
                interval=interval,
            )
        except BadRequest as exc:
            return bad_request(exc)
        return Response(result)


active_view = ActiveView.as_view()
retention_view = RetentionView.as_view()
breakdown_view = BreakdownView.as_view()
