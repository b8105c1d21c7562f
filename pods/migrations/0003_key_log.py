"""The append-only key log; on PostgreSQL a trigger refuses UPDATE and DELETE on it.

The model layer refuses them too; the trigger is the backstop against raw SQL and bulk paths.
(TRUNCATE, used by test teardown and by an operator wiping a database, is not a row event.)
"""

import django.db.models.deletion
from django.db import migrations, models


CREATE = """
CREATE OR REPLACE FUNCTION pods_key_log_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'the key log is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER pods_key_log_append_only
    BEFORE UPDATE OR DELETE ON pods_keylogentry
    FOR EACH ROW EXECUTE FUNCTION pods_key_log_append_only();
"""

DROP = """
DROP TRIGGER IF EXISTS pods_key_log_append_only ON pods_keylogentry;
DROP FUNCTION IF EXISTS pods_key_log_append_only();
"""


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE, params=None)


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP, params=None)


class Migration(migrations.Migration):

    dependencies = [
        ('pods', '0002_pod_application'),
    ]

    operations = [
        migrations.CreateModel(
            name='KeyLogEntry',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('index', models.PositiveBigIntegerField(unique=True)),
                ('account', models.BinaryField(help_text='account_commitment(pseudonym, pod id)', max_length=32)),
                ('public_key', models.BinaryField(max_length=32)),
                ('timestamp_ms', models.PositiveBigIntegerField()),
                ('leaf_hash', models.BinaryField(help_text='RFC 9162 leaf hash of the entry.', max_length=32)),
                ('pod', models.ForeignKey(db_constraint=False, on_delete=django.db.models.deletion.DO_NOTHING, related_name='key_log_entries', to='pods.pod')),
            ],
            options={
                'ordering': ['index'],
            },
        ),
        migrations.RunPython(forwards, backwards),
    ]
