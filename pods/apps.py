from typing import Any

from django.apps import AppConfig


class PodsConfig(AppConfig):
    name = "pods"
    verbose_name = "Pods"

    def ready(self) -> None:
        from oauth2_provider.signals import app_authorized

        app_authorized.connect(_link_token, dispatch_uid="pods.link_token")


def _link_token(sender: Any, request: Any, token: Any, **kwargs: Any) -> None:
    from .services import pod_token_link

    device_code = request.POST.get("device_code") if hasattr(request, "POST") else None
    pod_token_link(token=token, device_code=device_code)
