"""Dataspace project package: settings, URLs, ASGI entry point, Celery app, data catalog."""

from .celery import app as celery_app

__all__ = ["celery_app"]
