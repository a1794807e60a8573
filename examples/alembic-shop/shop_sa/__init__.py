"""The Alembic shop's application package: SQLAlchemy models (``models``) and the queries the app runs
(``app``). The migrations' env.py imports ``models`` for autogenerate; nothing here imports Alembic."""
