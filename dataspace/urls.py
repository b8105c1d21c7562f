from csp.constants import SELF, UNSAFE_INLINE
from csp.decorators import csp_update
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView

from consent import views as consent_views
from dataspace import health
from training import views as training_views

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path(
        ".well-known/dataspace/receipt-keys.json",
        consent_views.receipt_keys,
        name="receipt-keys",
    ),
    path("admin/", admin.site.urls),
    path("o/", include("dataspace.oauth_urls")),
    path("api/v1/", include("training.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path(
        "api/docs/",
        # Redoc styles itself with injected <style> elements and searches in a blob: worker.
        csp_update({"style-src": [UNSAFE_INLINE], "worker-src": [SELF, "blob:"]})(
            SpectacularRedocView.as_view(url_name="schema")
        ),
        name="api-docs",
    ),
    path("accounts/signup/", consent_views.signup, name="signup"),
    path(
        "accounts/password_reset/",
        auth_views.PasswordResetView.as_view(
            email_template_name="registration/password_reset_email.txt"
        ),
        name="password_reset",
    ),
    path("accounts/", include("django.contrib.auth.urls")),
    path("pods/", include("pods.urls")),
    path("api/v1/pod/", include("pods.api_urls")),
    path(
        "participation/<uuid:request_id>/model-card/",
        training_views.model_card,
        name="model-card",
    ),
    path("", include("consent.urls")),
]

handler400 = "dataspace.error_pages.bad_request"
handler403 = "dataspace.error_pages.permission_denied"
handler404 = "dataspace.error_pages.not_found"
handler500 = "dataspace.error_pages.server_error"
