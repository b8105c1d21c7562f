"""WebSocket routes of the training app: live progress of one model request."""

from django.urls import path

from .consumers import RequestProgressConsumer

websocket_urlpatterns = [
    path("ws/requests/<uuid:request_id>/", RequestProgressConsumer.as_asgi()),
]
