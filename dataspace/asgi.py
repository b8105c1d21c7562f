"""ASGI entry point: HTTP through Django, WebSockets (``/ws/...``) through Channels."""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dataspace.settings")
django.setup(set_prefix=False)  # what django.core.asgi.get_asgi_application does first

from dataspace.asgi_http import SyncChainASGIHandler  # noqa: E402

# Django's handler, with the middleware chain and view in one thread hop (dataspace.asgi_http).
django_asgi_app = SyncChainASGIHandler()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from consent.scheduler import start_in_process  # noqa: E402
from dataspace.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        # Each route states how it authenticates (dataspace.routing): sessions for people
        # following a request's progress; a bearer token in the first message for pods.
        "websocket": AllowedHostsOriginValidator(URLRouter(websocket_urlpatterns)),
    }
)

# The embedded default sends notifications from this process (production: Celery beat).
start_in_process()
