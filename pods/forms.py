from django import forms
from django.utils.translation import gettext_lazy as _


class PairCodeForm(forms.Form):
    code = forms.CharField(
        label=_("Code shown by your pod"),
        max_length=20,
        help_text=_("Eight letters and digits, for example 4F7K-Q2M9."),
        widget=forms.TextInput(attrs={"autocomplete": "off", "autocapitalize": "characters"}),
    )


class RenameForm(forms.Form):
    name = forms.CharField(label=_("New name"), max_length=100)
