from typing import Any

from django.apps import AppConfig


class PodsConfig(AppConfig):
    name = "pods"
    verbose_name = "Pods"

    def ready(self) -> None:
        from consent.signals import training_pause_changed

        training_pause_changed.connect(_on_paused, dispatch_uid="pods.paused")


def _on_paused(sender: Any, user: Any, paused: bool, **kwargs: Any) -> None:
    """ "Pause all training" closes the person's pod connections (code 4423) until resumed."""
    from dataspace import delivery

    from .agent.protocol import CloseCode
    from .models import Pod

    if paused:
        for pod_id in Pod.objects.filter(owner=user).values_list("pk", flat=True):
            delivery.close_pod(pod_id, CloseCode.PAUSED)
