"""ASGI entry point: HTTP through Django, WebSockets (``/ws/...``) through Channels."""

import gc
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

# Garbage collection for a process holding thousands of connections. With CPython's defaults
# (700, 10, 10) each message promoted the objects it had in flight, and a full collection
# walked every connection's objects twice a minute: at 10,000 idle pods, 2 s each, 44 % of the
# server's CPU (measured with gc.callbacks). The objects made while starting (modules, the
# URL and settings machinery) are frozen out of every collection, and the youngest generation
# is collected every 20,000 allocations rather than every 700, so few objects in flight are
# caught and promoted.
GC_THRESHOLDS = (20_000, 10, 10)
gc.freeze()
gc.set_threshold(*GC_THRESHOLDS)
