"""WebSocket routes of every app, gathered in one list for the ASGI router."""

from pods.routing import websocket_urlpatterns as pod_routes
from training.routing import websocket_urlpatterns as training_routes

websocket_urlpatterns = [*pod_routes, *training_routes]
