from django.apps import AppConfig


class ConsentConfig(AppConfig):
    name = "consent"
    verbose_name = "Consent"

    def ready(self) -> None:
        from django.contrib.auth.signals import user_logged_in

        from .languages import on_login

        user_logged_in.connect(on_login, dispatch_uid="consent.languages.on_login")
