"""Shared test set-up: a private cache per run, clean counters and caches per test."""

import shutil

import pytest
from django.conf import settings


def pytest_configure(config) -> None:
    # Every count a test reads is exact: the cohort rollup is served only while nothing moved.
    settings.TELEMETRY_COHORT_MAX_LAG_SECONDS = 0
    # Tests do not run collectstatic, so there is no manifest to look names up in.
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    # The embedded cache gets a folder of its own so tests never share counters with `make run`.
    if settings.CACHES["default"]["BACKEND"] == "diskcache.DjangoCache":
        location = settings.DATA_DIR / "test-cache"
        shutil.rmtree(location, ignore_errors=True)
        settings.CACHES["default"]["LOCATION"] = str(location)
    else:
        settings.CACHES["default"]["KEY_PREFIX"] = "tm-test"


@pytest.fixture(autouse=True)
def _clean_state():
    from django.core.cache import cache

    from telemetry.ingest.auth import forget_projects
    from telemetry.ingest.privacy import forget_salts

    if hasattr(cache, "delete_pattern"):
        cache.delete_pattern("*")  # only this prefix: never FLUSHDB a shared Redis
    else:
        cache.clear()
    forget_projects()
    forget_salts()
    yield
    forget_projects()
    forget_salts()
