from django.urls import path

from . import views

app_name = "pods"

urlpatterns = [
    path("", views.pod_list, name="list"),
    path("pair/", views.pair, name="pair"),
    path("pair/decide/", views.pair_decide, name="pair-decide"),
    path("<uuid:pod_id>/rename/", views.rename, name="rename"),
    path("<uuid:pod_id>/revoke/", views.revoke, name="revoke"),
]
