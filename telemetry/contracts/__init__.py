"""Front doors: one module per wire format, each mapping its requests onto the ingest pipeline.

Each contract module exposes `serve(request, project, path) -> HttpResponse` for the requests under
`/p/<slug>/<path>` (and `/<path>` on the project's own hostnames); `front_door` picks the module.
"""

from collections.abc import Callable
from importlib import import_module

from django.http import HttpRequest, HttpResponse

from telemetry.models import Contract, Project

FrontDoor = Callable[[HttpRequest, Project, str], HttpResponse]

MODULES = {
    Contract.NATIVE: "telemetry.contracts.native",
    Contract.VOICEMODE: "telemetry.contracts.voicemode",
    Contract.DOMSCRIBE: "telemetry.contracts.domscribe",
    Contract.BAOFENG: "telemetry.contracts.baofeng",
    Contract.PRYX: "telemetry.contracts.pryx",
    Contract.AXIOM: "telemetry.contracts.axiom",
}


def front_door(contract: str) -> FrontDoor:
    return import_module(MODULES[contract]).serve
