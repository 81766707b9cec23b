"""Django's PostgreSQL backend, with pooled connections checked without a round trip (see base.py)."""
