from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from lepton_ai.errors import IntegrityError, InvalidInputError, NotFoundError
from lepton_ai.store.artifacts import ArtifactStore, check_key, infer_format, sha256_of


@pytest.fixture
def local_store(tmp_path: Path) -> ArtifactStore:
    """An artifact store in a folder of this test's own."""
    return ArtifactStore(str(tmp_path / "store"))


@pytest.fixture(params=["local", "memory"])
def store(request: pytest.FixtureRequest, local_store: ArtifactStore) -> ArtifactStore:
    """An artifact store on the local filesystem, then on fsspec's in-memory one."""
    if request.param == "local":
        return local_store
    return ArtifactStore(f"memory://lepton-test-{os.urandom(4).hex()}")


@pytest.fixture
def memory_store() -> ArtifactStore:
    """A remote artifact store (fsspec's in-memory one), fetched through the local cache."""
    return ArtifactStore(f"memory://lepton-test-{os.urandom(4).hex()}")


def _model_dir(tmp_path: Path) -> Path:
    d = tmp_path / "hf-model"
    (d / "sub").mkdir(parents=True)
    (d / "config.json").write_text("{}")
    for i in range(4):
        (d / "sub" / f"w{i}.bin").write_bytes(os.urandom(2000))
    return d


def test_put_fetch_round_trip_is_content_addressed(store: ArtifactStore, tmp_path: Path) -> None:
    src = tmp_path / "w.safetensors"
    src.write_bytes(os.urandom(3000))
    a = store.put(src)
    assert a.sha256 == sha256_of(src) and a.size_bytes == 3000 and a.format == "safetensors"
    assert a.key == f"objects/{a.sha256[:2]}/{a.sha256}/w.safetensors"
    assert store.fetch(a.key, a.sha256).read_bytes() == src.read_bytes()
    # same bytes, same object
    assert store.put(src).key == a.key
    assert not store.fs.exists(store.path("tmp")) or store.fs.ls(store.path("tmp")) == []


def test_directories_are_stored_whole_with_a_manifest_hash(store: ArtifactStore, tmp_path: Path) -> None:
    d = tmp_path / "hf-model"
    (d / "sub").mkdir(parents=True)
    (d / "config.json").write_text("{}")
    (d / "sub" / "w.bin").write_bytes(b"\x00" * 10)
    a = store.put(d)
    assert a.format == "huggingface" and a.size_bytes == 12 and a.sha256 == sha256_of(d)
    out = store.fetch(a.key, a.sha256)
    assert (out / "sub" / "w.bin").read_bytes() == b"\x00" * 10
    (d / "config.json").write_text('{"x": 1}')
    assert sha256_of(d) != a.sha256


def test_one_changed_byte_is_refused_naming_file_and_both_hashes(
    tmp_path: Path, local_store: ArtifactStore
) -> None:
    src = tmp_path / "m.onnx"
    src.write_bytes(b"0123456789" * 100)
    a = local_store.put(src)
    stored = Path(local_store.path(a.key))
    data = bytearray(stored.read_bytes())
    data[500] ^= 0x01
    stored.write_bytes(bytes(data))
    with pytest.raises(IntegrityError) as e:
        local_store.fetch(a.key, a.sha256)
    msg = str(e.value)
    assert str(stored) in msg and a.sha256 in msg and sha256_of(stored) in msg


def test_missing_source_writes_nothing(store: ArtifactStore, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="no such file"):
        store.put(tmp_path / "absent.bin")
    assert not store.fs.exists(store.path("objects"))


@pytest.mark.parametrize("key", ["../x", "/etc/passwd", "objects/../../etc", "a\\b", "", "a//b", "./a"])
def test_keys_that_escape_the_store_are_rejected(key: str, local_store: ArtifactStore) -> None:
    with pytest.raises(InvalidInputError, match="escape"):
        check_key(key)
    with pytest.raises(InvalidInputError):
        local_store.fetch(key, "0" * 64)


def test_missing_object_is_a_clear_error(local_store: ArtifactStore) -> None:
    with pytest.raises(NotFoundError, match="missing from the store"):
        local_store.fetch("objects/ab/abc/x.bin", "0" * 64)


def test_unsafe_file_names_are_replaced(tmp_path: Path, local_store: ArtifactStore) -> None:
    src = tmp_path / "-weird name;rm.pt"
    src.write_bytes(b"x")
    key = local_store.put(src).key
    assert key.endswith("/artifact.pt")


def test_infer_format(tmp_path: Path) -> None:
    (tmp_path / "a.pt").write_bytes(b"")
    (tmp_path / "d").mkdir()
    assert infer_format(tmp_path / "a.pt") == "torch"
    assert infer_format(tmp_path / "d") == "directory"


def test_symlinks_are_refused_not_followed(tmp_path: Path, local_store: ArtifactStore) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("SECRET")
    d = tmp_path / "model"
    d.mkdir()
    (d / "link").symlink_to(secret)
    with pytest.raises(InvalidInputError, match="symbolic link"):
        local_store.put(d)
    assert not local_store.fs.exists(local_store.path("objects"))


@pytest.mark.parametrize("kind", ["file", "directory"])
def test_a_corrupted_cached_copy_is_downloaded_again(
    memory_store: ArtifactStore, tmp_path: Path, kind: str
) -> None:
    src = _model_dir(tmp_path) if kind == "directory" else tmp_path / "w.bin"
    if kind == "file":
        src.write_bytes(os.urandom(3000))
    a = memory_store.put(src)
    cached = memory_store.fetch(a.key, a.sha256)
    (cached / "sub" / "w2.bin" if kind == "directory" else cached).write_bytes(b"bit rot")
    assert sha256_of(memory_store.fetch(a.key, a.sha256)) == a.sha256
    assert [p.name for p in cached.parent.iterdir()] == [cached.name]


def test_a_bad_download_never_takes_the_cache_name(memory_store: ArtifactStore, tmp_path: Path) -> None:
    src = tmp_path / "w.bin"
    src.write_bytes(os.urandom(3000))
    a = memory_store.put(src)
    remote = memory_store.path(a.key)
    memory_store.fs.pipe_file(remote, b"damaged in the store")
    with pytest.raises(IntegrityError, match=a.sha256):
        memory_store.fetch(a.key, a.sha256)
    # once the store is mended, this host needs no cleaning up
    memory_store.fs.pipe_file(remote, src.read_bytes())
    cached = memory_store.fetch(a.key, a.sha256)
    assert cached.read_bytes() == src.read_bytes()
    assert [p.name for p in cached.parent.iterdir()] == [cached.name]


def test_concurrent_fetches_of_one_directory_both_succeed(
    memory_store: ArtifactStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = memory_store.put(_model_dir(tmp_path))
    both, one_reader = threading.Barrier(2, timeout=10), threading.Lock()
    get = memory_store.fs.get

    def get_then_wait(*args: Any, **kwargs: Any) -> None:
        # fsspec's memory filesystem hands concurrent readers of a file one shared file object
        with one_reader:
            get(*args, **kwargs)
        # both downloads are done before either takes the cache's name
        both.wait()

    monkeypatch.setattr(memory_store.fs, "get", get_then_wait)
    with ThreadPoolExecutor(2) as pool:
        paths = list(pool.map(lambda _: memory_store.fetch(a.key, a.sha256), range(2)))
    assert paths[0] == paths[1] and sha256_of(paths[0]) == a.sha256
    assert [p.name for p in paths[0].parent.iterdir()] == [paths[0].name]
