"""Creating projects and issuing, revoking and rotating their secrets.

The one place keys are made: `manage.py create_project` / `rotate_keys`, the admin and the
dashboard all call these functions, so they leave the same rows behind.
"""

import re
from dataclasses import dataclass

from django.contrib.admin.models import CHANGE, LogEntry
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from telemetry.ingest import auth
from telemetry.ingest.limits import parse_rate
from telemetry.models import Contract, IngestKey, Project

# Pryx-style projects promise 7-day retention (CONTRACTS A3); VoiceMode's worker kept 90.
CONTRACT_RETENTION = {Contract.PRYX: 7}
# The VoiceMode worker's own limits (per telemetry_id, per IP), whatever the model default becomes.
CONTRACT_RATES = {Contract.VOICEMODE: ("10/h", "100/h")}
SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
SLUG_RULE = "lowercase letters, digits and '-', starting with a letter or digit, at most 64"
# A DNS name (no port, no scheme): what the Host header is matched against.
HOSTNAME_RE = re.compile(
    r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$"
)


@dataclass
class NewProject:
    project: Project
    ingest_key: str
    operator_token: str


def contract_defaults(contract: str) -> dict:
    """Retention and rates a new project of `contract` gets when none are given; None means the
    model's own default."""
    install_rate, ip_rate = CONTRACT_RATES.get(contract, (None, None))
    return {
        "retention_days": CONTRACT_RETENTION.get(contract),
        "install_rate": install_rate,
        "ip_rate": ip_rate,
    }


def check_slug(slug: str, *, exclude: Project | None = None) -> None:
    if not SLUG_RE.match(slug or ""):
        raise ValueError(f"invalid slug {slug!r}: {SLUG_RULE}")
    taken = Project.objects.filter(slug=slug)
    if exclude is not None and exclude.pk:
        taken = taken.exclude(pk=exclude.pk)
    if taken.exists():
        raise ValueError(f"a project with slug {slug!r} exists already")


def check_hostnames(hostnames: list[str], *, exclude: Project | None = None) -> list[str]:
    """Lowercased hostnames, each a DNS name no other project claims; ValueError otherwise."""
    cleaned: list[str] = []
    for raw in hostnames:
        name = str(raw).strip().lower().rstrip(".")
        if not HOSTNAME_RE.match(name):
            raise ValueError(f"invalid hostname {raw!r}: a DNS name such as telemetry.example.org")
        if name not in cleaned:
            cleaned.append(name)
    others = Project.objects.all()
    if exclude is not None and exclude.pk:
        others = others.exclude(pk=exclude.pk)
    for slug, claimed in others.values_list("slug", "hostnames"):
        for name in {str(h).lower() for h in claimed or []} & set(cleaned):
            raise ValueError(f"hostname {name!r} is already served by project {slug!r}")
    return cleaned


def create_project(
    *,
    slug: str,
    contract: str = Contract.NATIVE,
    name: str | None = None,
    hostnames: list[str] | None = None,
    retention_days: int | None = None,
    install_rate: str | None = None,
    ip_rate: str | None = None,
    allowed_origins: list[str] | None = None,
) -> NewProject:
    """Create a project with one ingest key and an operator token; the secrets are shown once."""
    if contract not in Contract.values:
        raise ValueError(f"unknown contract {contract!r}; one of {', '.join(Contract.values)}")
    given = {"retention_days": retention_days, "install_rate": install_rate, "ip_rate": ip_rate}
    fields = {
        k: given[k] if given[k] is not None else default
        for k, default in contract_defaults(contract).items()
    }
    project = Project(
        slug=slug,
        name=name or slug,
        contract=contract,
        hostnames=hostnames or [],
        allowed_origins=allowed_origins or [],
        **{k: v for k, v in fields.items() if v is not None},
    )
    return save_new_project(project=project)


def save_new_project(*, project: Project) -> NewProject:
    """Check and save an unsaved project (from create_project or the admin's form) and issue its
    ingest key and operator token, all in one transaction."""
    check_slug(project.slug)
    if project.contract not in Contract.values:
        raise ValueError(f"unknown contract {project.contract!r}")
    for rate in (project.install_rate, project.ip_rate):
        parse_rate(rate)
    project.hostnames = check_hostnames(project.hostnames or [])
    with transaction.atomic():
        project.save()
        key = auth.add_ingest_key(project)
        token = auth.set_operator_token(project)
    return NewProject(project=project, ingest_key=key, operator_token=token)


def issue_ingest_key(*, project: Project) -> str:
    """Issue one more ingest key; the others stay valid until revoked, so clients can move."""
    return auth.add_ingest_key(project)


def revoke_ingest_key(*, key: IngestKey, now=None) -> bool:
    """Revoke `key`; False when it was revoked already."""
    updated = IngestKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(
        revoked_at=now or timezone.now()
    )
    auth.forget_projects()
    key.refresh_from_db(fields=["revoked_at"])
    return bool(updated)


def revoke_project_key(*, project: Project, key_id: int, keep_last: bool = False) -> IngestKey:
    """Revoke `project`'s live key `key_id`. ValueError, with a message for the person asking,
    when there is no such live key or, with `keep_last`, it is the project's only live key."""
    live = IngestKey.objects.filter(project=project, revoked_at__isnull=True)
    key = live.filter(pk=key_id).first()
    if key is None:
        raise ValueError("That key is revoked already.")
    if keep_last and live.count() == 1:
        raise ValueError(
            "This is the project's only live key: issue a new one and move clients first."
        )
    revoke_ingest_key(key=key)
    return key


def rotate_ingest_key(*, project: Project) -> str:
    """Revoke every current ingest key and issue a new one."""
    with transaction.atomic():
        IngestKey.objects.filter(project=project, revoked_at__isnull=True).update(
            revoked_at=timezone.now()
        )
        return auth.add_ingest_key(project)


def rotate_operator_token(*, project: Project) -> str:
    return auth.set_operator_token(project)


def project_keys(*, project: Project):
    """The project's ingest keys, live ones first, newest first."""
    return IngestKey.objects.filter(project=project).order_by(
        F("revoked_at").desc(nulls_first=True), "-created_at", "-pk"
    )


def record_key_change(*, user, project: Project, message: str) -> None:
    """Write a key change to the admin history (what and the key's prefix; never a secret)."""
    LogEntry.objects.log_actions(
        user_id=user.pk,
        queryset=[project],
        action_flag=CHANGE,
        change_message=message,
        single_object=True,
    )
