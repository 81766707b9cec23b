"""Staff review: the content permission, the audit log (which refuses UPDATE and DELETE),
invite links, and the indexes of the staff's list and search.

Self-contained on purpose (written beside main's 0003-0007, numbered after them). The trigram
indexes and the extension they need are Postgres only: on SQLite (a one-person
trial) those operations do nothing and the search scans, as it did before.
"""

import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.contrib.postgres.indexes import GinIndex, OpClass
from django.contrib.postgres.operations import TrigramExtension
from django.db import migrations, models
from django.db.models.functions import Upper

from conversations.migrations._postgres_only import AddIndexOnPostgres


class KeepTrigramExtension(TrigramExtension):
    """CREATE EXTENSION pg_trgm on Postgres (nothing elsewhere); never dropped when unapplied,
    as other indexes may use it by then (Django's own would query pg_extension on SQLite too)."""

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        pass


REFUSE = "audit entries cannot be changed or deleted"

POSTGRES_GUARD = f"""
CREATE FUNCTION conversations_auditentry_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '{REFUSE}' USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER conversations_auditentry_immutable
    BEFORE UPDATE OR DELETE ON conversations_auditentry
    FOR EACH ROW EXECUTE FUNCTION conversations_auditentry_refuse();
"""
POSTGRES_UNGUARD = """
DROP TRIGGER IF EXISTS conversations_auditentry_immutable ON conversations_auditentry;
DROP FUNCTION IF EXISTS conversations_auditentry_refuse();
"""
SQLITE_GUARD = [
    f"CREATE TRIGGER conversations_auditentry_no_{verb.lower()} BEFORE {verb} ON conversations_auditentry "
    f"BEGIN SELECT RAISE(ABORT, '{REFUSE}'); END"
    for verb in ("UPDATE", "DELETE")
]


def guard_audit_log(apps, schema_editor):
    """Refuse UPDATE and DELETE of audit rows in the database itself (TRUNCATE, a deliberate
    operator's act, still works: the test suite empties tables with it)."""
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(POSTGRES_GUARD)
    elif vendor == "sqlite":
        for statement in SQLITE_GUARD:
            schema_editor.execute(statement)


def unguard_audit_log(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(POSTGRES_UNGUARD)
    elif vendor == "sqlite":
        for verb in ("update", "delete"):
            schema_editor.execute(f"DROP TRIGGER IF EXISTS conversations_auditentry_no_{verb}")


class Migration(migrations.Migration):

    dependencies = [
        ('conversations', '0007_presets'),
    ]

    operations = [
        KeepTrigramExtension(),
        migrations.AlterModelOptions(
            name='conversation',
            options={'ordering': ['-updated_at'], 'permissions': [('view_conversation_content', "Can read the messages of members' conversations")]},
        ),
        migrations.CreateModel(
            name='AuditEntry',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('at', models.DateTimeField(default=django.utils.timezone.now, editable=False, verbose_name='when')),
                ('actor_id', models.BigIntegerField(blank=True, editable=False, null=True, verbose_name="staff member's id")),
                ('actor_name', models.CharField(editable=False, max_length=150, verbose_name='staff member')),
                ('owner_id', models.BigIntegerField(blank=True, editable=False, null=True, verbose_name="member's id")),
                ('owner_name', models.CharField(blank=True, editable=False, max_length=150, verbose_name='member')),
                ('conversation_id', models.UUIDField(blank=True, editable=False, null=True, verbose_name='conversation')),
                ('action', models.CharField(choices=[('view', 'read the transcript'), ('export_json', 'exported as JSON'), ('export_md', 'exported as Markdown'), ('member_export', "exported the member's data"), ('purge', 'deleted past the retention period')], editable=False, max_length=32, verbose_name='action')),
                ('detail', models.JSONField(blank=True, default=dict, editable=False, verbose_name='detail')),
            ],
            options={
                'verbose_name': 'audit entry',
                'verbose_name_plural': 'audit log',
                'ordering': ['-at', '-id'],
                'indexes': [
                    models.Index(fields=['-at'], name='audit_recent'),
                    models.Index(fields=['owner_id', '-at'], name='audit_owner_recent'),
                ],
            },
        ),
        migrations.RunPython(guard_audit_log, unguard_audit_log),
        migrations.CreateModel(
            name='Invite',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('token_hash', models.CharField(editable=False, max_length=64, unique=True)),
                ('note', models.CharField(blank=True, help_text='Who it is for; shown only to staff.', max_length=200, verbose_name='note')),
                ('created_at', models.DateTimeField(default=django.utils.timezone.now, editable=False)),
                ('expires_at', models.DateTimeField(editable=False)),
                ('used_at', models.DateTimeField(blank=True, editable=False, null=True)),
                ('created_by', models.ForeignKey(blank=True, editable=False, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL)),
                ('used_by', models.ForeignKey(blank=True, editable=False, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL)),
            ],
            options={
                'verbose_name': 'invite link',
                'verbose_name_plural': 'invite links',
                'ordering': ['-created_at'],
            },
        ),
        migrations.AddIndex(
            model_name='conversation',
            index=models.Index(fields=['-updated_at'], name='conv_recent'),
        ),
        migrations.AddIndex(
            model_name='message',
            index=models.Index(condition=models.Q(('status__in', ['error', 'interrupted'])), fields=['conversation', 'status'], name='msg_failed'),
        ),
        migrations.AddIndex(
            model_name='usage',
            index=models.Index(fields=['conversation_id'], name='usage_conversation'),
        ),
        AddIndexOnPostgres(
            model_name='conversation',
            index=GinIndex(OpClass(Upper('title'), name='gin_trgm_ops'), name='conv_title_trgm'),
        ),
        AddIndexOnPostgres(
            model_name='message',
            index=GinIndex(OpClass(Upper('content'), name='gin_trgm_ops'), name='msg_content_trgm'),
        ),
    ]
