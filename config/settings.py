"""Settings, every knob read from the environment.

Defaults run the embedded platform (`make run`): SQLite in WAL mode, a diskcache cache that is
shared across processes and atomic, and a filesystem Celery broker. Production sets DATABASE_URL,
REDIS_URL and CELERY_BROKER_URL (see README.md).
"""

import hashlib
from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG = env.bool("DEBUG", default=False)
DATA_DIR = Path(env("DATA_DIR", default=str(BASE_DIR / "data")))
DATA_DIR.mkdir(parents=True, exist_ok=True)

if DEBUG:
    SECRET_KEY = env(
        "SECRET_KEY", default="dev-only-insecure-secret-key-change-me-0123456789abcdef"
    )
else:
    SECRET_KEY = env("SECRET_KEY")

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
# Proxies whose X-Forwarded-For we believe (CIDRs); everything else is REMOTE_ADDR only.
TRUSTED_PROXIES = env.list("TRUSTED_PROXIES", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "telemetry",
]

MIDDLEWARE = [
    "telemetry.middleware.NeverServerErrorMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "telemetry.middleware.HostRoutingMiddleware",
    "telemetry.middleware.IngestFastPathMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{DATA_DIR / 'db.sqlite3'}")}
DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("CONN_MAX_AGE", default=60))
# A health check is one more round trip per request; a dead connection fails its first query
# instead, which ingest answers 503, and Django drops it at the end of that request.
DATABASES["default"]["CONN_HEALTH_CHECKS"] = env.bool("CONN_HEALTH_CHECKS", default=False)
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets readers run beside the writer; IMMEDIATE takes the write lock up front so two
    # writers queue on busy_timeout instead of failing with "database is locked" mid-transaction.
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }
    # Tests run on a file, not :memory:, so concurrent threads share one database.
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / "test.sqlite3")}
else:
    DATABASES["default"].setdefault("OPTIONS", {})["connect_timeout"] = 5
    # Ingest's store statement is prepared once per connection (telemetry.ingest.pipeline);
    # Django's own queries bind on the client and are never prepared. Set 0 behind a pooler in
    # transaction mode that cannot keep prepared statements (PgBouncer before 1.21).
    if env.bool("DATABASE_PREPARED_STATEMENTS", default=True):
        DATABASES["default"]["OPTIONS"].setdefault("prepare_threshold", 5)

# A streaming replica for dashboard and analytics reads (README, "Beyond one machine"). Reads
# fall back to the primary while it is down or more than DATABASE_REPLICA_MAX_LAG_SECONDS behind.
if env("DATABASE_REPLICA_URL", default=""):
    DATABASES["replica"] = env.db("DATABASE_REPLICA_URL")
    DATABASES["replica"].setdefault("CONN_MAX_AGE", DATABASES["default"]["CONN_MAX_AGE"])
    DATABASES["replica"]["CONN_HEALTH_CHECKS"] = True
    DATABASES["replica"].setdefault("OPTIONS", {})["connect_timeout"] = 2
    DATABASES["replica"]["TEST"] = {"MIRROR": "default"}
DATABASE_ROUTERS = ["telemetry.analytics.db.AnalyticsRouter"]
DATABASE_REPLICA_MAX_LAG_SECONDS = env.float("DATABASE_REPLICA_MAX_LAG_SECONDS", default=30.0)
DATABASE_REPLICA_CHECK_SECONDS = env.float("DATABASE_REPLICA_CHECK_SECONDS", default=5.0)
DATABASE_REPLICA_RETRY_SECONDS = env.float("DATABASE_REPLICA_RETRY_SECONDS", default=10.0)

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env("REDIS_URL", default=env("CACHE_URL", default=""))
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": env("CACHE_KEY_PREFIX", default="tm"),
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 1, "SOCKET_TIMEOUT": 1},
        }
    }
else:
    # diskcache: a SQLite-backed cache whose incr runs in a transaction, so every web and
    # Celery process on the machine shares one atomic counter store without a server.
    CACHES = {
        "default": {
            "BACKEND": "diskcache.DjangoCache",
            "LOCATION": env("CACHE_DIR", default=str(DATA_DIR / "cache")),
            "TIMEOUT": 300,
            "OPTIONS": {"size_limit": 2**30},
        }
    }
RATELIMIT_USE_CACHE = "default"
# django-ratelimit's defaults, set so that naming a key reads them instead of looking up a
# missing setting (an AttributeError per key: a thousand per batch). The hash is the function,
# not its dotted path, which django-ratelimit would import again for every key.
RATELIMIT_CACHE_PREFIX = "rl:"
RATELIMIT_HASH_ALGORITHM = hashlib.sha256
# What happens to ingest when the rate-limit cache is unreachable: 503 (closed) or accept (open).
RATELIMIT_FAIL_OPEN = env.bool("RATELIMIT_FAIL_OPEN", default=False)
# django-ratelimit warns about any backend outside its short list; diskcache is atomic and
# shared (README, "Rate limiting"), so that warning is silenced, not its errors.
SILENCED_SYSTEM_CHECKS = ["django_ratelimit.W001"]

SESSION_ENGINE = "django.contrib.sessions.backends.db"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "staticfiles"
STATIC_ROOT.mkdir(exist_ok=True)
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}

LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/dashboard/"
LOGOUT_REDIRECT_URL = "/accounts/login/"
# Login attempts (POST) per hashed client IP and per username, django-ratelimit syntax.
LOGIN_RATE_PER_IP = env("LOGIN_RATE_PER_IP", default="20/10m")
LOGIN_RATE_PER_USER = env("LOGIN_RATE_PER_USER", default="10/10m")

# Front doors cap their own bodies; this only bounds what Django itself will buffer.
DATA_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
APPEND_SLASH = False

# Security: production values on unless DEBUG (justifications in README.md, "Production").
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=not DEBUG)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=not DEBUG)
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=not DEBUG)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=not DEBUG)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
if env.bool("BEHIND_TLS_PROXY", default=not DEBUG):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Health probes come over plain HTTP from the load balancer.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]

REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": [],
    "UNAUTHENTICATED_USER": None,
    "EXCEPTION_HANDLER": "telemetry.api.errors.exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Telemetry platform API",
    "DESCRIPTION": "Native ingest and analytics API of the self-hosted telemetry platform.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI from the installed sidecar package, not a CDN: the docs work offline.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
}

# Celery: the embedded default broker is a folder, so `make run` needs no server.
CELERY_BROKER_URL = env("CELERY_BROKER_URL", default="filesystem://")
if CELERY_BROKER_URL.startswith("filesystem://"):
    _queue_dir = DATA_DIR / "broker"
    (_queue_dir / "out").mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_queue_dir / "out"),
        "data_folder_out": str(_queue_dir / "out"),
        "control_folder": str(_queue_dir / "control"),
        "store_processed": False,
    }
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TIMEZONE = "UTC"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

# Telemetry knobs.
TELEMETRY_DEFAULT_RETENTION_DAYS = env.int("TELEMETRY_DEFAULT_RETENTION_DAYS", default=90)
# How long a web process trusts its in-memory copy of projects and keys.
TELEMETRY_PROJECT_CACHE_SECONDS = env.float("TELEMETRY_PROJECT_CACHE_SECONDS", default=10.0)
TELEMETRY_RETRY_AFTER_SECONDS = env.int("TELEMETRY_RETRY_AFTER_SECONDS", default=30)
# How long the cache remembers an event id it has seen (the claim): copies in flight and quick
# retries are answered from it; later copies of the same (event_id, timestamp) by the database.
TELEMETRY_CLAIM_TTL_SECONDS = env.int("TELEMETRY_CLAIM_TTL_SECONDS", default=3600)
# An ingest key's "last used" time is written at most this often per key and web process.
TELEMETRY_KEY_LAST_USED_SECONDS = env.float("TELEMETRY_KEY_LAST_USED_SECONDS", default=300.0)
# The server's public URL for the "one setting" shown in the admin and dashboard, e.g.
# https://telemetry.example.org; empty means the URL the page was requested at.
TELEMETRY_PUBLIC_URL = env.str("TELEMETRY_PUBLIC_URL", default="")
# Every analytics request's statements end within this many seconds (gunicorn kills a worker
# at 30): past it the API answers 503 and the page asks for a shorter range.
TELEMETRY_ANALYTICS_TIMEOUT_SECONDS = env.float("TELEMETRY_ANALYTICS_TIMEOUT_SECONDS", default=20.0)
# How long the retention grid may be served from its cohort rollup after new events arrived,
# before reads count the rollups directly again (0: only while nothing changed).
TELEMETRY_COHORT_MAX_LAG_SECONDS = env.float("TELEMETRY_COHORT_MAX_LAG_SECONDS", default=60.0)
# Reads from a replica do not fold the rollup queue first (the fold job does, every 10 s)
# unless no fold has emptied it for this long: the job is late, its broker down.
TELEMETRY_READER_FOLD_AFTER_SECONDS = env.float("TELEMETRY_READER_FOLD_AFTER_SECONDS", default=30.0)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    # django.request would log the full request line; our middleware logs failures itself.
    "loggers": {
        "django.request": {"handlers": ["console"], "level": "ERROR", "propagate": False},
        "telemetry": {
            "handlers": ["console"],
            "level": env("LOG_LEVEL", default="INFO"),
            "propagate": False,
        },
    },
    "root": {"handlers": ["console"], "level": "WARNING"},
}
