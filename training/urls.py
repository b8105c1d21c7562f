from django.urls import path

from . import api

app_name = "api"

urlpatterns = [
    path("categories/", api.CategoryListApi.as_view(), name="categories"),
    path("model-requests/", api.ModelRequestListApi.as_view(), name="model-requests"),
    path(
        "model-requests/<uuid:request_id>/",
        api.ModelRequestDetailApi.as_view(),
        name="model-request",
    ),
    path(
        "model-requests/<uuid:request_id>/cancel/",
        api.ModelRequestCancelApi.as_view(),
        name="model-request-cancel",
    ),
    path(
        "model-requests/<uuid:request_id>/rounds/",
        api.ModelRequestRoundsApi.as_view(),
        name="model-request-rounds",
    ),
    path(
        "model-requests/<uuid:request_id>/model",
        api.ModelRequestModelApi.as_view(),
        name="model-request-model",
    ),
    path(
        "model-requests/<uuid:request_id>/model-card",
        api.ModelRequestModelCardApi.as_view(),
        name="model-request-model-card",
    ),
    path(
        "model-requests/<uuid:request_id>/model-card.html",
        api.ModelRequestModelCardPageApi.as_view(),
        name="model-request-model-card-page",
    ),
]
