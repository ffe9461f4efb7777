"""PostgreSQL: engine, ORM models and migrations."""
