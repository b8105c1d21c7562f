from django import forms


class PairCodeForm(forms.Form):
    code = forms.CharField(
        label="Code shown by your pod",
        max_length=20,
        help_text="Eight letters and digits, for example 4F7K-Q2M9.",
        widget=forms.TextInput(attrs={"autocomplete": "off", "autocapitalize": "characters"}),
    )


class RenameForm(forms.Form):
    name = forms.CharField(label="New name", max_length=100)
