from django.contrib import admin

from .models import Pod


@admin.register(Pod)
class PodAdmin(admin.ModelAdmin[Pod]):
    list_display = ("name", "owner", "fingerprint", "status", "last_seen_at", "agent_version")
    list_filter = ("status",)
    search_fields = ("name", "fingerprint")
    readonly_fields = ("public_key", "fingerprint", "last_seen_at", "created_at", "revoked_at")
