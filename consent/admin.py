from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from .models import Consent, ConsentEvent, DataSubject, Notification, PrivacyNotice


class ReadOnlyAdmin(admin.ModelAdmin[Any]):
    """Consent records change only through services; the admin shows them."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ConsentEventInline(admin.TabularInline[ConsentEvent, Consent]):
    model = ConsentEvent
    fields = ("seq", "event_type", "at", "actor", "method", "notice_hash", "hash")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Consent)
class ConsentAdmin(ReadOnlyAdmin):
    list_display = ("id", "model_request", "status", "decided_at", "expires_at")
    list_filter = ("status",)
    inlines = [ConsentEventInline]


@admin.register(ConsentEvent)
class ConsentEventAdmin(ReadOnlyAdmin):
    list_display = ("consent", "seq", "event_type", "at", "method")
    list_filter = ("event_type", "method")


@admin.register(PrivacyNotice)
class PrivacyNoticeAdmin(ReadOnlyAdmin):
    list_display = ("model_request", "version", "language", "content_hash", "created_at")


@admin.register(DataSubject)
class DataSubjectAdmin(ReadOnlyAdmin):
    list_display = ("pseudonym", "training_paused", "paused_changed_at")


@admin.register(Notification)
class NotificationAdmin(ReadOnlyAdmin):
    """Delivery state for operators (a failed mail server shows here); who and what is in the
    person's own inbox."""

    list_display = ("pk", "kind", "email_state", "email_attempts", "created_at", "emailed_at")
    list_filter = ("kind", "email_state")
    fields = ("kind", "email_state", "email_attempts", "created_at", "emailed_at")
