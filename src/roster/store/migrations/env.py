"""Alembic environment: runs on the connection Roster hands over (``config.attributes['connection']``)."""

from alembic import context

from roster.store.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("Roster's migrations run through roster.store.engine.migrate(), not the alembic CLI")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
