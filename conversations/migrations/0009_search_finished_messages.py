"""The trigram index over message text leaves streaming replies out.

A streaming reply's text is rewritten about once a second; with the reply in the
index, every rewrite added all of its trigrams to the index again (the busiest
write of a streaming process). A reply enters the index with its final write.
Postgres only, as 0008's index: elsewhere only the model state changes.
"""

import django.contrib.postgres.indexes
import django.db.models.functions.text
from django.db import migrations, models


class RemoveIndexOnPostgres(migrations.RemoveIndex):
    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == "postgresql":
            super().database_forwards(app_label, schema_editor, from_state, to_state)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == "postgresql":
            super().database_backwards(app_label, schema_editor, from_state, to_state)


class AddIndexOnPostgres(migrations.AddIndex):
    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == "postgresql":
            super().database_forwards(app_label, schema_editor, from_state, to_state)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == "postgresql":
            super().database_backwards(app_label, schema_editor, from_state, to_state)


class Migration(migrations.Migration):

    dependencies = [
        ('conversations', '0008_review_audit_search'),
    ]

    operations = [
        RemoveIndexOnPostgres(
            model_name='message',
            name='msg_content_trgm',
        ),
        AddIndexOnPostgres(
            model_name='message',
            index=django.contrib.postgres.indexes.GinIndex(
                django.contrib.postgres.indexes.OpClass(django.db.models.functions.text.Upper('content'),
                                                        name='gin_trgm_ops'),
                condition=models.Q(('status', 'streaming'), _negated=True), name='msg_content_trgm'),
        ),
    ]
