from django.urls import path

from dataspace import converters  # noqa: F401  (registers <id:...>)

from . import api, key_log_api

app_name = "pod-api"

urlpatterns = [
    path("pairing/", api.PairingApi.as_view(), name="pairing"),
    path("me/", api.MeApi.as_view(), name="me"),
    path("me/report/", api.ReportApi.as_view(), name="report"),
    path("categories/", api.PodCategoriesApi.as_view(), name="categories"),
    path("receipts/<uuid:request_id>/", api.ReceiptApi.as_view(), name="receipt"),
    path("key-log/head/", key_log_api.KeyLogHeadApi.as_view(), name="key-log-head"),
    path(
        "key-log/entries/<int:index>/", key_log_api.KeyLogEntryApi.as_view(), name="key-log-entry"
    ),
    path(
        "key-log/pods/<uuid:pod_id>/",
        key_log_api.KeyLogPodEntryApi.as_view(),
        name="key-log-pod-entry",
    ),
    path(
        "key-log/consistency/",
        key_log_api.KeyLogConsistencyApi.as_view(),
        name="key-log-consistency",
    ),
    path("key-log/mine/", key_log_api.KeyLogMineApi.as_view(), name="key-log-mine"),
    path("rounds/<id:round_id>/weights", api.RoundWeightsApi.as_view(), name="round-weights"),
    path("rounds/<id:round_id>/control", api.RoundControlApi.as_view(), name="round-control"),
    path(
        "rounds/<id:round_id>/candidates/<int:index>",
        api.RoundCandidateApi.as_view(),
        name="round-candidate",
    ),
    path("rounds/<id:round_id>/masked-input", api.MaskedInputApi.as_view(), name="masked-input"),
]
