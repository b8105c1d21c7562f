"""The OAuth 2.0 endpoints this product uses, and no others.

Providers use the client-credentials grant at ``token/``; pods use the Device Authorization
Grant (RFC 8628: ``device-authorization/`` then ``token/``), refresh at ``token/`` and may
revoke (RFC 7009). Nothing else of django-oauth-toolkit is mounted: no authorization endpoint
(so no implicit or code grant), no introspection (resource and authorization server are one
process), no application registration or management pages (clients are made by staff in the
admin or with ``manage.py create_provider``), no dynamic client registration.
"""

from __future__ import annotations

from django.urls import path
from oauth2_provider import views

from pods.oauth_views import PodAwareTokenView

app_name = "oauth2_provider"

urlpatterns = [
    path("token/", PodAwareTokenView.as_view(), name="token"),
    path(
        "device-authorization/",
        views.DeviceAuthorizationView.as_view(),
        name="device-authorization",
    ),
    path("revoke_token/", views.RevokeTokenView.as_view(), name="revoke-token"),
]
