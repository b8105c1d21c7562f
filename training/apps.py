from typing import Any

from django.apps import AppConfig


class TrainingConfig(AppConfig):
    name = "training"
    verbose_name = "Training"

    def ready(self) -> None:
        from consent.signals import consent_withdrawn, training_pause_changed

        consent_withdrawn.connect(_on_withdrawn, dispatch_uid="training.withdrawn")
        training_pause_changed.connect(_on_paused, dispatch_uid="training.paused")
        # Celery wiring: the rounds engine enqueues its tasks by name; register them in every
        # process (the embedded default runs them eagerly, which needs them registered).
        from dataspace.celery import app as celery_app

        celery_app.autodiscover_tasks(["training"], force=True)


def _on_withdrawn(sender: Any, consent: Any, **kwargs: Any) -> None:
    """A withdrawal removes the person's pod from the request's running round at once."""
    from .rounds.answers import user_leaves_rounds

    user_leaves_rounds(
        user_id=consent.user_id,
        model_request_id=consent.model_request_id,
        reason="consent_withdrawn",
    )


def _on_paused(sender: Any, user: Any, paused: bool, **kwargs: Any) -> None:
    """ "Pause all training" removes the person's pods from every running round at once."""
    from .rounds.answers import user_leaves_rounds

    if paused:
        user_leaves_rounds(user_id=user.pk, reason="training_paused")
