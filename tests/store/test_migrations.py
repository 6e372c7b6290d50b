from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from lepton_ai.store import Registry, db
from lepton_ai.store.schema import Base


def test_new_database_is_migrated_to_head(db_url: str) -> None:
    engine = db.engine_for(db_url)
    assert db.current_revision(engine) == db.head_revision()
    tables = {"models", "model_versions", "runs", "run_metrics", "jobs", "job_attempts", "services"}
    assert tables <= set(inspect(engine).get_table_names())


def test_migrations_match_the_schema(db_url: str) -> None:
    """Fails when schema.py changed without a migration."""
    engine = db.engine_for(db_url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_reopening_and_downgrade_upgrade_cycle(db_url: str, tmp_path: Path) -> None:
    f = tmp_path / "w.bin"
    f.write_bytes(b"weights")
    Registry(db_url=db_url).register("keep", f, metrics={"accuracy": 0.9})
    # a new process opening the same registry: nothing is lost
    db.dispose_all()
    assert Registry(db_url=db_url).get("keep:1").metrics == {"accuracy": 0.9}
    engine = db.engine_for(db_url)
    db.downgrade(engine, "base")
    assert db.current_revision(engine) is None
    db.upgrade(engine)
    assert db.current_revision(engine) == db.head_revision()
    assert Registry(db_url=db_url).list_models() == []
