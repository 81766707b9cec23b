"""The trigram index over message text leaves streaming replies out.

A streaming reply's text is rewritten about once a second; with the reply in the
index, every rewrite added all of its trigrams to the index again (the busiest
write of a streaming process). A reply enters the index with its final write.
Postgres only, as 0008's index (migrations/_postgres_only.py).
"""

import django.contrib.postgres.indexes
import django.db.models.functions.text
from django.db import migrations, models

from conversations.migrations._postgres_only import AddIndexOnPostgres, RemoveIndexOnPostgres


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
