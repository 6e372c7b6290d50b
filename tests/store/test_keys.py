"""Artifact keys, as any text: either refused with a clear error or a path that stays inside the store."""

from __future__ import annotations

import posixpath
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lepton_ai.errors import InvalidInputError
from lepton_ai.store.artifacts import ArtifactStore, check_key

# path-like text: the separators and dots that an escape is made of, among ordinary characters
pathlike = st.text(st.sampled_from(list("/\\.a0_-\x00 ~:")), max_size=24) | st.text(max_size=24)


# the store is only read: one per test serves every example
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=pathlike)
def test_a_key_is_refused_or_stays_in_the_store(tmp_path: Path, key: str) -> None:
    store = ArtifactStore(str(tmp_path / "store"))
    try:
        check_key(key)
    except InvalidInputError as e:
        assert "would escape the artifact store" in str(e)
        return
    full = posixpath.normpath(store.path(key))
    assert posixpath.commonpath([store.root, full]) == store.root and full != store.root
