from django.urls import path

from . import views

app_name = "portal"

urlpatterns = [
    path("", views.home, name="home"),
    path("requests/<uuid:request_id>/", views.request_detail, name="request"),
    path("requests/<uuid:request_id>/decide/", views.request_decide, name="decide"),
    path("consents/", views.consent_list, name="consents"),
    path("consents/export.json", views.consent_export, name="export"),
    path("consents/<uuid:consent_id>/withdraw/", views.consent_withdraw, name="withdraw"),
    path("consents/<uuid:consent_id>/receipt.json", views.consent_receipt, name="receipt"),
    path("participation/", views.participation, name="participation"),
    path("settings/pause/", views.training_pause, name="pause"),
    path("settings/language/", views.language_switch, name="language"),
]
