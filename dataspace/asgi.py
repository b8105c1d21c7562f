"""ASGI entry point: HTTP through Django, WebSockets (``/ws/...``) through Channels."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dataspace.settings")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from consent.scheduler import start_in_process  # noqa: E402
from dataspace.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        # Sessions let a signed-in person follow a request's progress (/ws/requests/<id>/);
        # pods and providers authenticate with a bearer token in their first message instead.
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
        ),
    }
)

# The embedded default sends notifications from this process (production: Celery beat).
start_in_process()
