"""Dataspace project package: settings, URLs, ASGI entry point, Celery app, data catalog."""

from training.shared import allocator

# Every server process (web, worker, beat, manage.py) imports this package first: before anything
# large is allocated, a round's buffers are set to be reused, not page-faulted in afresh.
allocator.tune()

from .celery import app as celery_app  # noqa: E402

__all__ = ["celery_app"]
