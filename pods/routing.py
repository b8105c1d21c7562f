from django.urls import path

from .consumers import PodConsumer

# No session or cookie middleware: a pod authenticates with its bearer token and identity key
# in its first messages, and thousands stay connected (no per-connection user lookup, no
# session wrapper around every message they are sent).
websocket_urlpatterns = [path("ws/pods/", PodConsumer.as_asgi())]
