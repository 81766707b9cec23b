"""Schema operations that only Postgres runs (GIN and trigram indexes); on SQLite, a
one-person trial, only the model state changes and searches scan.

Not a migration: the loader skips modules whose names start with an underscore.
"""

from django.db import migrations


class OnPostgresOnly:
    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == "postgresql":
            super().database_forwards(app_label, schema_editor, from_state, to_state)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == "postgresql":
            super().database_backwards(app_label, schema_editor, from_state, to_state)


class AddIndexOnPostgres(OnPostgresOnly, migrations.AddIndex):
    pass


class RemoveIndexOnPostgres(OnPostgresOnly, migrations.RemoveIndex):
    pass
