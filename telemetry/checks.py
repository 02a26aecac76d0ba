"""Configuration errors an operator must fix before serving: found at start-up and named, not
discovered by the first visitor as an anonymous 503."""

import logging

from django.conf import settings
from django.core import checks
from django.core.files.storage import storages

log = logging.getLogger("telemetry.startup")

COLLECTSTATIC_HINT = "run `manage.py collectstatic --noinput` (README, Production)"


def missing_static_manifest() -> str | None:
    """What is wrong, if the static files storage needs a manifest that collectstatic never
    wrote; every page would fail to name its stylesheet without it."""
    storage = storages["staticfiles"]
    if not hasattr(storage, "manifest_name"):
        return None  # plain storage (DEBUG, tests): no manifest needed
    if storage.exists(storage.manifest_name):
        return None
    return (
        f"static files are not collected: {settings.STATIC_ROOT}/{storage.manifest_name} is missing"
    )


@checks.register(checks.Tags.staticfiles, deploy=True)
def check_static_manifest(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    problem = missing_static_manifest()
    if problem is None:
        return []
    return [checks.Error(problem, hint=COLLECTSTATIC_HINT, id="telemetry.E001")]


def log_startup_problems() -> None:
    """Called by the WSGI entry point: say at start-up what every request would fail on."""
    problem = missing_static_manifest()
    if problem is not None:
        log.error("%s; every page will answer 503 until you %s", problem, COLLECTSTATIC_HINT)
