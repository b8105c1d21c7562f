from django.apps import AppConfig


class DataspaceConfig(AppConfig):
    name = "dataspace"
    verbose_name = "Dataspace catalog"

    def ready(self) -> None:
        from dataspace import (
            checks,  # noqa: F401  (registers system checks)
            logfilters,
        )

        logfilters.install()
