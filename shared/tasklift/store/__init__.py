"""Persistence: SQLAlchemy tables, the engine and the repository of typed queries."""
