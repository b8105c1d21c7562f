"""The embedded default's database backend: Django's SQLite with reused connections."""
