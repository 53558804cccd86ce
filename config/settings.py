"""Steadyshot settings: one module, read from the environment.

Local defaults are safe and need nothing (SQLite and the secret key under var/, the
embedded Redis that `make run` starts, the sandbox upstream). Production sets the
variables listed in .env.example; with DEBUG off, SECRET_KEY is required.
"""

import os
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from django.utils.csp import CSP

from config.env import env_bool, env_float, env_int, env_list, env_str, local_secret_key
from config.storage import media_storage_entry

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("VAR_DIR", str(BASE_DIR / "var")))

DEBUG = env_bool("DEBUG", True)

SECRET_KEY = env_str("SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off.")
    SECRET_KEY = local_secret_key(VAR_DIR)

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
SITE_URL = env_str("SITE_URL", "http://127.0.0.1:8000").rstrip("/")

INSTALLED_APPS = [
    "accounts",
    "quotas",
    "generator",
    "monitoring",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django_rq",
    # django-ninja's templates and static files: /api/docs is served from here, not a CDN.
    "ninja",
    # Failed log-ins by account and by address (accounts/throttle.py).
    "axes",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django.middleware.csp.ContentSecurityPolicyMiddleware",
    # Last, as axes asks: it answers a locked-out log-in with accounts.throttle's page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

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
                "django.template.context_processors.csp",
                "accounts.context_processors.teams",
                "monitoring.context_processors.alerts",
                "generator.context_processors.sandbox",
            ],
        },
    },
]

# --- Data -------------------------------------------------------------------------------
DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'steadyshot.sqlite3'}",
        conn_max_age=env_int("DB_CONN_MAX_AGE", 60),
        conn_health_checks=True,
    )
}
# Behind PgBouncer in transaction mode a cursor cannot outlive its transaction: set this
# so that .iterator() reads in chunks without server-side cursors (docs/deploy.md).
DATABASES["default"]["DISABLE_SERVER_SIDE_CURSORS"] = env_bool(
    "DB_DISABLE_SERVER_SIDE_CURSORS", False
)
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL and a busy timeout let the web process and the workers share the file without
    # "database is locked" errors; IMMEDIATE transactions take the write lock up front.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }
    # A file, not memory: integration tests run real workers in other processes against
    # the test database. The unit tier alone (`make test-fast`) runs in memory.
    if not env_bool("TEST_DB_IN_MEMORY", False):
        DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test.sqlite3")}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "accounts.User"

# The default is the private Redis that `make run` starts on a socket under var/.
REDIS_URL = env_str("REDIS_URL", f"unix://{VAR_DIR / 'redis' / 'redis.sock'}?db=0")
# Workers listen on "maintenance" first: the reconciler, rollups and alerts must run
# on time even when hundreds of generation steps wait in "default".
RQ_QUEUES = {
    "maintenance": {"URL": REDIS_URL, "DEFAULT_TIMEOUT": 600},
    "default": {"URL": REDIS_URL, "DEFAULT_TIMEOUT": 600},
}
RQ_SHOW_ADMIN_LINK = True
# The throttles' counters (accounts/throttle.py), in Redis so that every web process and
# host shares them; short timeouts, as a throttle must never hang a log-in.
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "throttle": {
        "BACKEND": "config.caches.SharedRedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "throttle",
        "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
    },
}
RATELIMIT_USE_CACHE = "throttle"
RATELIMIT_FAIL_OPEN = True
# Every worker (make run's, `manage.py rqworker`'s, the tests') stops in bounded time:
# on SIGTERM its current step gets WORKER_STOP_GRACE_SECONDS to finish, then it is handed
# back to the queue for another worker (generator/worker.py).
RQ = {"WORKER_CLASS": "generator.worker.StepWorker"}
WORKER_STOP_GRACE_SECONDS = env_float("WORKER_STOP_GRACE_SECONDS", 25.0)
# The upstream calls themselves are made by caller processes (`manage.py caller`,
# generator/caller): `make run` starts CALLERS of them, each keeping at most
# CALLER_CONCURRENCY calls in flight at once (the rest wait in Redis). On SIGTERM a
# caller's calls get WORKER_STOP_GRACE_SECONDS to finish, then are handed back.
CALLERS = env_int("CALLERS", 1)
CALLER_CONCURRENCY = env_int("CALLER_CONCURRENCY", 256)

# --- Upstream ---------------------------------------------------------------------------
# With no GEMINI_API_KEY every provider talks to the local sandbox server (never to a
# remote host); with one, Gemini goes to GEMINI_BASE_URL and the OpenAI-compatible model
# is used only when OPENAI_API_KEY is set too.
GEMINI_API_KEY = env_str("GEMINI_API_KEY")
GEMINI_BASE_URL = env_str("GEMINI_BASE_URL", "https://generativelanguage.googleapis.com")
GEMINI_API_VERSION = env_str("GEMINI_API_VERSION", "v1beta")
OPENAI_API_KEY = env_str("OPENAI_API_KEY")
OPENAI_BASE_URL = env_str("OPENAI_BASE_URL", "https://api.openai.com/v1")
SANDBOX_URL = env_str("SANDBOX_URL", "http://127.0.0.1:8765").rstrip("/")
UPSTREAM_SANDBOX = not GEMINI_API_KEY
MODEL_CATALOGUE_FILE = env_str("MODEL_CATALOGUE_FILE")
# Multiplies every duration of the retry policy, breakers and limiters (and the
# sandbox's): 0.01 runs an hour of upstream behaviour in 36 s, for drills and tests.
TIME_SCALE = env_float("TIME_SCALE", 1.0)
# What TIME_SCALE must not shrink below, in real seconds (docs/jobs.md, "Real time"):
# these measure this machine (a queue behind busy workers, the scheduler's one-second
# tick), not the upstream's behaviour. At TIME_SCALE 0.0001 a request's 1200 s budget
# would be 0.12 s and every request that waited in the queue would fail "out of time".
# Leases, grace periods, timeouts and the cron's ticks are real seconds already.
REQUEST_BUDGET_FLOOR_S = env_float("REQUEST_BUDGET_FLOOR_S", 120.0)

# --- Jobs ------------------------------------------------------------------------------
# A running request's lease: the worker renews it every third of this while it waits on
# the upstream; a worker that dies stops renewing, and the reconciler takes the request
# back once the lease has expired.
LEASE_SECONDS = env_int("LEASE_SECONDS", 30)
# RQ kills a job that runs longer than this (the longest read timeout plus margin).
JOB_TIMEOUT_SECONDS = env_int("JOB_TIMEOUT_SECONDS", 420)
# At most this many jobs of one team are queued or running at once.
TEAM_CONCURRENCY = env_int("TEAM_CONCURRENCY", 4)
# The reconciler leaves hand-overs younger than this alone (their job may not be in
# Redis yet), and fails a request after this many recoveries from dead workers.
RECONCILE_GRACE_SECONDS = env_int("RECONCILE_GRACE_SECONDS", 60)
MAX_RECOVERIES = env_int("MAX_RECOVERIES", 3)
# The RQ scheduler after a crash (generator/scheduling.py), real seconds: a scheduler
# whose heartbeat (every second) is older than this is dead and its lock is released;
# a worker without a scheduler looks this often; the reconciler moves scheduled jobs
# overdue by more than this to their queue (no scheduler ran).
SCHEDULER_STALE_SECONDS = env_int("SCHEDULER_STALE_SECONDS", 20)
SCHEDULER_CHECK_SECONDS = env_float("SCHEDULER_CHECK_SECONDS", 5.0)
RECONCILE_OVERDUE_SECONDS = env_int("RECONCILE_OVERDUE_SECONDS", 30)
# The OpenAI-compatible endpoint answers synchronously: how long it waits for the chain
# before answering 504 with the ids to poll on the JSON API.
OPENAI_COMPAT_WAIT_SECONDS = env_float("OPENAI_COMPAT_WAIT_SECONDS", 300.0)

# --- Economy requests and Batch mode (generator/economy.py, batching.py; docs/economy.md) --
# Economy requests go through Gemini's Batch mode at half price; with it off they wait
# for the calmest hour before their deadline instead, and are called directly then.
BATCH_MODE = env_bool("BATCH_MODE", True)
# Seconds, times TIME_SCALE: how far ahead an economy request's "deliver by" must be,
# and how long before it a request still waiting on its batch (or its off-peak hour)
# goes the normal way instead, in time for the chain to deliver.
ECONOMY_MIN_LEAD_S = env_float("ECONOMY_MIN_LEAD_S", 10800.0)
ECONOMY_DIRECT_MARGIN_S = env_float("ECONOMY_DIRECT_MARGIN_S", 1800.0)
# A batch is closed and sent once it holds BATCH_MAX_REQUESTS requests of one model and
# size, or its oldest request has waited BATCH_MAX_AGE_S (times TIME_SCALE).
BATCH_MAX_REQUESTS = env_int("BATCH_MAX_REQUESTS", 100)
BATCH_MAX_AGE_S = env_float("BATCH_MAX_AGE_S", 600.0)
# A sent batch is polled this often (seconds, times TIME_SCALE); the cron runs the
# batcher every BATCH_TICK_SECONDS (real seconds).
BATCH_POLL_S = env_float("BATCH_POLL_S", 60.0)
BATCH_TICK_SECONDS = env_int("BATCH_TICK_SECONDS", 30)
# Batches larger than this go as a JSONL file through the Files API (Google takes at
# most 20 MB inline); a batch the provider refuses BATCH_SUBMIT_TRIES times is given up
# and its requests go the normal way.
BATCH_INLINE_MAX_BYTES = env_int("BATCH_INLINE_MAX_BYTES", 20_000_000)
BATCH_SUBMIT_TRIES = env_int("BATCH_SUBMIT_TRIES", 5)

# --- Auth -------------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# The axes backend first: it refuses a locked-out log-in before a password is checked.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
LOGIN_URL = "accounts:login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "accounts:login"
INVITE_TTL_DAYS = env_int("INVITE_TTL_DAYS", 7)

# --- Throttles (accounts/throttle.py; docs/decisions.md) ---------------------------------
# Log-ins (django-axes): after LOGIN_FAILURE_LIMIT failures for one account, or from one
# address, log-ins there are refused, even with the right password, for
# LOGIN_COOLOFF_MINUTES. A password reset by e-mail unlocks the account; operators run
# `manage.py axes_reset_username EMAIL` or `axes_reset_ip ADDRESS`.
LOGIN_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 10)
LOGIN_COOLOFF_MINUTES = env_int("LOGIN_COOLOFF_MINUTES", 15)
AXES_FAILURE_LIMIT = LOGIN_FAILURE_LIMIT
AXES_COOLOFF_TIME = timedelta(minutes=LOGIN_COOLOFF_MINUTES)
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]  # either one, not the pair
AXES_USERNAME_FORM_FIELD = "username"  # the log-in form's name for the e-mail address
AXES_USERNAME_CALLABLE = "accounts.throttle.login_name"
AXES_LOCKOUT_CALLABLE = "accounts.throttle.login_locked"
AXES_RESET_ON_SUCCESS = True
# A locked account stays locked for the cool-off from its last counted failure, not
# from the attacker's last try: "try again in 15 minutes" stays true.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
# Failures only: a row per successful log-in would grow without bound.
AXES_DISABLE_ACCESS_LOG = True
AXES_VERBOSE = False
# Sign-ups and password reset mails per address (and reset mails per e-mail address),
# and API calls with an unknown token per address, in django-ratelimit's rates
# ("10/h", "20/10m"). Past a rate the caller waits for the window to end.
SIGNUP_RATE = env_str("SIGNUP_RATE", "10/h")
PASSWORD_RESET_RATE = env_str("PASSWORD_RESET_RATE", "5/h")
API_TOKEN_FAILURE_RATE = env_str("API_TOKEN_FAILURE_RATE", "20/10m")

# --- E-mail -----------------------------------------------------------------------------
# The console backend prints mails (password resets, alerts) to the log; set EMAIL_HOST
# to send them through an SMTP server instead.
_email_host = env_str("EMAIL_HOST")
if _email_host:
    MAILERS = {
        "default": {
            "BACKEND": "django.core.mail.backends.smtp.EmailBackend",
            "OPTIONS": {
                "host": _email_host,
                "port": env_int("EMAIL_PORT", 587),
                "username": env_str("EMAIL_HOST_USER"),
                "password": env_str("EMAIL_HOST_PASSWORD"),
                "use_tls": env_bool("EMAIL_USE_TLS", True),
            },
        }
    }
else:
    MAILERS = {"default": {"BACKEND": "django.core.mail.backends.console.EmailBackend"}}
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "Steadyshot <steadyshot@localhost>")
SERVER_EMAIL = DEFAULT_FROM_EMAIL
ADMINS = [a for a in env_list("ADMINS", []) if a]

# --- Internationalisation ----------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- Static and media -------------------------------------------------------------------
STATIC_URL = "/static/"
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(VAR_DIR / "static")))
if DEBUG:
    # WhiteNoise serves from the finders in development but expects the root to exist.
    STATIC_ROOT.mkdir(parents=True, exist_ok=True)
STATICFILES_DIRS = [BASE_DIR / "static"]
MEDIA_ROOT = Path(env_str("MEDIA_ROOT", str(VAR_DIR / "media")))
# Media is never served from a public URL: views check access and stream the file.
MEDIA_URL = "/media-not-public/"
# Images, thumbnails and references: the file system under MEDIA_ROOT unless STORAGE_URL
# names a private S3-compatible bucket (s3://BUCKET[/PREFIX], with the AWS_* variables of
# config/storage.py), which several web and worker machines can share.
STORAGE_URL = env_str("STORAGE_URL")
STORAGES = {
    "default": media_storage_entry(STORAGE_URL, os.environ),
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}
WHITENOISE_USE_FINDERS = DEBUG

# --- Security ---------------------------------------------------------------------------
# A strict policy: only our own scripts, styles and images; no inline code anywhere.
SECURE_CSP = {
    "default-src": [CSP.SELF],
    "script-src": [CSP.SELF],
    "style-src": [CSP.SELF],
    "img-src": [CSP.SELF, "data:", "blob:"],
    "connect-src": [CSP.SELF],
    "font-src": [CSP.SELF],
    "object-src": [CSP.NONE],
    "base-uri": [CSP.NONE],
    "form-action": [CSP.SELF],
    "frame-ancestors": [CSP.NONE],
}
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_HTTPONLY = True
# HTTPS settings default to on in production; a deploy behind plain HTTP on a private
# network can turn them off explicitly.
_HTTPS = env_bool("HTTPS", not DEBUG)
SESSION_COOKIE_SECURE = _HTTPS
CSRF_COOKIE_SECURE = _HTTPS
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", _HTTPS)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000 if _HTTPS else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = _HTTPS
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", _HTTPS)
if env_bool("BEHIND_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# --- Logging ----------------------------------------------------------------------------
LOG_LEVEL = env_str("LOG_LEVEL", "INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain"},
        "mail_admins": {
            "class": "django.utils.log.AdminEmailHandler",
            "level": "ERROR",
            "filters": ["require_debug_false"],
        },
    },
    "filters": {"require_debug_false": {"()": "django.utils.log.RequireDebugFalse"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.request": {"handlers": ["console", "mail_admins"], "level": "ERROR"},
        "httpx": {"level": "WARNING"},
        # Failed log-ins and lockouts only, not each attempt's bookkeeping.
        "axes": {"level": "WARNING"},
    },
}

# --- Upstream providers and sandbox (generator/upstream) -------------------------------
# The sandbox's fault profile at start (calm, peak, outage, quota or one of
# SANDBOX_PROFILES_FILE, a TOML file; see docs/sandbox.md) and the seed of its dice and
# pictures. Its durations follow TIME_SCALE.
SANDBOX_PROFILE = env_str("SANDBOX_PROFILE", "calm")
SANDBOX_SEED = env_int("SANDBOX_SEED", 0)
SANDBOX_PROFILES_FILE = env_str("SANDBOX_PROFILES_FILE")

# --- Retry and downgrade policy, shared health (generator/resilience/policy.py, health.py) --------
# Every duration here is in seconds and multiplied by TIME_SCALE; docs/resilience.md
# explains each default. Calls per request, all models together, and per model (the
# last usable model in the chain may use whatever is left).
POLICY_ATTEMPT_BUDGET = env_int("POLICY_ATTEMPT_BUDGET", 14)
POLICY_QUALITY_ATTEMPTS_PER_MODEL = env_int("POLICY_QUALITY_ATTEMPTS_PER_MODEL", 10)
POLICY_STABILITY_ATTEMPTS_PER_MODEL = env_int("POLICY_STABILITY_ATTEMPTS_PER_MODEL", 2)
# Full-jitter backoff between retries of one model: uniform(0, min(cap, base * 2**n)).
POLICY_BACKOFF_BASE_S = env_float("POLICY_BACKOFF_BASE_S", 2.0)
POLICY_BACKOFF_CAP_S = env_float("POLICY_BACKOFF_CAP_S", 30.0)
POLICY_RATE_LIMITED_DEFAULT_S = env_float("POLICY_RATE_LIMITED_DEFAULT_S", 30.0)
POLICY_MIN_WAIT_S = env_float("POLICY_MIN_WAIT_S", 0.5)
# Quality-first's wait limit for its first model when the request has no "deliver by":
# within it Pro is retried while an attempt can still deliver in time (docs/resilience.md,
# chosen by measurement: docs/benchmarks.md).
POLICY_QUALITY_PATIENCE_S = env_float("POLICY_QUALITY_PATIENCE_S", 210.0)
# Longest wait for a later model (open breaker, no quota headroom) before moving down the
# chain, and the longest server retry delay honoured; a deadline lets quality-first wait
# longer.
POLICY_QUALITY_MAX_WAIT_S = env_float("POLICY_QUALITY_MAX_WAIT_S", 15.0)
POLICY_QUALITY_MAX_RATE_LIMIT_WAIT_S = env_float("POLICY_QUALITY_MAX_RATE_LIMIT_WAIT_S", 60.0)
POLICY_STABILITY_MAX_WAIT_S = env_float("POLICY_STABILITY_MAX_WAIT_S", 5.0)
# Stability-first skips a model whose recent success rate is below this.
POLICY_STABILITY_MIN_SUCCESS_RATE = env_float("POLICY_STABILITY_MIN_SUCCESS_RATE", 0.5)
# Without a deadline a request gives up this long after it was submitted.
POLICY_REQUEST_BUDGET_S = env_float("POLICY_REQUEST_BUDGET_S", 1200.0)
# A call's length, successful and failed, until a model's own latencies are known.
POLICY_EXPECTED_CALL_S = env_float("POLICY_EXPECTED_CALL_S", 40.0)
POLICY_EXPECTED_FAILURE_S = env_float("POLICY_EXPECTED_FAILURE_S", 10.0)
# A request moves down its chain after this many failures in a row that it may have
# caused itself (500s, timeouts, no image, unreadable answers; never 503s) when the
# model's success rate with the other calls makes them this unlikely by chance.
POLICY_OWN_STREAK_MIN = env_int("POLICY_OWN_STREAK_MIN", 3)
POLICY_OWN_STREAK_EVIDENCE = env_float("POLICY_OWN_STREAK_EVIDENCE", 0.001)
# Circuit breaker per model, shared in Redis. It means "dead": it opens when
# BREAKER_DEAD_AFTER calls in a row failed, then lets one probe through BREAKER_PROBE_S
# later and, while probes fail, at intervals doubling up to BREAKER_PROBE_MAX_S; a
# probe's success closes it. BREAKER_WINDOW calls give a model's recent success rate.
BREAKER_WINDOW = env_int("BREAKER_WINDOW", 20)
BREAKER_DEAD_AFTER = env_int("BREAKER_DEAD_AFTER", 40)
BREAKER_PROBE_S = env_float("BREAKER_PROBE_S", 10.0)
BREAKER_PROBE_MAX_S = env_float("BREAKER_PROBE_MAX_S", 30.0)
BREAKER_PROBE_LEASE_S = env_float("BREAKER_PROBE_LEASE_S", 200.0)
# The workers together use at most this share of each catalogue quota (RPM, IPM, RPD);
# below 1 for other clients of the same Cloud project (docs/resilience.md, "Quotas").
LIMITER_SAFETY = env_float("LIMITER_SAFETY", 1.0)
# A booked quota slot used this much late still counts as that slot (the scheduler and the
# queue are not punctual); later, the booking is void and the step takes a new slot.
LIMITER_LATE_S = env_float("LIMITER_LATE_S", 10.0)

# --- Quotas (the quotas app) -------------------------------------------------------------
# Days and months of the team quotas run in this time zone (the "resets at" shown).
QUOTA_TIME_ZONE = env_str("QUOTA_TIME_ZONE", "UTC")
# Limits a new team starts with; unset or empty means unlimited. Owners change them on the
# team's quota page.
QUOTA_DEFAULT_IMAGES_PER_DAY = env_int("QUOTA_DEFAULT_IMAGES_PER_DAY", None)
QUOTA_DEFAULT_IMAGES_PER_MONTH = env_int("QUOTA_DEFAULT_IMAGES_PER_MONTH", None)
# A decimal string such as "50.00" (kept a string here; accounts.models checks it).
QUOTA_DEFAULT_MONTHLY_BUDGET_USD = env_str("QUOTA_DEFAULT_MONTHLY_BUDGET_USD").strip() or None
QUOTA_DEFAULT_MEMBER_DAILY_CAP = env_int("QUOTA_DEFAULT_MEMBER_DAILY_CAP", None)
# The quota page and the prompt page warn once this share of a limit is used or reserved.
QUOTA_WARNING_PERCENT = env_int("QUOTA_WARNING_PERCENT", 80)

# --- Web UI (generator/views.py) --------------------------------------------------------
# Reference images members upload to edit: the largest file and the most pixels accepted
# (checked on the header before decoding, so decompression bombs are refused cheaply).
REFERENCE_MAX_BYTES = env_int("REFERENCE_MAX_BYTES", 10_000_000)
REFERENCE_MAX_PIXELS = env_int("REFERENCE_MAX_PIXELS", 40_000_000)
# Longer side of the WebP thumbnails of the gallery, in pixels.
THUMBNAIL_SIZE = env_int("THUMBNAIL_SIZE", 512)
# Cards per gallery page ("load more" fetches the next page by keyset).
GALLERY_PAGE_SIZE = env_int("GALLERY_PAGE_SIZE", 24)
# A deleted image disappears at once; its files are removed this many days later (an
# operator can undo an accidental delete until then).
DELETED_RETENTION_DAYS = env_int("DELETED_RETENTION_DAYS", 7)
# The hourly sweep (generator/retention.py) deletes a stored file that no row points to
# once it is this old: longer than any transaction between a file's write and its row's
# commit, so a file about to be claimed is never taken.
ORPHAN_FILE_GRACE_MINUTES = env_int("ORPHAN_FILE_GRACE_MINUTES", 60)

# --- Monitoring (monitoring/) -----------------------------------------------------------
# /metrics answers only requests with "Authorization: Bearer <METRICS_TOKEN>"; with no
# token set it refuses every scrape rather than publish the numbers.
METRICS_TOKEN = env_str("METRICS_TOKEN")
# Alerts go to ADMINS by e-mail and, when set, as a JSON POST to this URL.
ALERT_WEBHOOK_URL = env_str("ALERT_WEBHOOK_URL")
# Rules are evaluated over this window and only above these counts (a rate over three
# requests says nothing).
ALERT_WINDOW_MINUTES = env_int("ALERT_WINDOW_MINUTES", 15)
ALERT_MIN_REQUESTS = env_int("ALERT_MIN_REQUESTS", 20)
ALERT_MIN_ERRORS = env_int("ALERT_MIN_ERRORS", 20)
ALERT_DELIVERED_RATE_BELOW = env_float("ALERT_DELIVERED_RATE_BELOW", 0.70)
ALERT_503_SHARE_ABOVE = env_float("ALERT_503_SHARE_ABOVE", 0.30)
ALERT_QUOTA_PERCENT = env_float("ALERT_QUOTA_PERCENT", 90.0)
ALERT_AUTH_ERRORS = env_int("ALERT_AUTH_ERRORS", 1)
# Raw attempts older than this are deleted by the prune job (the rollups stay); minute
# rollups are kept long enough for the 7-day window and the one before it.
MONITORING_RETENTION_DAYS = env_int("MONITORING_RETENTION_DAYS", 90)
MONITORING_MINUTE_ROLLUP_DAYS = env_int("MONITORING_MINUTE_ROLLUP_DAYS", 15)
MONITORING_HEATMAP_DAYS = env_int("MONITORING_HEATMAP_DAYS", 28)
