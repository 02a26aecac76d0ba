"""Dashboard views: each resolves the project for the logged-in user (404 if not theirs),
parses its form, calls the analytics selectors and renders. Chart data goes into JSON blocks
that static/dashboard/charts.js reads, so the CSP can forbid inline scripts."""

import datetime as dt
import functools

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse, HttpResponseNotAllowed, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.decorators import method_decorator

from telemetry import reveal
from telemetry.analytics import active, breakdown, db, errors, events, public, retention
from telemetry.analytics.access import (
    may_rotate_keys,
    project_for,
    public_project,
    visible_projects,
)
from telemetry.analytics.periods import BadRequest, today
from telemetry.contracts import clients
from telemetry.dashboard.forms import BreakdownForm, EventFilterForm, RangeForm
from telemetry.dashboard.security import limit_logins, with_csp
from telemetry.models import Contract, Project
from telemetry.services import projects as project_service

# A starter request per contract, for the empty state: path under the front door and a body.
FIRST_EVENT = {
    Contract.NATIVE: (
        "/api/v1/events",
        '{"install_id":"inst_12345678","name":"app.start","timestamp":"%(now)s"}',
    ),
    Contract.VOICEMODE: (
        "/telemetry",
        '{"event_id":"e-1","telemetry_id":'
        '"6f1c2d3e-0000-4000-8000-000000000001","timestamp":"%(now)s",'
        '"environment":{"os":"Linux","version":"8.0.0"},"usage":{}}',
    ),
    Contract.DOMSCRIBE: (
        "/v1/session",
        '{"protocol_version":"1.0.0","daemon_version":"1.0.0",'
        '"session_id":"sess_12345678","platform":"linux",'
        '"node_version":"v22.0.0","primary_framework":"react"}',
    ),
    Contract.BAOFENG: (
        "/event",
        '{"event_type":"flash_success","occurred_at":"%(now)s",'
        '"message":"ok","session_id":"sess_12345678"}',
    ),
    Contract.PRYX: (
        "/api/telemetry/ingest",
        '{"device_id":"dev_12345678","level":"info","category":"app","timestamp":"%(now)s"}',
    ),
    Contract.AXIOM: ("/v1/datasets/events/ingest", '[{"_time":"%(now)s","event":"app.start"}]'),
}


def not_found(request) -> HttpResponse:
    # Rendered, not raised: the project-wide middleware turns raised exceptions into 503s.
    return render(request, "dashboard/not_found.html", status=404)


def analytics_page(view):
    """Run the view's reads on the analytics database (replica or primary) under the request's
    deadline; past it, a readable 503 page that offers the last 7 days instead of a dead worker."""

    @functools.wraps(view)
    def wrapped(request, *args, **kwargs):
        try:
            return db.run(view, request, *args, **kwargs)
        except db.AnalyticsTimeout:
            end = today(timezone.now())
            shorter = f"{request.path}?start={end - dt.timedelta(days=6)}&end={end}"
            ctx = {
                "seconds": f"{settings.TELEMETRY_ANALYTICS_TIMEOUT_SECONDS:g}",
                "shorter": shorter,
            }
            response = render(request, "dashboard/too_slow.html", ctx, status=503)
            response["Retry-After"] = str(settings.TELEMETRY_RETRY_AFTER_SECONDS)
            return response

    return wrapped


def project_view(view):
    """Resolve <slug> to a project the user may read and pass it on; 404 otherwise, the same
    for a project that does not exist and one the user is not a member of."""

    @functools.wraps(view)
    def wrapped(request, slug: str, *args, **kwargs):
        project = project_for(user=request.user, slug=slug)
        if project is None:
            return not_found(request)
        return view(request, project, *args, **kwargs)

    return wrapped


def _context(request, project: Project, form: RangeForm, default_days: int = 30) -> dict:
    start, end = form.range(today=today(timezone.now()), default_days=default_days)
    length = (end - start).days + 1
    prev_end = start - dt.timedelta(days=1)
    return {
        "project": project,
        "projects": visible_projects(user=request.user),
        "form": form,
        "start": start,
        "end": end,
        "days": length,
        "prev_start": prev_end - dt.timedelta(days=length - 1),
        "prev_end": prev_end,
    }


def _first_event(request, project: Project) -> dict:
    path, body = FIRST_EVENT.get(project.contract, FIRST_EVENT[Contract.NATIVE])
    base = "" if project.contract == Contract.NATIVE else f"/p/{project.slug}"
    now = timezone.now().replace(microsecond=0).isoformat().replace("+00:00", "Z")
    return {
        "url": request.build_absolute_uri(base + path),
        "body": body % {"now": now},
        "needs_key": project.contract in (Contract.NATIVE, Contract.AXIOM),
    }


def _change(current, previous):
    if current is None or previous is None:
        return None
    if not previous:
        return None if not current else 100.0
    return round(100 * (current - previous) / previous, 1)


@login_required
def index(request):
    first = visible_projects(user=request.user).first()
    if first is not None:
        return redirect("dashboard-overview", slug=first.slug)
    return with_csp(render)(request, "dashboard/no_projects.html", {"projects": []})


@login_required
@with_csp
@analytics_page
@project_view
def overview(request, project: Project):
    ctx = _context(request, project, RangeForm(request.GET or None))
    data = active.overview(project=project, start=ctx["start"], end=ctx["end"])
    cur, prev = data["current"], data["previous"]
    ctx["cards"] = [
        {
            "id": "dau",
            "label": "DAU",
            "value": cur.dau,
            "change": _change(cur.dau, prev.dau),
            "hint": f"installs active on {cur.day}",
        },
        {
            "id": "wau",
            "label": "WAU",
            "value": cur.wau,
            "change": _change(cur.wau, prev.wau),
            "hint": "installs active in the 7 days to the end date",
        },
        {
            "id": "mau",
            "label": "MAU",
            "value": cur.mau,
            "change": _change(cur.mau, prev.mau),
            "hint": "installs active in the 30 days to the end date",
        },
        {
            "id": "stickiness",
            "label": "Stickiness",
            "value": f"{cur.stickiness * 100:.1f}%" if cur.stickiness is not None else "-",
            "change": _change(cur.stickiness, prev.stickiness),
            "hint": "DAU / MAU",
        },
        {
            "id": "new",
            "label": "New installs",
            "value": data["totals"]["new_installs"],
            "change": _change(
                data["totals"]["new_installs"], data["previous_totals"]["new_installs"]
            ),
            "hint": "first event in range",
        },
        {
            "id": "events",
            "label": "Events",
            "value": data["totals"]["events"],
            "change": _change(data["totals"]["events"], data["previous_totals"]["events"]),
            "hint": "accepted in range",
        },
    ]
    daily = data["daily"]
    labels = [p.label for p in daily]
    ctx["activity_chart"] = {
        "labels": labels,
        "datasets": [
            {"label": "active installs", "data": [p.active_installs for p in daily]},
            {"label": "new installs", "data": [p.new_installs for p in daily]},
        ],
    }
    ctx["events_chart"] = {
        "labels": labels,
        "datasets": [{"label": "events", "data": [p.events for p in daily]}],
    }
    versions = active.version_adoption(project=project, start=ctx["start"], end=ctx["end"])
    ctx["versions_chart"] = {
        "labels": versions["labels"],
        "datasets": [{"label": v, "data": d} for v, d in versions["series"].items()],
    }
    oses = active.os_breakdown(project=project, start=ctx["start"], end=ctx["end"])
    ctx["os_rows"] = oses
    ctx["os_chart"] = {
        "labels": [o for o, _ in oses],
        "datasets": [{"label": "installs", "data": [n for _, n in oses]}],
    }
    ctx["weekly"] = active.active_series(
        project=project, interval="week", start=ctx["start"], end=ctx["end"]
    )
    ctx["empty"] = not active.has_events(project=project)
    if ctx["empty"]:
        ctx["first_event"] = _first_event(request, project)
    return render(request, "dashboard/overview.html", ctx)


@login_required
@with_csp
@analytics_page
@project_view
def retention_page(request, project: Project):
    ctx = _context(request, project, RangeForm(None))
    now = timezone.now()
    ctx["grids"] = []
    for period, n in (("week", 12), ("day", 30)):
        cohorts = retention.retention(project=project, period=period, cohorts=n, now=now)
        rows = [
            {
                "label": c.label,
                "size": c.size,
                "cells": [
                    {"n": v, "pct": pct, "level": 0 if pct is None else round(pct / 10)}
                    for v, pct in zip(c.retained, c.percentages(), strict=True)
                ],
            }
            for c in cohorts
        ]
        ctx["grids"].append({"period": period, "rows": rows, "offsets": range(n)})
    return render(request, "dashboard/retention.html", ctx)


@login_required
@with_csp
@analytics_page
@project_view
def breakdown_page(request, project: Project):
    form = BreakdownForm(request.GET or None, initial={"property": "name"})
    ctx = _context(request, project, form)
    ctx["presets"] = _presets(project)
    if form.is_bound and form.is_valid():
        try:
            result = breakdown.breakdown(
                project=project,
                prop=form.cleaned_data["property"],
                metric=form.metric_value(),
                start=ctx["start"],
                end=ctx["end"],
                interval=form.cleaned_data.get("interval") or None,
            )
        except BadRequest as exc:
            ctx["error"] = exc.detail
        else:
            ctx["result"] = result
            ctx["chart"] = _breakdown_chart(result)
    elif not form.is_bound:
        # Never an empty page: events by name over the range, from the daily counts.
        ctx["result"] = breakdown.events_by_name(
            project=project, start=ctx["start"], end=ctx["end"]
        )
        ctx["chart"] = _breakdown_chart(ctx["result"])
        ctx["default_answer"] = True
    return render(request, "dashboard/breakdown.html", ctx)


def _breakdown_chart(result: dict) -> dict:
    if "series" in result:
        keys = [r["key"] for r in result["rows"][:10]]
        return {
            "kind": "line",
            "labels": [p["period"] for p in result["series"]],
            "datasets": [
                {"label": k, "data": [p["values"].get(k) for p in result["series"]]} for k in keys
            ],
        }
    rows = result["rows"][:20]
    return {
        "kind": "bar",
        "labels": [r["key"] for r in rows],
        "datasets": [{"label": result["metric"], "data": [r["value"] for r in rows]}],
    }


def _presets(project: Project) -> list[dict]:
    """One-click answers to the usual questions (VoiceMode's README lists these)."""
    return [
        {"label": "Events by name", "query": "property=name&metric=events"},
        {"label": "Installs by OS", "query": "property=os&metric=installs"},
        {
            "label": "Sessions by OS (VoiceMode)",
            "query": "property=environment.os&metric=sum:usage.total_sessions",
        },
        {
            "label": "TTS provider usage over time",
            "query": "property=usage.provider_usage.tts&metric=events&interval=day",
        },
        {
            "label": "Average sessions per install",
            "query": "property=environment.os&metric=avg:usage.total_sessions",
        },
        {"label": "Installs by version", "query": "property=app_version&metric=installs"},
    ]


@login_required
@with_csp
@analytics_page
@project_view
def errors_page(request, project: Project):
    ctx = _context(request, project, RangeForm(request.GET or None), default_days=7)
    ctx["groups"], ctx["truncated"] = errors.error_groups(
        project=project, start=ctx["start"], end=ctx["end"]
    )
    return render(request, "dashboard/errors.html", ctx)


def _event_filter(form: EventFilterForm, ctx: dict) -> events.EventFilter:
    data = form.cleaned_data if form.is_valid() else {}
    return events.EventFilter(
        name=data.get("name", ""),
        install_id=data.get("install_id", ""),
        app_version=data.get("app_version", ""),
        start=ctx["start"],
        end=ctx["end"],
    )


@login_required
@with_csp
@analytics_page
@project_view
def events_page(request, project: Project):
    form = EventFilterForm(request.GET or None)
    ctx = _context(request, project, form, default_days=7)
    f = _event_filter(form, ctx)
    number = (form.cleaned_data.get("page") if form.is_valid() else None) or 1
    ctx["rows"], ctx["has_next"] = events.page(project=project, f=f, number=number)
    ctx["page"] = number
    query = request.GET.copy()
    query.pop("page", None)
    ctx["query"] = query.urlencode()
    return render(request, "dashboard/events.html", ctx)


@login_required
@project_view
def export(request, project: Project, fmt: str):
    if fmt not in ("csv", "ndjson"):
        return not_found(request)
    form = EventFilterForm(request.GET or None)
    ctx = _context(request, project, form, default_days=7)
    f = _event_filter(form, ctx)
    stamp = f"{project.slug}-{ctx['start']}-{ctx['end']}"
    if fmt == "csv":
        response = StreamingHttpResponse(
            events.export_csv(project=project, f=f), content_type="text/csv; charset=utf-8"
        )
    else:
        response = StreamingHttpResponse(
            events.export_ndjson(project=project, f=f), content_type="application/x-ndjson"
        )
    response["Content-Disposition"] = f'attachment; filename="{stamp}.{fmt}"'
    return response


@login_required
@with_csp
@project_view
def setup_page(request, project: Project):
    """How the project's client switches over, and its ingest keys (never the operator token).
    A key issued here a moment ago is shown once."""
    server = clients.server_url(request=request, configured=settings.TELEMETRY_PUBLIC_URL)
    ctx = {
        "project": project,
        "projects": visible_projects(user=request.user),
        "setting": clients.for_project(project=project, server=server),
        "keys": project_service.project_keys(project=project),
        "can_rotate": may_rotate_keys(user=request.user, project=project),
        "new_keys": reveal.take(request, project=project),
    }
    return render(request, "dashboard/setup.html", ctx)


def _key_action(view):
    """POST only, by a user who may rotate this project's keys; then back to the setup page."""

    @functools.wraps(view)
    def wrapped(request, project: Project, *args, **kwargs):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not may_rotate_keys(user=request.user, project=project):
            return render(request, "dashboard/not_found.html", status=403)
        view(request, project, *args, **kwargs)
        return redirect("dashboard-setup", slug=project.slug)

    return wrapped


@login_required
@with_csp
@project_view
@_key_action
def issue_key(request, project: Project) -> None:
    key = project_service.issue_ingest_key(project=project)
    reveal.stash(request, project=project, label="Ingest key", secret=key)
    project_service.record_key_change(
        user=request.user, project=project, message=f"Issued ingest key {key[:10]}… (dashboard)."
    )


@login_required
@with_csp
@project_view
@_key_action
def revoke_key(request, project: Project, key_id: int) -> None:
    try:
        key = project_service.revoke_project_key(project=project, key_id=key_id, keep_last=True)
    except ValueError as exc:
        messages.warning(request, str(exc))
        return
    project_service.record_key_change(
        user=request.user, project=project, message=f"Revoked ingest key {key.prefix}… (dashboard)."
    )
    messages.success(request, f"Ingest key {key.prefix}… is revoked.")


@with_csp
@analytics_page
def public_page(request, slug: str):
    project = public_project(slug=slug)
    if project is None:
        return not_found(request)
    end = today(timezone.now())
    usage = public.weekly_usage(project=project, start=end - dt.timedelta(days=83), end=end)
    ctx = {
        "project": project,
        "schema": sorted((project.property_schema or {}).items()),
        "chart": {
            "labels": [w.label for w in usage.weeks],
            "datasets": [
                {
                    "label": "weekly active installs",
                    "data": [w.active_installs for w in usage.weeks],
                },
                {"label": "events", "data": [w.events for w in usage.weeks]},
            ],
        },
        "usage": usage,
    }
    return render(request, "public/project.html", ctx)


@method_decorator(with_csp, name="dispatch")
@method_decorator(limit_logins, name="post")
class LoginView(auth_views.LoginView):
    """Django's login, refusing (429, same message for every account) once a client IP or a
    username has spent its attempts (one budget with the admin's login)."""

    def post(self, request, *args, **kwargs):
        if getattr(request, "limited", False):
            form = self.get_form()
            form.errors.clear()
            context = self.get_context_data(form=form, limited=True)
            return self.render_to_response(context, status=429)
        return super().post(request, *args, **kwargs)
