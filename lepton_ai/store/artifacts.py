"""The artifact store: model files kept by content (sha256) under any fsspec URL.

Layout: `objects/<sha[:2]>/<sha>/<name>`, where `name` is the file or directory that was
stored. A directory's sha256 is that of its manifest (sorted `path<TAB>sha256` lines).
Writes go to `tmp/` first and are renamed into place, so a reader never sees half a file.
Remote stores cannot rename a directory atomically: there an object counts as stored only
once its marker, `objects/<sha[:2]>/<sha>/.<name>.complete`, is written after its files.
On a local store each writer holds `tmp/<token>.lock` (flock) while it lives, and writes into it the key
it publishes before the rename: what a killed writer left in `tmp/`, and the object it may have published
without recording it, are found by `sweep_tmp` from the lock files nobody holds any more.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import posixpath
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import fsspec
from fsspec.implementations.local import LocalFileSystem

from lepton_ai import config
from lepton_ai.errors import IntegrityError, InvalidInputError, LeptonError, NotFoundError

_CHUNK = 1 << 20
# how often a rename into place is retried when a concurrent delete takes away the folder it goes into
_PUBLISH_ATTEMPTS = 5
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,254}$")
# the write errors that mean the store's disk (or the user's quota on it) is full
_FULL = (errno.ENOSPC, errno.EDQUOT)


@dataclass(frozen=True)
class StoredArtifact:
    """Where an artifact landed (`key`, relative to the store root) and what it holds."""

    key: str
    sha256: str
    size_bytes: int
    format: str


class _Claim:
    """A writer's hold on its `tmp/<token>` folder: the file `tmp/<token>.lock`, flocked while it lives."""

    def __init__(self, path: str, fd: int) -> None:
        self.path, self.fd = path, fd

    @classmethod
    def new(cls, tmp: str) -> tuple[str, _Claim]:
        """Create and lock a fresh lock file in the folder `tmp`; return its token and the claim."""
        os.makedirs(tmp, exist_ok=True)
        while True:
            token = uuid.uuid4().hex
            claim = cls.take(f"{tmp}/{token}.lock", create=True)
            # None: a sweeper took (or removed) the brand-new file between its creation and our lock
            if claim is not None:
                return token, claim

    @classmethod
    def take(cls, path: str, create: bool = False) -> _Claim | None:
        """Lock the file at `path` without waiting; None when someone holds it or it is gone."""
        try:
            fd = os.open(path, os.O_RDWR | (os.O_CREAT | os.O_EXCL if create else 0), 0o644)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # the file may have been removed between our open and our lock: then it claims nothing
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return cls(path, fd)
        except (BlockingIOError, FileNotFoundError):
            pass
        os.close(fd)
        return None

    def record(self, key: str) -> None:
        """Note that the object `key` is about to be published, so a sweep can settle it if we die."""
        os.write(self.fd, f"{key}\n".encode())

    def keys(self) -> list[str]:
        """Return the keys a (dead) writer recorded."""
        os.lseek(self.fd, 0, os.SEEK_SET)
        with open(os.dup(self.fd), encoding="utf-8", errors="replace") as f:
            return [line.strip() for line in f if line.strip()]

    def release(self, forget: bool) -> None:
        """Let go of the claim; with `forget`, remove the lock file (nothing is left to settle)."""
        if forget:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        os.close(self.fd)


@dataclass
class Staged:
    """A file or directory copied into `tmp/` and hashed, waiting to be published as `artifact.key`."""

    artifact: StoredArtifact
    source: Path
    entry: str
    claim: _Claim | None = field(default=None, repr=False)
    published: bool = False


@contextlib.contextmanager
def _disk_full_is_an_error(url: str) -> Iterator[None]:
    """Turn a full disk while writing to the store at `url` into a one-line LeptonError."""
    try:
        yield
    except OSError as e:
        if e.errno not in _FULL:
            raise
        raise LeptonError(f"no space left on device while writing the artifact to {url}") from e


def infer_format(path: Path) -> str:
    """Return the format of a model file or directory from its name and contents."""
    if path.is_dir():
        if (path / "config.json").exists():
            return "huggingface"
        if any(path.glob("*.onnx")):
            return "onnx"
        return "directory"
    suffix = path.suffix.lower().lstrip(".")
    return {"pt": "torch", "pth": "torch"}.get(suffix, suffix or "file")


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _manifest_digest(entries: list[tuple[str, str]]) -> str:
    text = "".join(f"{rel}\t{digest}\n" for rel, digest in sorted(entries))
    return hashlib.sha256(text.encode()).hexdigest()


def sha256_of(path: str | Path) -> str:
    """Return the sha256 of a file, or of a directory's manifest."""
    path = Path(path)
    if path.is_dir():
        files = _files(path)
        return _manifest_digest([(p.relative_to(path).as_posix(), _sha256_file(p)) for p in files])
    return _sha256_file(path)


def _files(root: Path) -> list[Path]:
    """Return the regular files under `root`; symlinks are refused, not followed out of it."""
    links = [p for p in root.rglob("*") if p.is_symlink()]
    if links:
        raise InvalidInputError(f"{links[0]} is a symbolic link: store real files only")
    return sorted(p for p in root.rglob("*") if p.is_file())


def check_key(key: str) -> str:
    """Return `key` if it is a plain relative path inside the store; raise otherwise."""
    parts = key.split("/")
    if (
        not key
        or key.startswith("/")
        or "\\" in key
        or "\x00" in key
        or any(p in ("", ".", "..") for p in parts)
    ):
        raise InvalidInputError(f"artifact path {key!r} would escape the artifact store")
    return key


def _marker(entry: str) -> str:
    """Return the path of the file that says the object file or directory `entry` was copied whole."""
    folder, name = posixpath.split(entry)
    return f"{folder}/.{name}.complete"


def _discard(path: Path) -> None:
    """Remove a local file or directory, renamed aside first so nobody takes a half-removed one for whole."""
    aside = path.with_name(f".{path.name}.{uuid.uuid4().hex}.gone")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        # never made, or a concurrent fetch discarded it first
        return
    if aside.is_dir():
        shutil.rmtree(aside, ignore_errors=True)
    else:
        aside.unlink(missing_ok=True)


def _rename_into_place(tmp_entry: str, final: str) -> None:
    """Rename a local temp file or directory to `final` (atomic), unless identical content is there."""
    for attempt in range(_PUBLISH_ATTEMPTS):
        if os.path.exists(final):
            # same sha256, same name: already stored
            return
        os.makedirs(os.path.dirname(final), exist_ok=True)
        try:
            os.rename(tmp_entry, final)
            return
        except FileNotFoundError:
            # a concurrent delete took the object's folder away after makedirs: make it again
            if attempt == _PUBLISH_ATTEMPTS - 1:
                raise
        except OSError:
            # a concurrent writer renamed its identical directory into place first
            if not os.path.isdir(final):
                raise
            return


class ArtifactStore:
    """Content-addressed files under a local directory or any fsspec URL (s3://, memory://…)."""

    def __init__(self, url: str | None = None) -> None:
        self.url = url or config.artifacts_url()
        try:
            self.fs, root = fsspec.core.url_to_fs(self.url)
        except (ImportError, ValueError) as e:
            raise InvalidInputError(f"LEPTON_ARTIFACTS={self.url!r} cannot be opened: {e}") from e
        self.root = root.rstrip("/") or "/"
        self.local = isinstance(self.fs, LocalFileSystem)
        self.fs.makedirs(self.root, exist_ok=True)

    def path(self, key: str) -> str:
        """Return the filesystem path of `key`, refusing keys that leave the store."""
        full = posixpath.join(self.root, check_key(key))
        if posixpath.commonpath([self.root, posixpath.normpath(full)]) != self.root:
            raise InvalidInputError(f"artifact path {key!r} would escape the artifact store")
        return full

    def location(self, key: str) -> str:
        """Return a URL (or local path) a person can use to find `key`."""
        full = self.path(key)
        return full if self.local else self.fs.unstrip_protocol(full)

    def put(self, source: str | Path, fmt: str | None = None) -> StoredArtifact:
        """Copy a local file or directory into the store (atomically) and return its entry."""
        with self.staged(source, fmt) as staged:
            self.publish(staged)
        return staged.artifact

    @contextlib.contextmanager
    def staged(self, source: str | Path, fmt: str | None = None) -> Iterator[Staged]:
        """Copy `source` into `tmp/`, hashing it, and yield it to be published; `tmp/` is cleared after."""
        source = Path(source)
        if not source.exists():
            raise NotFoundError(f"no such file or directory: {source}")
        name = source.resolve().name
        if not _SAFE_NAME.match(name):
            name = "artifact" + "".join(source.suffixes[-1:])
        claim = None
        with _disk_full_is_an_error(self.url):
            if self.local:
                token, claim = _Claim.new(self.path("tmp"))
            else:
                token = uuid.uuid4().hex
        tmp_dir = self.path(f"tmp/{token}")
        staged: Staged | None = None
        ok = False
        try:
            with _disk_full_is_an_error(self.url):
                sha, size = self._copy_tree(source, f"{tmp_dir}/{name}")
            key = f"objects/{sha[:2]}/{sha}/{name}"
            stored = StoredArtifact(key=key, sha256=sha, size_bytes=size, format=fmt or infer_format(source))
            staged = Staged(stored, source, f"{tmp_dir}/{name}", claim)
            yield staged
            ok = True
        finally:
            if self.fs.exists(tmp_dir):
                self.fs.rm(tmp_dir, recursive=True)
            if claim is not None:
                # published but maybe unrecorded (the caller failed after): the lock file stays for a sweep
                claim.release(forget=ok or staged is None or not staged.published)

    def _copy_tree(self, source: Path, dest: str) -> tuple[str, int]:
        """Copy a file or directory to `dest`, hashing it; return (sha256, bytes)."""
        if not source.is_dir():
            return self._copy_in(source, dest)
        entries, size = [], 0
        for f in _files(source):
            rel = f.relative_to(source).as_posix()
            digest, n = self._copy_in(f, f"{dest}/{rel}")
            entries.append((rel, digest))
            size += n
        return _manifest_digest(entries), size

    def publish(self, staged: Staged) -> None:
        """Move a staged copy to its final name (unless it is stored whole already)."""
        final = self.path(staged.artifact.key)
        with _disk_full_is_an_error(self.url):
            if staged.claim is not None:
                staged.claim.record(staged.artifact.key)
            staged.published = True
            if not self.fs.exists(staged.entry) and not self.has(staged.artifact.key):
                # published by an earlier try of the caller's transaction, then deleted as unused: copy again
                self._copy_tree(staged.source, staged.entry)
            self._publish(staged.entry, final)

    def _copy_in(self, src: Path, dest: str) -> tuple[str, int]:
        """Copy one file while hashing what is written; return (sha256, bytes)."""
        self.fs.makedirs(posixpath.dirname(dest), exist_ok=True)
        h, n = hashlib.sha256(), 0
        with open(src, "rb") as fin, self.fs.open(dest, "wb") as fout:
            while chunk := fin.read(_CHUNK):
                h.update(chunk)
                fout.write(chunk)
                n += len(chunk)
        return h.hexdigest(), n

    def _publish(self, tmp_entry: str, final: str) -> None:
        """Move a finished temp file or directory to its final name, unless it is stored whole already."""
        if self.local:
            _rename_into_place(tmp_entry, final)
        elif not self.fs.exists(_marker(final)):
            self._copy_whole(tmp_entry, final)

    def _copy_whole(self, tmp_entry: str, final: str) -> None:
        """Move a remote temp file or directory over `final`, then write the marker that says it is whole."""
        # What a crashed writer left is overwritten, not deleted first: its files have our names and,
        # complete, our bytes, so a concurrent writer of the same content never sees one vanish.
        for src in self.fs.find(tmp_entry):
            dest = final + src[len(tmp_entry) :]
            self.fs.makedirs(posixpath.dirname(dest), exist_ok=True)
            self.fs.mv(src, dest)
        self.fs.pipe_file(_marker(final), b"")

    def exists(self, key: str) -> bool:
        """Return whether `key` is in the store."""
        return self.fs.exists(self.path(key))

    def has(self, key: str) -> bool:
        """Return whether the object `key` is stored whole (on a remote store: whether it is marked so)."""
        full = self.path(key)
        return self.fs.exists(full if self.local else _marker(full))

    def fetch(self, key: str, sha256: str) -> Path:
        """Return a local path to the artifact after checking its sha256 against `sha256`."""
        full = self.path(key)
        if not self.fs.exists(full):
            raise NotFoundError(f"artifact missing from the store: {self.location(key)}")
        if self.local:
            return self._checked(Path(full), key, sha256)
        local = config.home() / "cache" / "artifacts" / key
        if local.exists():
            if sha256_of(local) == sha256:
                return local
            # damaged since it was checked (a disk error, an edit): kept, it would fail every later fetch here
            _discard(local)
        return self._download(key, local, sha256)

    def verify(self, key: str, sha256: str) -> None:
        """Re-hash the store's own copy of `key` (never a cached one); raise if it is missing or differs."""
        full = self.path(key)
        if not self.fs.exists(full):
            raise NotFoundError(f"artifact missing from the store: {self.location(key)}")
        if self.local:
            self._checked(Path(full), key, sha256)
            return
        with tempfile.TemporaryDirectory(prefix="lepton-verify-") as tmp:
            copy = Path(tmp) / posixpath.basename(full)
            self.fs.get(full, str(copy), recursive=self.fs.isdir(full))
            self._checked(copy, key, sha256)

    def _download(self, key: str, local: Path, sha256: str) -> Path:
        """Download `key` beside the cache path `local`, check its sha256, then rename it to `local`."""
        full = self.path(key)
        part = local.with_name(f".{local.name}.{uuid.uuid4().hex}.part")
        part.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.fs.get(full, str(part), recursive=self.fs.isdir(full))
            self._checked(part, key, sha256)
            try:
                os.replace(part, local)
            except OSError:
                # a concurrent fetch of the same directory renamed its checked copy into place first
                if not local.is_dir():
                    raise
        finally:
            _discard(part)
        return local

    def _checked(self, path: Path, key: str, sha256: str) -> Path:
        """Return `path` if its sha256 is `sha256`; raise IntegrityError naming `key`'s location otherwise."""
        actual = sha256_of(path)
        if actual != sha256:
            raise IntegrityError(
                f"artifact {self.location(key)} is corrupted: expected sha256 {sha256}, found {actual}"
            )
        return path

    def sweep_tmp(self, settle: Callable[[list[str]], object]) -> int:
        """Remove what dead writers left in `tmp/`, first passing `settle` the keys they may have published
        unrecorded; return how many writers' leftovers went (a remote store keeps its `tmp/`)."""
        tmp = self.path("tmp")
        if not self.local or not os.path.isdir(tmp):
            return 0
        swept = 0
        for entry in sorted(os.listdir(tmp)):
            path = f"{tmp}/{entry}"
            if entry.endswith(".lock"):
                swept += self._sweep_claim(path, settle)
            elif not entry.startswith(".") and not os.path.exists(f"{path}.lock"):
                # a delete's trash, or a writer's folder whose lock file a sweep removed: nobody owns it
                shutil.rmtree(path, ignore_errors=True)
        return swept

    def _sweep_claim(self, lock_path: str, settle: Callable[[list[str]], object]) -> int:
        """Settle and remove one dead writer's leftovers if nobody holds `lock_path`; return 1 if removed."""
        claim = _Claim.take(lock_path)
        if claim is None:
            return 0
        try:
            keys = claim.keys()
            if keys:
                settle(keys)
            shutil.rmtree(lock_path.removesuffix(".lock"), ignore_errors=True)
            claim.release(forget=True)
        except BaseException:
            claim.release(forget=False)
            raise
        return 1

    def delete(self, key: str) -> None:
        """Remove the object `key` with its content directory (each name its bytes were stored under)."""
        folder = posixpath.dirname(self.path(key))
        if self.local:
            self._delete_local(folder)
            return
        if self.fs.exists(folder):
            # markers first: a crash part-way leaves objects marked unfinished, which the next put repairs
            markers = [p for p in self.fs.ls(folder, detail=False) if posixpath.basename(p).startswith(".")]
            if markers:
                self.fs.rm(markers)
            self.fs.rm(folder, recursive=True)
        shutil.rmtree(config.home() / "cache" / "artifacts" / posixpath.dirname(key), ignore_errors=True)

    def _delete_local(self, folder: str) -> None:
        """Remove a local content directory by renaming it into `tmp/` (atomic) and deleting it there."""
        trash = self.path(f"tmp/{uuid.uuid4().hex}")
        os.makedirs(posixpath.dirname(trash), exist_ok=True)
        try:
            # a concurrent put's rename lands in the folder before it goes, or in a new one: never half in
            os.rename(folder, trash)
        except FileNotFoundError:
            return
        shutil.rmtree(trash, ignore_errors=True)
        # the sha256 prefix folder, once empty
        with contextlib.suppress(OSError):
            os.rmdir(posixpath.dirname(folder))
