"""The bare reference app for bench/ingest.py: a DRF view + serializer, 2 Redis INCR, 1-row insert.

Single-file Django app served by the same gunicorn settings as the platform, so the benchmark's
ratio compares our pipeline with the least a DRF ingest endpoint can do.
"""

import json
import os

import django
import redis
from django.conf import settings

settings.configure(
    DEBUG=False,
    SECRET_KEY="bench-only",
    ALLOWED_HOSTS=["*"],
    ROOT_URLCONF=__name__,
    INSTALLED_APPS=["rest_framework"],
    MIDDLEWARE=[],
    DATABASES={
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": os.environ.get("REF_DB", "tm_bench_ref"),
            "USER": "postgres",
            "HOST": "127.0.0.1",
            "PORT": 5432,
            "CONN_MAX_AGE": 60,
        }
    },
    REST_FRAMEWORK={
        "DEFAULT_AUTHENTICATION_CLASSES": [],
        "DEFAULT_PERMISSION_CLASSES": [],
        "UNAUTHENTICATED_USER": None,
        "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
        "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    },
    USE_TZ=True,
)
django.setup()

from django.db import connection  # noqa: E402
from django.urls import path  # noqa: E402
from rest_framework import serializers  # noqa: E402
from rest_framework.response import Response  # noqa: E402
from rest_framework.views import APIView  # noqa: E402

_redis = redis.Redis.from_url(os.environ.get("REF_REDIS_URL", "redis://127.0.0.1:6379/7"))


class EventSerializer(serializers.Serializer):
    install_id = serializers.RegexField(r"^[A-Za-z0-9_-]{8,64}$")
    name = serializers.RegexField(r"^[a-z][a-z0-9_.:-]{0,63}$")
    timestamp = serializers.DateTimeField()
    event_id = serializers.CharField(max_length=64, required=False)
    properties = serializers.DictField(required=False)


class EventView(APIView):
    def post(self, request):
        s = EventSerializer(data=request.data)
        s.is_valid(raise_exception=True)
        data = s.validated_data
        _redis.incr(f"ref:install:{data['install_id']}")
        _redis.incr(f"ref:ip:{request.META.get('REMOTE_ADDR', '')}")
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO ref_event (install_id, name, ts, properties) VALUES (%s,%s,%s,%s)",
                [
                    data["install_id"],
                    data["name"],
                    data["timestamp"],
                    json.dumps(data.get("properties", {})),
                ],
            )
        return Response({"accepted": 1}, status=202)


urlpatterns = [path("api/v1/events", EventView.as_view())]

from django.core.wsgi import get_wsgi_application  # noqa: E402

application = get_wsgi_application()
