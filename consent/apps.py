from django.apps import AppConfig


class ConsentConfig(AppConfig):
    name = "consent"
    verbose_name = "Consent"

    def ready(self) -> None:
        # Celery wiring: register consent.tasks (the notification tick Celery beat schedules)
        # in every process, as training does for its tasks, so workers list it at start.
        from dataspace.celery import app as celery_app

        celery_app.autodiscover_tasks(["consent"], force=True)
