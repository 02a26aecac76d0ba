"""Front doors: one module per wire format, each mapping its requests onto the ingest pipeline.

`FRONT_DOORS` maps a project's contract to the function serving `/p/<slug>/<path>` for it.
"""

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, JsonResponse

from telemetry.models import Contract, Project

FrontDoor = Callable[[HttpRequest, Project, str], HttpResponse]


def _native(request: HttpRequest, project: Project, path: str) -> HttpResponse:
    from telemetry.api.views import events_view

    if path == "api/v1/events":
        return events_view(request, project=project)
    return JsonResponse({"error": "not_found", "detail": f"no route /{path}"}, status=404)


FRONT_DOORS: dict[str, FrontDoor] = {Contract.NATIVE: _native}


def register(contract: str, door: FrontDoor) -> None:
    FRONT_DOORS[contract] = door
