"""Alembic environment: always called by `lepton_ai.store.db` with an open connection."""

from alembic import context

from lepton_ai.store.schema import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through lepton_ai.store.db.upgrade(), not the alembic CLI")

context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
# joins the caller's transaction
with context.begin_transaction():
    context.run_migrations()
