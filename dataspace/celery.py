"""The Celery application. With no ``REDIS_URL`` tasks run eagerly in-process (embedded default)."""

import os

from celery import Celery
from celery.signals import worker_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dataspace.settings")

app = Celery("dataspace")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_init.connect
def _load_the_model_update(**_: object) -> None:
    """Workers load the model update (torch) before forking their pool, so the first root
    a fresh worker runs does not pay for the import; beat and web processes never load it."""
    import training.rounds.model_update  # noqa: F401
