"""The admin's self-service for projects: create with keys, issue, revoke and rotate them, show
each new secret once, and show the client's one setting. telemetry/admin.py mixes this in.

Every secret comes from telemetry.services.projects (the commands' service) and is shown through
telemetry.reveal; the admin history records what was done and the key's prefix, never a secret.
"""

import re

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import F
from django.http import HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from telemetry import reveal
from telemetry.contracts import clients
from telemetry.ingest.limits import parse_rate
from telemetry.middleware import _host_without_port
from telemetry.models import IngestKey, Project
from telemetry.services import projects as service

KEY_LABEL = "Ingest key"
OPERATOR_LABEL = "Operator token"
DEFAULTED = ("retention_days", "install_rate", "ip_rate")


class LinesField(forms.CharField):
    """A list of strings edited as one per line (commas also separate)."""

    widget = forms.Textarea(attrs={"rows": 2, "cols": 60})

    def prepare_value(self, value):
        return "\n".join(str(v) for v in value) if isinstance(value, list) else value

    def to_python(self, value):
        if isinstance(value, list):
            return value
        text = super().to_python(value)
        return [part.strip() for part in re.split(r"[\n,]", text) if part.strip()]

    def has_changed(self, initial, data) -> bool:
        return list(initial or []) != self.to_python(data)


class ProjectAdminForm(forms.ModelForm):
    """The project form, checked by the same rules as `create_project`: a slug other projects do
    not have, hostnames nobody else serves, rates django-ratelimit accepts. On the add form, a
    blank retention or rate gets the contract's default, as with the command."""

    hostnames = LinesField(
        required=False,
        help_text="One per line: Hosts served by this project at the root path"
        " (add them to ALLOWED_HOSTS too).",
    )
    allowed_origins = LinesField(
        required=False, help_text="One per line: CORS origins, e.g. https://mytool.dev."
    )
    admin_host = ""  # set per request by ProjectKeysAdminMixin.get_form

    class Meta:
        model = Project
        fields = "__all__"  # noqa: DJ007 - ProjectAdmin (fieldsets, exclude) picks what shows

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.adding = self.instance.pk is None
        if "slug" in self.fields:
            self.fields["slug"].help_text = f"In URLs: {service.SLUG_RULE}."
        if self.adding:
            if "name" in self.fields:
                self.fields["name"].required = False
                self.fields["name"].help_text = "Blank: the slug."
            for name in DEFAULTED:
                if name in self.fields:
                    self.fields[name].required = False
                    self.fields[name].initial = None
                    self.fields[name].help_text = (
                        "Blank: the contract's default (Pryx 7 days, others"
                        f" {Project._meta.get_field('retention_days').get_default()})."
                        if name == "retention_days"
                        else f"Blank: the contract's default. {self.fields[name].help_text}"
                    )

    def clean_slug(self) -> str:
        slug = self.cleaned_data["slug"]
        try:
            service.check_slug(slug, exclude=self.instance)
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None
        return slug

    def clean_hostnames(self) -> list[str]:
        try:
            names = service.check_hostnames(
                self.cleaned_data.get("hostnames") or [], exclude=self.instance
            )
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None
        own = _host_without_port(self.admin_host).lower()
        if own and own in names:
            raise forms.ValidationError(
                f"{own!r} is this admin's own host: the project would take over every page on it"
            )
        return names

    def _clean_rate(self, name: str) -> str | None:
        rate = (self.cleaned_data.get(name) or "").strip()
        if not rate:
            if self.adding:
                return None
            raise forms.ValidationError("Give a rate such as 10/h.")
        try:
            parse_rate(rate)
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None
        return rate

    def clean_install_rate(self):
        return self._clean_rate("install_rate")

    def clean_ip_rate(self):
        return self._clean_rate("ip_rate")

    def clean(self):
        data = super().clean()
        if self.adding:
            if "name" in self.fields and not data.get("name"):
                data["name"] = data.get("slug") or ""
            defaults = service.contract_defaults(data.get("contract") or "")
            for name in DEFAULTED:
                if name in self.fields and name not in self.errors and data.get(name) is None:
                    default = defaults.get(name)
                    if default is None:
                        default = Project._meta.get_field(name).get_default()
                    data[name] = default
        return data


class IngestKeyInline(admin.TabularInline):
    """The project's keys: what tells them apart, and a revoke link for live ones."""

    model = IngestKey
    extra = 0
    fields = ["prefix", "created_at", "last_used_at", "revoked_at", "revoke"]
    readonly_fields = fields
    can_delete = False
    ordering = [F("revoked_at").desc(nulls_first=True), "-created_at"]

    def has_add_permission(self, request, obj=None) -> bool:
        return False  # issued by "Issue a new ingest key" (or `manage.py rotate_keys`)

    @admin.display(description="")
    def revoke(self, key: IngestKey) -> str:
        if key.pk is None or key.revoked_at is not None:
            return ""
        url = reverse("admin:telemetry_project_revoke_key", args=[key.project_id, key.pk])
        return format_html('<a href="{}">Revoke…</a>', url)


class ProjectKeysAdminMixin:
    """Mixed into ProjectAdmin: creation through the service, key actions, one-time secrets."""

    form = ProjectAdminForm
    actions = ["issue_ingest_keys", "rotate_operator_tokens"]

    # --- the form -------------------------------------------------------------------------

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)
        return type(form.__name__, (form,), {"admin_host": request.get_host()})

    def get_readonly_fields(self, request, obj=None):
        fields = list(super().get_readonly_fields(request, obj))
        if obj is not None:
            fields += ["secrets", "one_setting"]
        return fields

    def save_model(self, request, obj, form, change) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        # The same call as `manage.py create_project`, so both leave the same rows.
        created = service.save_new_project(project=obj)
        reveal.stash(request, project=obj, label=KEY_LABEL, secret=created.ingest_key)
        reveal.stash(request, project=obj, label=OPERATOR_LABEL, secret=created.operator_token)

    def log_addition(self, request, obj, message):
        entry = super().log_addition(request, obj, message)
        key = obj.ingest_keys.order_by("-pk").first()
        self.log_change(request, obj, f"Issued ingest key {key.prefix}… and an operator token.")
        return entry

    def response_add(self, request, obj, post_url_continue=None):
        response = super().response_add(request, obj, post_url_continue)
        if isinstance(response, HttpResponseRedirect) and reveal.waiting(request):
            return HttpResponseRedirect(reverse("admin:telemetry_project_secrets"))
        return response

    # --- read-only displays on the change page --------------------------------------------

    @admin.display(description="Keys and token")
    def secrets(self, obj: Project) -> str:
        live = obj.ingest_keys.filter(revoked_at__isnull=True).count()
        token = "set" if obj.operator_token_hash else "not set"
        links = [
            (
                reverse("admin:telemetry_project_issue_key", args=[obj.pk]),
                "Issue a new ingest key…",
            ),
            (
                reverse("admin:telemetry_project_rotate_token", args=[obj.pk]),
                "Rotate the operator token…",
            ),
        ]
        return format_html(
            "{} live ingest key(s); operator token {}.<br>{}",
            live,
            token,
            format_html_join(" · ", '<a href="{}">{}</a>', links),
        )

    @admin.display(description="The one setting")
    def one_setting(self, obj: Project) -> str:
        return _one_setting_html(obj, getattr(obj, "admin_server", ""))

    def get_object(self, request, object_id, from_field=None):
        obj = super().get_object(request, object_id, from_field)
        if obj is not None:
            # Read-only displays get only the object: it carries this request's server URL.
            obj.admin_server = clients.server_url(request=request, configured=_public_url())
        return obj

    # --- changelist actions ---------------------------------------------------------------

    @admin.action(
        description="Issue a new ingest key (old keys stay valid until revoked)",
        permissions=["change"],
    )
    def issue_ingest_keys(self, request, queryset):
        for project in queryset:
            self._issue_key(request, project)
        return HttpResponseRedirect(reverse("admin:telemetry_project_secrets"))

    @admin.action(description="Rotate the operator token", permissions=["change"])
    def rotate_operator_tokens(self, request, queryset):
        for project in queryset:
            self._rotate_token(request, project)
        return HttpResponseRedirect(reverse("admin:telemetry_project_secrets"))

    def _issue_key(self, request, project: Project) -> None:
        key = service.issue_ingest_key(project=project)
        reveal.stash(request, project=project, label=KEY_LABEL, secret=key)
        self.log_change(request, project, f"Issued ingest key {key[:10]}….")

    def _rotate_token(self, request, project: Project) -> None:
        token = service.rotate_operator_token(project=project)
        reveal.stash(request, project=project, label=OPERATOR_LABEL, secret=token)
        self.log_change(request, project, "Rotated the operator token.")

    # --- pages ----------------------------------------------------------------------------

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path("secrets/", wrap(self.secrets_view), name="telemetry_project_secrets"),
            path(
                "<int:project_id>/keys/issue/",
                wrap(self.issue_key_view),
                name="telemetry_project_issue_key",
            ),
            path(
                "<int:project_id>/operator-token/rotate/",
                wrap(self.rotate_token_view),
                name="telemetry_project_rotate_token",
            ),
            path(
                "<int:project_id>/keys/<int:key_id>/revoke/",
                wrap(self.revoke_key_view),
                name="telemetry_project_revoke_key",
            ),
            *super().get_urls(),
        ]

    def _project_for_change(self, request, project_id: int) -> Project:
        project = get_object_or_404(Project, pk=project_id)
        if not self.has_change_permission(request, project):
            raise PermissionDenied
        return project

    def _confirm(self, request, project, *, title: str, text: str, button: str, key=None):
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "project": project,
            "key": key,
            "title": title,
            "text": text,
            "button": button,
        }
        return TemplateResponse(request, "admin/telemetry/project/confirm.html", context)

    def _confirm_then(self, request, project_id: int, act, **confirm):
        """GET asks for confirmation; POST does `act(request, project)` and shows the secret."""
        project = self._project_for_change(request, project_id)
        if request.method == "POST":
            act(request, project)
            return HttpResponseRedirect(reverse("admin:telemetry_project_secrets"))
        if request.method != "GET":
            return HttpResponseNotAllowed(["GET", "POST"])
        return self._confirm(request, project, **confirm)

    def issue_key_view(self, request, project_id: int):
        return self._confirm_then(
            request,
            project_id,
            self._issue_key,
            title="Issue a new ingest key",
            text="A new key is issued and shown once. The current keys stay valid until you"
            " revoke them, so clients can be moved over first.",
            button="Issue the key",
        )

    def rotate_token_view(self, request, project_id: int):
        return self._confirm_then(
            request,
            project_id,
            self._rotate_token,
            title="Rotate the operator token",
            text="A new operator token is issued and shown once. The current token stops"
            " working at once: update every script and reader that uses it.",
            button="Rotate the token",
        )

    def revoke_key_view(self, request, project_id: int, key_id: int):
        project = self._project_for_change(request, project_id)
        key = get_object_or_404(IngestKey, pk=key_id, project=project)
        change_url = reverse("admin:telemetry_project_change", args=[project.pk])
        if request.method == "POST":
            if service.revoke_ingest_key(key=key):
                self.log_change(request, project, f"Revoked ingest key {key.prefix}….")
                self.message_user(request, f"Ingest key {key.prefix}… is revoked.")
            else:
                self.message_user(
                    request, f"Ingest key {key.prefix}… was revoked already.", messages.WARNING
                )
            return HttpResponseRedirect(change_url)
        if request.method != "GET":
            return HttpResponseNotAllowed(["GET", "POST"])
        return self._confirm(
            request,
            project,
            key=key,
            title=f"Revoke ingest key {key.prefix}…",
            text="Clients sending this key are refused (403) from now on. This cannot be undone;"
            " issue a new key first if a client still needs one.",
            button="Revoke the key",
        )

    def secrets_view(self, request):
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied
        items = reveal.take(request)
        server = clients.server_url(request=request, configured=_public_url())
        shown = {i["project_id"] for i in items}
        setups = [
            {"project": p, "html": _one_setting_html(p, server)}
            for p in Project.objects.filter(pk__in=shown)
        ]
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Store these secrets now",
            "items": items,
            "setups": setups,
        }
        return TemplateResponse(request, "admin/telemetry/project/secrets.html", context)


def _public_url() -> str:
    from django.conf import settings

    return settings.TELEMETRY_PUBLIC_URL


def _one_setting_html(project: Project, server: str) -> str:
    shown = clients.for_project(project=project, server=server)
    also = format_html_join(", ", "<code>{}</code>", ((u,) for u in shown["also"]))
    return format_html(
        '<div class="one-setting" data-contract="{}"><strong>{}</strong>: {}'
        '<pre class="one-setting-lines">{}</pre><p>{}</p>{}</div>',
        project.contract,
        shown["client"],
        shown["setting"],
        shown["text"],
        shown["note_html"],
        format_html("<p>Also reachable at {}.</p>", also) if shown["also"] else "",
    )


@admin.register(IngestKey)
class IngestKeyAdmin(admin.ModelAdmin):
    """Every ingest key, for finding one by prefix and revoking in bulk; keys are never edited."""

    list_display = ["prefix", "project", "created_at", "last_used_at", "revoked_at"]
    list_filter = ["project", ("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["prefix", "project__slug"]
    list_select_related = ["project"]
    fields = ["project", "prefix", "created_at", "last_used_at", "revoked_at"]
    readonly_fields = fields
    actions = ["revoke_keys"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # revoke instead: a deleted key leaves no trace of who used what

    @admin.action(description="Revoke selected ingest keys", permissions=["change"])
    def revoke_keys(self, request, queryset):
        revoked = 0
        for key in queryset.select_related("project"):
            if service.revoke_ingest_key(key=key):
                revoked += 1
                # Recorded on the project, where its other key changes are.
                self.log_change(request, key.project, f"Revoked ingest key {key.prefix}….")
        self.message_user(request, f"Revoked {revoked} ingest key(s).")
