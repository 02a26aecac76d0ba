"""Creating projects and rotating their secrets."""

import re
from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone

from telemetry.ingest import auth
from telemetry.ingest.limits import parse_rate
from telemetry.models import Contract, IngestKey, Project

# Pryx-style projects promise 7-day retention (CONTRACTS A3); VoiceMode's worker kept 90.
CONTRACT_RETENTION = {Contract.PRYX: 7}
# The VoiceMode worker's own limits (per telemetry_id, per IP), whatever the model default becomes.
CONTRACT_RATES = {Contract.VOICEMODE: ("10/h", "100/h")}
SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")


@dataclass
class NewProject:
    project: Project
    ingest_key: str
    operator_token: str


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
    if not SLUG_RE.match(slug):
        raise ValueError(f"invalid slug {slug!r}: lowercase letters, digits and '-', at most 64")
    if contract not in Contract.values:
        raise ValueError(f"unknown contract {contract!r}; one of {', '.join(Contract.values)}")
    if Project.objects.filter(slug=slug).exists():
        raise ValueError(f"a project with slug {slug!r} exists already")
    for rate in (install_rate, ip_rate):
        if rate is not None:
            parse_rate(rate)
    if retention_days is None:
        retention_days = CONTRACT_RETENTION.get(contract)
    default_install_rate, default_ip_rate = CONTRACT_RATES.get(contract, (None, None))
    install_rate = install_rate or default_install_rate
    ip_rate = ip_rate or default_ip_rate
    fields = {
        "install_rate": install_rate,
        "ip_rate": ip_rate,
        "retention_days": retention_days,
    }
    with transaction.atomic():
        project = Project.objects.create(
            slug=slug,
            name=name or slug,
            contract=contract,
            hostnames=[h.lower() for h in hostnames or []],
            allowed_origins=allowed_origins or [],
            **{k: v for k, v in fields.items() if v is not None},
        )
        key = auth.add_ingest_key(project)
        token = auth.set_operator_token(project)
    return NewProject(project=project, ingest_key=key, operator_token=token)


def rotate_ingest_key(*, project: Project) -> str:
    """Revoke every current ingest key and issue a new one."""
    with transaction.atomic():
        IngestKey.objects.filter(project=project, revoked_at__isnull=True).update(
            revoked_at=timezone.now()
        )
        return auth.add_ingest_key(project)


def rotate_operator_token(*, project: Project) -> str:
    return auth.set_operator_token(project)
