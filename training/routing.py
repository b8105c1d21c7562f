"""WebSocket routes of the training app: live progress of one model request."""

from channels.auth import AuthMiddlewareStack
from django.urls import path

from .consumers import RequestProgressConsumer

websocket_urlpatterns = [
    # A signed-in person follows a request by their session cookie; a provider by a token.
    path("ws/requests/<uuid:request_id>/", AuthMiddlewareStack(RequestProgressConsumer.as_asgi())),
]
