"""Persistence: the tables, the API's SQL and asyncpg store, the workers' SQLAlchemy statements."""
