"""Dataspace settings: configuration comes only from environment variables.

Unset ``DATABASE_URL`` and ``REDIS_URL`` give the *embedded default*: a SQLite file, the in-memory
channel layer and Celery tasks run in-process. Production sets both (PostgreSQL, Redis) and a
``SECRET_KEY``; with ``DEBUG`` off nothing insecure has a silent default.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import dj_database_url
import django_stubs_ext
from csp.constants import NONE, SELF
from django.core.exceptions import ImproperlyConfigured

from .environment import env_bool, env_int, env_list

# Lets generic classes such as ModelAdmin[Model] be subscripted at run time (django-stubs).
django_stubs_ext.monkeypatch()


BASE_DIR = Path(__file__).resolve().parent.parent.parent
# Where the embedded default keeps its SQLite file, media, and generated keys.
DATA_DIR = Path(os.environ.get("DATASPACE_DATA_DIR", BASE_DIR / "var")).resolve()

# ---------------------------------------------------------------------------------------------
# Core
# ---------------------------------------------------------------------------------------------
DEBUG = env_bool("DEBUG", default=False)
SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off.")
    SECRET_KEY = "insecure-debug-only-key-never-use-in-production"  # noqa: S105
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]" if DEBUG else "")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")
# The public origin pods and providers use to reach this service (receipts, pairing URLs).
SITE_URL = os.environ.get("SITE_URL", "http://127.0.0.1:8000").rstrip("/")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "oauth2_provider",
    "axes",
    "channels",
    "dataspace.apps.DataspaceConfig",
    "consent.apps.ConsentConfig",
    "training.apps.TrainingConfig",
    "pods.apps.PodsConfig",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    # The language: the cookie the portal's switcher sets, else Accept-Language, else English.
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # A signed-in person's own language setting wins over the cookie and Accept-Language.
    "consent.languages.PersonLanguageMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    # Last, as django-axes requires: turns a locked-out login into its lockout response.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "dataspace.urls"
ASGI_APPLICATION = "dataspace.asgi.application"
WSGI_APPLICATION = "dataspace.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "dataspace" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.i18n",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# ---------------------------------------------------------------------------------------------
# Database: DATABASE_URL, else the embedded SQLite file.
# ---------------------------------------------------------------------------------------------
_database_url = os.environ.get("DATABASE_URL", "")
EMBEDDED = not _database_url
if EMBEDDED:
    # The embedded default keeps the database, uploaded models, masked inputs and the receipt
    # signing key here: only this user may read it (0700; files 0600, as SQLite gives its
    # -wal and -shm files the database file's mode).
    DATA_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
    DATA_DIR.chmod(0o700)
    _sqlite_file = DATA_DIR / "dataspace.sqlite3"
    os.close(os.open(_sqlite_file, os.O_CREAT | os.O_WRONLY, 0o600))
    _sqlite_file.chmod(0o600)
    _database_url = f"sqlite:///{_sqlite_file}"
DATABASES = {"default": dj_database_url.parse(_database_url, conn_max_age=0)}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Django's SQLite backend, each process reusing its closed connections (dataspace.sqlite_pool).
    DATABASES["default"]["ENGINE"] = "dataspace.sqlite_pool"
    # Concurrent readers while the in-process workers write.
    DATABASES["default"].setdefault("OPTIONS", {})
    # WAL lets readers run beside the one writer; synchronous=NORMAL is WAL's usual pairing
    # (durable at checkpoints, never corrupt), so each small round write is not an fsync.
    DATABASES["default"]["OPTIONS"].update(
        {
            "timeout": 30,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )
    # A file, not memory, so that server processes started by end-to-end tests share it.
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / "test.sqlite3")}
elif DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # A new PostgreSQL connection costs ~10 ms (a server process each); every request and every
    # pod message would pay it. Django's psycopg pool keeps a few open per process instead
    # (0 turns it off, e.g. behind PgBouncer). Celery's prefork children close the parent's.
    _pool_max = env_int("DATABASE_POOL_MAX_SIZE", 10)
    if _pool_max > 0:
        DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
            "min_size": min(env_int("DATABASE_POOL_MIN_SIZE", 2), _pool_max),
            "max_size": _pool_max,
            "timeout": env_int("DATABASE_POOL_TIMEOUT", 10),
        }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# ---------------------------------------------------------------------------------------------
# Redis: channel layer and Celery broker; unset means in-memory layer and in-process tasks.
# ---------------------------------------------------------------------------------------------
REDIS_URL = os.environ.get("REDIS_URL", "")
if REDIS_URL:
    # channels-redis's blocking receive must end before redis-py's socket timeout (both were
    # 5 s: idle WebSockets dropped every 5-7 s, issue 12): dataspace.channel_layers.
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "dataspace.channel_layers.RedisChannelLayer",
            "CONFIG": {
                "hosts": [REDIS_URL],
                "capacity": 1500,
                "expiry": 30,
            },
        }
    }
    CELERY_BROKER_URL = REDIS_URL
    CELERY_TASK_ALWAYS_EAGER = False
    # Shared by every process: the rounds clock's last tick (/readyz) and its once-per-interval
    # chores (training.rounds.sweeping).
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "dataspace",
        }
    }
else:
    # In memory, with its expiry scan at most once a second (dataspace.channel_layers).
    CHANNEL_LAYERS = {"default": {"BACKEND": "dataspace.channel_layers.InMemoryChannelLayer"}}
    CELERY_BROKER_URL = "memory://"
    CELERY_TASK_ALWAYS_EAGER = True
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_BACKEND = None

# ---------------------------------------------------------------------------------------------
# Auth, sessions, security
# ---------------------------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# django-axes first: it refuses a locked-out account or address before any password is checked.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
# Brute-force protection (dataspace.lockout): after LOGIN_FAILURE_LIMIT failures for one account
# (or OAuth client, or pairing key) or from one address, locked until LOGIN_COOLOFF_MINUTES
# after the last failure. Counted in the database, so every process agrees.
AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("LOGIN_COOLOFF_MINUTES", 15))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
# A success does not wipe the failures: axes would delete every attempt from that address too,
# so an attacker could log into their own account between guesses at someone else's.
AXES_RESET_ON_SUCCESS = False
AXES_LOCKOUT_CALLABLE = "dataspace.lockout.lockout_response"
# Never store what was typed in the password field (or a token) in the attempt log.
AXES_SENSITIVE_PARAMETERS = [
    "username",
    "ip_address",
    "password",
    "client_secret",
    "refresh_token",
    "device_code",
    "code",
    "token",
    "access_token",
]
AXES_VERBOSE = False
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "portal:home"
LOGOUT_REDIRECT_URL = "login"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES", default=not DEBUG and not EMBEDDED)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
BEHIND_PROXY = env_bool("BEHIND_PROXY")
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if BEHIND_PROXY else None
# Behind a TLS-terminating proxy: plain-HTTP requests are redirected to HTTPS, and browsers are
# told to use HTTPS only (HSTS, RFC 6797). The health probes stay plain HTTP: container health
# checks call them directly, not through the proxy.
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", default=BEHIND_PROXY)
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31_536_000 if BEHIND_PROXY else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=False)
SECURE_REFERRER_POLICY = "same-origin"
# Content-Security-Policy (django-csp) on every response: the portal loads only its own
# scripts, styles and images — no inline script or style, nothing from another origin — and
# may not be framed. The API docs page relaxes styles and workers for Redoc (dataspace/urls.py).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF, "data:"],
        "font-src": [SELF],
        # 'self' covers the same-origin ws:/wss: of the progress socket (CSP Level 3 §6.7.2.8).
        "connect-src": [SELF],
        "object-src": [NONE],
        "base-uri": [NONE],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    }
}

# E-mail (password resets): Django's SMTP backend once EMAIL_HOST is set. Without it, messages
# go to the console, which `check --deploy` refuses with DEBUG off (dataspace.E002): reset
# links in a production log would let anyone who reads the log take over accounts.
EMAIL_HOST = os.environ.get("EMAIL_HOST", "")
EMAIL_PORT = env_int("EMAIL_PORT", 587)
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL", default=EMAIL_PORT == 465)
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", default=not EMAIL_USE_SSL)
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 10)
EMAIL_BACKEND = os.environ.get("EMAIL_BACKEND") or (
    "django.core.mail.backends.smtp.EmailBackend"
    if EMAIL_HOST
    else "django.core.mail.backends.console.EmailBackend"
)
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "Dataspace <no-reply@dataspace.local>")

# ---------------------------------------------------------------------------------------------
# Static and media
# ---------------------------------------------------------------------------------------------
STATIC_URL = "static/"
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT", BASE_DIR / "staticfiles"))
MEDIA_ROOT = Path(os.environ.get("MEDIA_ROOT", DATA_DIR / "media"))
MEDIA_URL = "media/"  # never served publicly: blobs are handed out by authenticated views
# Weights, masked inputs and model versions: readable by the service's user only.
FILE_UPLOAD_PERMISSIONS = 0o600
FILE_UPLOAD_DIRECTORY_PERMISSIONS = 0o700
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
WHITENOISE_USE_FINDERS = True

# The portal and every privacy notice are in these languages (catalogs in dataspace/locale,
# .mo files committed; `make messages` refreshes them). English is the default and the source.
LANGUAGE_CODE = "en"
LANGUAGES = [("en", "English"), ("fr", "Français"), ("de", "Deutsch")]
LOCALE_PATHS = [BASE_DIR / "dataspace" / "locale"]
LANGUAGE_COOKIE_SAMESITE = "Lax"
LANGUAGE_COOKIE_SECURE = SESSION_COOKIE_SECURE
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# ---------------------------------------------------------------------------------------------
# REST API
# ---------------------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "dataspace.errors.api_exception_handler",
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "oauth2_provider.contrib.rest_framework.OAuth2Authentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    # One JSON parser for the whole API (nesting limit, NUL refused: dataspace.parsers).
    "DEFAULT_PARSER_CLASSES": [
        "dataspace.parsers.StrictJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Dataspace provider API",
    "DESCRIPTION": "Submit declarative models for consent-driven federated training.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Served from this service (drf-spectacular-sidecar), not from a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # <id:...> path parameters (dataspace.converters): a bounded positive bigint.
    "PATH_CONVERTER_OVERRIDES": {
        "id": {"type": "integer", "format": "int64", "minimum": 1, "maximum": 2**63 - 1}
    },
}
OAUTH2_PROVIDER = {
    "SCOPES": {
        "requests:write": "Submit and cancel model requests",
        "requests:read": "Read your model requests and their progress",
        "models:read": "Download trained models and model cards",
        "pod": "Act as a paired pod",
    },
    "DEFAULT_SCOPES": [],
    "ACCESS_TOKEN_EXPIRE_SECONDS": env_int("ACCESS_TOKEN_EXPIRE_SECONDS", 3600),
    "PKCE_REQUIRED": True,
    "SCOPES_BACKEND_CLASS": "training.oauth.ApplicationScopes",
    # RFC 8628: where a person approves a pod, and the link a pod can show as a QR code.
    "OAUTH_DEVICE_VERIFICATION_URI": f"{SITE_URL}/pods/pair/",
    "OAUTH_DEVICE_VERIFICATION_URI_COMPLETE": f"{SITE_URL}/pods/pair/?code={{user_code}}",
    "DEVICE_FLOW_INTERVAL": env_int("DEVICE_FLOW_INTERVAL", 5),
    "REFRESH_TOKEN_EXPIRE_SECONDS": env_int("REFRESH_TOKEN_EXPIRE_SECONDS", 90 * 24 * 3600),
    # RFC 9700 (OAuth 2.0 Security BCP), enforced rather than warned about:
    # no password grant (§2.4) and no implicit grant (§2.1.2), whatever an application says;
    "COMPLIANT_BCP_RFC9700_PASSWORD_GRANT": True,
    "COMPLIANT_BCP_RFC9700_IMPLICIT_GRANT": True,
    "COMPLIANT_BCP_RFC9700_PKCE_METHOD": True,
    # no bearer token in a query string (§4.3.2, RFC 6750 §5.3): it ends up in access logs;
    "COMPLIANT_BCP_RFC9700_ACCESS_TOKEN_TRANSPORT": True,
    # access and refresh tokens stored only as SHA-256 checksums: a database dump holds no
    # usable token (the raw value exists only in the token response).
    "COMPLIANT_BCP_RFC9700_TOKEN_STORAGE": True,
    # No redirect-based grant is mounted; should one ever be, its redirects are https only.
    "ALLOWED_REDIRECT_URI_SCHEMES": ["https"],
    "COMPLIANT_BCP_RFC9700_AUTHZ_RESPONSE_ISS": True,
}
OAUTH2_PROVIDER_APPLICATION_MODEL = "oauth2_provider.Application"
OAUTH2_PROVIDER_ACCESS_TOKEN_MODEL = "oauth2_provider.AccessToken"  # noqa: S105
OAUTH2_PROVIDER_REFRESH_TOKEN_MODEL = "oauth2_provider.RefreshToken"  # noqa: S105
OAUTH2_PROVIDER_ID_TOKEN_MODEL = "oauth2_provider.IDToken"  # noqa: S105
OAUTH2_PROVIDER_GRANT_MODEL = "oauth2_provider.Grant"
OAUTH2_PROVIDER_DEVICE_GRANT_MODEL = "oauth2_provider.DeviceGrant"
# The public OAuth2 client pods pair with (Device Authorization Grant, RFC 8628).
POD_CLIENT_ID = os.environ.get("POD_CLIENT_ID", "dataspace-pod")

# ---------------------------------------------------------------------------------------------
# Dataspace
# ---------------------------------------------------------------------------------------------
# Ed25519 key that signs consent receipts: base64 of the 32-byte raw private key. Unset in the
# embedded default or DEBUG: generated once into DATA_DIR (0600). Unset otherwise: refused.
RECEIPT_SIGNING_KEY = os.environ.get("RECEIPT_SIGNING_KEY", "")
RECEIPT_SIGNING_KEY_FILE = DATA_DIR / "receipt-signing.key"
CONTROLLER_NAME = os.environ.get("CONTROLLER_NAME", "Dataspace Service")
CONTROLLER_CONTACT = os.environ.get("CONTROLLER_CONTACT", "privacy@dataspace.local")
CONTROLLER_DPO = os.environ.get("CONTROLLER_DPO", "dpo@dataspace.local")
# How long a consent stays valid unless withdrawn (days).
CONSENT_TTL_DAYS = env_int("CONSENT_TTL_DAYS", 365)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

# Limits on what a provider may submit (training.modelspec.SpecLimits).
MODEL_MAX_PARAMETERS = env_int("MODEL_MAX_PARAMETERS", 10_000_000)
MODEL_MAX_LAYERS = env_int("MODEL_MAX_LAYERS", 64)
MODEL_MAX_WEIGHTS_BYTES = env_int("MODEL_MAX_WEIGHTS_BYTES", 64 * 1024 * 1024)
MODEL_MAX_FEATURES = env_int("MODEL_MAX_FEATURES", 4096)
MODEL_MAX_SPEC_BYTES = env_int("MODEL_MAX_SPEC_BYTES", 256 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("DATA_UPLOAD_MAX_MEMORY_SIZE", 2_621_440)

# The pod channel, rounds, their clock, Celery's delivery guarantees and notifications.
from .rounds import *  # noqa: E402, F403
