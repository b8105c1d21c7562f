from django.apps import AppConfig


class ConsentConfig(AppConfig):
    name = "consent"
    verbose_name = "Consent"

    def ready(self) -> None:
        # Celery wiring: register consent.tasks (the notification tick Celery beat schedules)
        # in every process, as training does for its tasks, so workers list it at start.
        from dataspace.celery import app as celery_app

        celery_app.autodiscover_tasks(["consent"], force=True)

        from django.contrib.auth.signals import user_logged_in

        from .languages import on_login

        user_logged_in.connect(on_login, dispatch_uid="consent.languages.on_login")
