from django.urls import path

from . import views, views_prefs

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
    path("consents/<uuid:consent_id>/renew/", views_prefs.consent_renew_view, name="renew"),
    path("rules/", views_prefs.rule_list, name="rules"),
    path("rules/<int:rule_id>/", views_prefs.rule_edit, name="rule_edit"),
    path("rules/<int:rule_id>/delete/", views_prefs.rule_delete, name="rule_delete"),
    path("inbox/", views_prefs.inbox, name="inbox"),
    path(
        "settings/notifications/",
        views_prefs.notification_settings,
        name="notification_settings",
    ),
    path("unsubscribe/<str:token>/", views_prefs.unsubscribe, name="unsubscribe"),
    path("settings/language/", views.language_switch, name="language"),
]
