from django.urls import path

from .consumers import PodConsumer

websocket_urlpatterns = [path("ws/pods/", PodConsumer.as_asgi())]
