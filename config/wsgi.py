"""WSGI entry point (gunicorn config.wsgi)."""

import gc
import os

from django.core.wsgi import get_wsgi_application
from django.urls import get_resolver

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
application = get_wsgi_application()

from telemetry.checks import log_startup_problems  # noqa: E402  (needs the app registry)

log_startup_problems()

# Load the URLconf and every view now, then keep what is loaded (Django, the app, their
# modules: ~100,000 objects) out of the cyclic garbage collector's full passes. A 1,000-event
# batch allocates enough to run several, and walking the whole heap each time cost about a
# quarter of the batch's web CPU (bench/RESULTS.md, session 8).
get_resolver().url_patterns  # noqa: B018  (imports config.urls and the views)
gc.freeze()
