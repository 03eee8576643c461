"""Alembic migrations of the service catalog, shipped inside the package and run at start-up."""
