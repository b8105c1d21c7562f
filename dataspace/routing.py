"""WebSocket routes of every app, gathered in one list for the ASGI router."""

from pods.routing import websocket_urlpatterns as pod_routes

websocket_urlpatterns = [*pod_routes]
