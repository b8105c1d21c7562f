from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.contrib.auth.forms import UserCreationForm, UsernameField
from django.contrib.auth.models import User
from django.utils.translation import gettext_lazy as _

from pods.models import Pod


class SignUpForm(UserCreationForm[User]):
    email = forms.EmailField(
        required=True, help_text=_("Used only to reset your password."), label=_("E-mail")
    )

    class Meta:
        model = User
        fields = ("username", "email")
        field_classes = {"username": UsernameField}


class DecisionForm(forms.Form):
    decision = forms.ChoiceField(choices=[("agree", _("Agree")), ("decline", _("Decline"))])
    notice_hash = forms.RegexField(regex=r"^[0-9a-f]{64}$", widget=forms.HiddenInput)
    # The language of the notice the person read (its hash is notice_hash); default: the page's.
    language = forms.ChoiceField(
        choices=settings.LANGUAGES, required=False, widget=forms.HiddenInput
    )
    pod = forms.ModelChoiceField(
        queryset=Pod.objects.none(),
        required=False,
        label=_("Pod that takes part"),
        help_text=_("The device whose data is used. You can pair one later."),
    )

    def __init__(self, *args: Any, user: User, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        pods = Pod.objects.filter(owner=user, status=Pod.Status.ACTIVE).order_by("name")
        self.fields["pod"].queryset = pods  # type: ignore[attr-defined]
        self.fields["pod"].empty_label = _("No pod yet") if not pods.exists() else None  # type: ignore[attr-defined]


class PauseForm(forms.Form):
    paused = forms.TypedChoiceField(
        choices=[("1", _("Pause")), ("0", _("Resume"))], coerce=lambda v: v == "1"
    )
