from django.contrib import admin

from .models import ModelRequest, Provider


@admin.register(Provider)
class ProviderAdmin(admin.ModelAdmin[Provider]):
    list_display = ("name", "contact_email", "dpo_email", "created_at")
    search_fields = ("name",)


@admin.register(ModelRequest)
class ModelRequestAdmin(admin.ModelAdmin[ModelRequest]):
    list_display = ("title", "provider", "status", "current_round", "rounds", "created_at")
    list_filter = ("status", "purpose_category")
    search_fields = ("title",)
    readonly_fields = (
        "id",
        "plan_hash",
        "weights_sha256",
        "weights_size",
        "parameter_count",
        "current_round",
        "epsilon_spent",
        "recruiting_at",
        "finished_at",
        "created_at",
        "updated_at",
    )
