"""The public OAuth2 client every pod pairs with (Device Authorization Grant, RFC 8628)."""

from django.conf import settings
from django.db import migrations


def create(apps, schema_editor):
    Application = apps.get_model("oauth2_provider", "Application")
    Application.objects.get_or_create(
        client_id=settings.POD_CLIENT_ID,
        defaults={
            "name": "Dataspace pod",
            "client_type": "public",
            "authorization_grant_type": "urn:ietf:params:oauth:grant-type:device_code",
            "client_secret": "",
            "skip_authorization": False,
        },
    )


def remove(apps, schema_editor):
    apps.get_model("oauth2_provider", "Application").objects.filter(
        client_id=settings.POD_CLIENT_ID
    ).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("pods", "0001_initial"),
        migrations.swappable_dependency(settings.OAUTH2_PROVIDER_APPLICATION_MODEL),
    ]
    operations = [migrations.RunPython(create, remove)]
