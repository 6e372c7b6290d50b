"""Deleting the artifacts no version uses any more, safely beside registrations of the same bytes.

`rm` decides that an object is unused, then deletes it; a `register` of the same bytes finds the
object present, copies nothing and only adds a row. Interleaved, the new row points at nothing.
So the decision and the deletion happen in one transaction that holds the lock a registration's
insert takes for the same object (`lock_objects`): the registration commits either first, and `rm`
sees its row and keeps the object, or after the object is gone, and then finds it missing
(`Registry.register` looks once its row is in) and stores it again. Unlike restoring after the
fact, this needs no copy kept aside, and the locks are ones the database already has.
"""

from __future__ import annotations

import hashlib
import posixpath
from collections.abc import Iterable

from sqlalchemy import or_, select, text
from sqlalchemy.orm import Session

from lepton_ai.store.artifacts import ArtifactStore
from lepton_ai.store.schema import DatasetObject, DatasetVersion, ModelVersion


def _folder(key: str) -> str:
    # an object is its content folder: every name its bytes were stored under goes with it
    return posixpath.dirname(key)


def lock_objects(session: Session, keys: Iterable[str]) -> None:
    """Hold the lock of each object in `keys` until `session`'s transaction ends."""
    conn = session.connection()
    if conn.dialect.name == "sqlite":
        # a writing transaction began with BEGIN IMMEDIATE: it holds the database's one write lock already
        return
    # sorted: two transactions locking overlapping sets never wait on each other in a circle
    for folder in sorted({_folder(k) for k in keys}):
        lock_id = int.from_bytes(hashlib.sha256(folder.encode()).digest()[:8], "big", signed=True)
        conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": lock_id})


def delete_unused(session: Session, store: ArtifactStore, keys: Iterable[str]) -> list[str]:
    """Delete the objects of `keys` that no model or dataset version uses, holding their locks; return the
    deleted keys."""
    by_folder = {_folder(k): k for k in keys}
    if not by_folder:
        return []
    lock_objects(session, by_folder.values())
    # This transaction writes no row, so a commit that fails after the files went cannot leave rows
    # pointing at them; the rows of the removed versions were deleted (and committed) before.
    used = {
        _folder(key)
        for column in (ModelVersion.uri, DatasetVersion.manifest_uri, DatasetObject.key)
        for key in session.scalars(
            select(column).where(or_(*(column.startswith(f"{f}/", autoescape=True) for f in by_folder)))
        )
    }
    unused = [key for folder, key in by_folder.items() if folder not in used]
    for key in unused:
        store.delete(key)
    return unused
