"""Settings of the test project: the default storage is a ContentStoreStorage."""

import os
import tempfile

SECRET_KEY = "streamstore-tests-only"
DEBUG = False
ALLOWED_HOSTS = ["testserver", "127.0.0.1", "localhost"]
ROOT_URLCONF = "djproject.urls"
USE_TZ = True
INSTALLED_APPS = ["djproject.app"]
MIDDLEWARE = [
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
]
# Tests override MEDIA_ROOT per test; a server process is given its own.
MEDIA_ROOT = os.environ.get("STREAMSTORE_TEST_MEDIA") or os.path.join(
    tempfile.gettempdir(), f"streamstore-djmedia-{os.getpid()}")
MEDIA_URL = "/media/"
STORAGES = {
    "default": {"BACKEND": "streamstore.django.ContentStoreStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
STREAMSTORE_UPLOAD_MAX_SIZE = 1024 * 1024
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"null": {"class": "logging.NullHandler"}},
    "loggers": {
        "django.request": {"handlers": ["null"], "propagate": False},
        "django.security": {"handlers": ["null"], "propagate": False},
    },
}
