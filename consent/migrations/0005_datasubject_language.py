from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("consent", "0004_standing_rules_notifications_renewal"),
    ]

    operations = [
        migrations.AddField(
            model_name="datasubject",
            name="language",
            field=models.CharField(
                blank=True,
                choices=[("en", "English"), ("fr", "Français"), ("de", "Deutsch")],
                default="",
                help_text="The portal's and notices' language for this person; empty: the browser's.",
                max_length=8,
            ),
        ),
    ]
