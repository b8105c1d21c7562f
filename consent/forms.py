from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.contrib.auth.forms import UserCreationForm, UsernameField
from django.contrib.auth.models import User
from django.core.validators import MinValueValidator
from django.utils.translation import gettext_lazy as _

from pods.models import Pod
from training.models import PurposeCategory

from .models import ConsentRule, NotificationKind, NotificationPreference, RuleAction


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


# -- standing preferences, notifications and renewal (issue 15) ---------------------------------

ANY = ""


class RuleForm(forms.ModelForm[ConsentRule]):
    special_category = forms.TypedChoiceField(
        label=_("Special-category data (GDPR Art. 9, e.g. health)"),
        choices=[
            (ANY, _("Any data")),
            ("yes", _("Only special-category data")),
            ("no", _("Only data that is not special-category")),
        ],
        coerce=lambda v: {"yes": True, "no": False}.get(v),
        empty_value=None,
        required=False,
    )
    purpose_category = forms.ChoiceField(
        label=_("Purpose"),
        choices=[(ANY, _("Any purpose")), *PurposeCategory.choices],
        required=False,
    )
    action = forms.ChoiceField(
        label=_("What to do"),
        choices=RuleAction.choices,
        initial=RuleAction.ASK,
        widget=forms.RadioSelect,
        help_text=_("A rule never agrees for you: agreeing is always your own act."),
    )

    class Meta:
        model = ConsentRule
        fields = (
            "provider",
            "purpose_category",
            "data_category",
            "special_category",
            "without_dp",
            "epsilon_above",
            "cohort_below",
            "action",
        )
        labels = {
            "provider": _("Provider"),
            "data_category": _("Data category"),
            "without_dp": _("Only requests without differential privacy"),
            "epsilon_above": _("Only requests whose privacy budget ε is above"),
            "cohort_below": _("Only requests that may train in groups smaller than"),
        }
        help_texts = {
            "epsilon_above": _("Requests without differential privacy count as above any budget."),
            "cohort_below": _("people (the request's smallest allowed group)"),
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["provider"].empty_label = _("Any provider")  # type: ignore[attr-defined]
        self.fields["data_category"].empty_label = _("Any data category")  # type: ignore[attr-defined]
        self.fields["epsilon_above"].min_value = 0  # type: ignore[attr-defined]
        self.fields["epsilon_above"].validators.append(MinValueValidator(0))
        self.fields["cohort_below"].validators.append(MinValueValidator(2))
        if self.instance.pk is not None:
            value = self.instance.special_category
            self.initial["special_category"] = ANY if value is None else ("yes" if value else "no")


class NotificationPreferenceForm(forms.ModelForm[NotificationPreference]):
    class Meta:
        model = NotificationPreference
        fields = ("new_request", "expiring", "completed", "withdrawn")
        labels = {kind: label for kind, label in NotificationKind.choices}


class RenewForm(forms.Form):
    notice_hash = forms.RegexField(regex=r"^[0-9a-f]{64}$", widget=forms.HiddenInput)
