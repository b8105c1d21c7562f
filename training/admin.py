from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from .models import ModelRequest, Provider, ProviderClient
from .services import provider_client_issue


class ProviderClientInline(admin.TabularInline[ProviderClient, Provider]):
    model = ProviderClient
    fields = ("application", "created_at")
    readonly_fields = fields
    extra = 0
    can_delete = True

    def has_add_permission(self, request: HttpRequest, obj: Provider | None = None) -> bool:
        return False


@admin.register(Provider)
class ProviderAdmin(admin.ModelAdmin[Provider]):
    list_display = ("name", "contact_email", "dpo_email", "created_at")
    search_fields = ("name",)
    inlines = [ProviderClientInline]
    actions = ["issue_credentials"]

    @admin.action(description="Issue API credentials (client credentials grant)")
    def issue_credentials(self, request: HttpRequest, queryset: QuerySet[Provider]) -> None:
        for provider in queryset:
            application, secret = provider_client_issue(provider=provider)
            # Shown once, to the operator who asked; stored only hashed.
            self.message_user(
                request,
                f"{provider.name}: client_id {application.client_id}, client_secret {secret} "
                "(copy it now; it is not shown again).",
                messages.WARNING,
            )


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
