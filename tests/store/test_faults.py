"""Faults the registry must survive: a register killed at any moment, a full disk, a database restart."""

from __future__ import annotations

import errno
import os
import posixpath
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event
from sqlalchemy.exc import OperationalError

from lepton_ai.errors import LeptonError, NotFoundError
from lepton_ai.store import Registry, db
from lepton_ai.store.artifacts import ArtifactStore
from tests.conftest import PostgresCluster, new_database, postgres_cluster

CLI = [sys.executable, "-m", "lepton_ai.cli.main", "models", "register"]
# kills of the real command line (start-up is most of its time), then of a forked register loop
CLI_KILLS, LOOP_KILLS = 6, 44


def _model_dir(root: Path, files: int = 3, size: int = 2048) -> Path:
    """Write a small model directory of random bytes (new content each time) and return it."""
    root.mkdir(parents=True)
    for i in range(files):
        (root / f"part{i}.bin").write_bytes(os.urandom(size))
    return root


def _versions(registry: Registry, name: str = "m") -> list[Any]:
    try:
        return registry.list_versions(name)
    except NotFoundError:
        return []


def _object_folders(store: ArtifactStore) -> set[str]:
    """Return every content folder under `objects/`, relative to the store's root."""
    objects = Path(store.path("objects"))
    return {f"objects/{p.parent.name}/{p.name}" for p in objects.glob("*/*")} if objects.exists() else set()


def _pending_keys(store: ArtifactStore) -> set[str]:
    """Return the object folders that lock files left in `tmp/` say their dead writers published."""
    tmp = Path(store.path("tmp"))
    lines = (line for lock in tmp.glob("*.lock") for line in lock.read_text().splitlines())
    return {posixpath.dirname(line) for line in lines if line.strip()}


def _check_consistent(registry: Registry) -> set[str]:
    """Assert every version's object is whole; return the object folders no version references."""
    versions = _versions(registry)
    for v in versions:
        registry.verify(v.ref)
    return _object_folders(registry.artifacts) - {posixpath.dirname(v.key) for v in versions}


def _kill_cli(rng: random.Random, span: float, model: Path) -> None:
    """Start `lepton models register` and SIGKILL it after a random part of `span` seconds."""
    proc = subprocess.Popen([*CLI, "m", str(model)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(rng.uniform(0.0, span))
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def _register_forever(root: Path) -> None:
    """Register new content in a loop until killed (in a forked child)."""
    try:
        registry = Registry()
        for i in range(10_000):
            registry.register("m", _model_dir(root / str(i), files=1 + i % 3))
    finally:
        os._exit(0)


def _kill_loop(rng: random.Random, span: float, root: Path) -> None:
    """Fork a register loop and SIGKILL it after a random delay of up to `span` seconds."""
    # a forked child must not share the parent's database connections
    db.dispose_all()
    pid = os.fork()
    if pid == 0:
        _register_forever(root)
    time.sleep(rng.uniform(0.0, span))
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


def _timed(fn: Callable[[], object]) -> float:
    start = time.monotonic()
    fn()
    return time.monotonic() - start


def test_register_killed_at_random_moments_leaves_registry_and_store_consistent(tmp_path: Path) -> None:
    """50 SIGKILLs (up to 150, until 5 landed in a write) at random moments of registers never leave a version
    without its object, nor an object without a version but those the next register's sweep deletes; tmp/ is
    cleared by it too."""
    rng = random.Random()
    seed = rng.randrange(1 << 30)
    rng.seed(seed)
    cli_span = _timed(lambda: subprocess.run([*CLI, "m", str(_model_dir(tmp_path / "first"))], check=True))
    registry = Registry()
    loop_span = _timed(lambda: registry.register("m", _model_dir(tmp_path / "second")))
    kills = [lambda i: _kill_cli(rng, cli_span, _model_dir(tmp_path / f"cli{i}"))] * CLI_KILLS
    # a few registers' worth: each kill lands in some register, at any moment of it
    kills += [lambda i: _kill_loop(rng, 4 * loop_span, tmp_path / f"loop{i}")] * LOOP_KILLS
    # on a busy machine a span measured once can be off: more kills, until a tenth of them landed in a write
    kills += [kills[-1]] * 2 * len(kills)
    mid_write = 0
    for i, kill in enumerate(kills):
        kill(i)
        # never a version without its object, at any moment
        assert all(registry.artifacts.has(v.key) for v in _versions(registry)), f"seed {seed}"
        mid_write += bool(os.listdir(registry.artifacts.path("tmp")))
        if i + 1 >= CLI_KILLS + LOOP_KILLS and mid_write >= (CLI_KILLS + LOOP_KILLS) // 10:
            break
    assert mid_write >= (CLI_KILLS + LOOP_KILLS) // 10, (
        f"seed {seed}: only {mid_write} kills landed in a write"
    )
    before = len(_versions(registry))
    # an object published by a register killed before its commit is named in its dead lock file
    assert _check_consistent(registry) <= _pending_keys(registry.artifacts), f"seed {seed}"
    subprocess.run([*CLI, "m", str(_model_dir(tmp_path / "last"))], check=True, capture_output=True)
    assert len(_versions(registry)) == before + 1
    assert _check_consistent(registry) == set(), f"seed {seed}"
    assert os.listdir(registry.artifacts.path("tmp")) == [], f"seed {seed}"


def _fill_disk_after(monkeypatch: pytest.MonkeyPatch, calls: int) -> None:
    """Make the store's file copy write half a file, then fail with ENOSPC, on its `calls`-th call."""
    original = ArtifactStore._copy_in
    seen = []

    def copy_in(self: ArtifactStore, src: Path, dest: str) -> tuple[str, int]:
        seen.append(src)
        if len(seen) < calls:
            return original(self, src, dest)
        self.fs.makedirs(posixpath.dirname(dest), exist_ok=True)
        with self.fs.open(dest, "wb") as f:
            f.write(src.read_bytes()[: src.stat().st_size // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), dest)

    monkeypatch.setattr(ArtifactStore, "_copy_in", copy_in)


def _assert_nothing_stored(registry: Registry) -> None:
    assert registry.list_models() == []
    assert _object_folders(registry.artifacts) == set()
    assert os.listdir(registry.artifacts.path("tmp")) == []


def test_a_full_disk_is_one_line_and_registers_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli: Callable[..., tuple[int, str, str]]
) -> None:
    """ENOSPC part-way through a directory's copy exits 2 with one line, leaving no row, object or tmp."""
    _fill_disk_after(monkeypatch, calls=2)
    code, out, err = cli("models", "register", "m", str(_model_dir(tmp_path / "model")))
    assert code == 2, out + err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "no space left on device while writing the artifact to" in err
    registry = Registry()
    assert registry.artifacts.url in err.replace("\n", "")
    _assert_nothing_stored(registry)
    with pytest.raises(LeptonError, match="no space left on device"):
        registry.register("m", _model_dir(tmp_path / "again"))
    _assert_nothing_stored(registry)


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB tmpfs (root only; skipped where mounting is not allowed)."""
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_really_full_tmpfs_is_one_line_and_registers_nothing(
    tmp_path: Path,
    small_tmpfs: Path,
    monkeypatch: pytest.MonkeyPatch,
    cli: Callable[..., tuple[int, str, str]],
) -> None:
    """A 2 MiB model on a 1 MiB tmpfs store exits 2 with the one line, leaving nothing behind."""
    monkeypatch.setenv("LEPTON_ARTIFACTS", str(small_tmpfs / "artifacts"))
    code, out, err = cli("models", "register", "m", str(_model_dir(tmp_path / "model", 2, 1 << 20)))
    assert code == 2, out + err
    assert "no space left on device while writing the artifact to" in err and "Traceback" not in err
    _assert_nothing_stored(Registry())


def _lose_connection_once(engine: Engine, when: str, message: str, statement: str = "") -> list[bool]:
    """Make the first `when` event on `engine` (of a statement starting `statement`) a lost connection."""
    fired: list[bool] = []

    def fail(_conn: object, *args: Any) -> None:
        if fired or (args and not str(args[1]).startswith(statement)):
            return
        fired.append(True)
        raise OperationalError(statement or "COMMIT", None, Exception(message))

    event.listen(engine, when, fail)
    return fired


def test_a_connection_lost_before_the_commit_is_retried_and_lands_once(tmp_path: Path) -> None:
    """A transaction whose connection went before its commit is run again, and recorded once."""
    registry = Registry()
    registry.register("m", _model_dir(tmp_path / "a", files=1))
    message = "terminating connection due to administrator command"
    fired = _lose_connection_once(
        registry.engine, "before_cursor_execute", message, "INSERT INTO model_versions"
    )
    assert registry.register("m", _model_dir(tmp_path / "b", files=1)).version == 2
    assert fired
    assert [v.version for v in registry.list_versions("m")] == [1, 2]
    assert _check_consistent(registry) == set()


def test_a_connection_lost_during_the_commit_is_a_clear_error_and_never_retried(tmp_path: Path) -> None:
    """A commit whose outcome is unknown is not run again: one LeptonError, and the next sweep settles the
    object it published by whether its row landed."""
    registry = Registry()
    registry.register("m", _model_dir(tmp_path / "a", files=1))
    fired = _lose_connection_once(registry.engine, "commit", "server closed the connection unexpectedly")
    with pytest.raises(LeptonError, match="while committing: the change may or may not have been saved"):
        registry.register("m", _model_dir(tmp_path / "b", files=1))
    assert fired and [v.version for v in registry.list_versions("m")] == [1]
    orphans = _check_consistent(registry)
    assert len(orphans) == 1 and orphans <= _pending_keys(registry.artifacts)
    assert registry.sweep() == 1
    assert _check_consistent(registry) == set()
    assert os.listdir(registry.artifacts.path("tmp")) == []


@pytest.fixture
def own_postgres() -> Iterator[PostgresCluster]:
    """A PostgreSQL server of this test's own, which it may restart."""
    with postgres_cluster() as cluster:
        yield cluster


def _attempt(registry: Registry, tmp_path: Path, attempt: str) -> tuple[str, BaseException | None]:
    """Register new content tagged with `attempt` in its metrics; return the attempt and what it raised."""
    try:
        registry.register("m", _model_dir(tmp_path / attempt, files=1), metrics={"attempt": attempt})
    except Exception as e:
        return attempt, e
    return attempt, None


def test_registers_during_a_database_restart_land_once_or_fail_clearly(
    tmp_path: Path, own_postgres: PostgresCluster
) -> None:
    """8 workers register concurrently while the server restarts: each success lands once, each failure is a
    LeptonError, and no attempt is recorded twice."""
    registry = Registry(db_url=new_database(own_postgres.url))
    registry.register("m", _model_dir(tmp_path / "warm-up", files=1))
    attempts = [f"w{w}-{i}" for i in range(6) for w in range(8)]
    finished = threading.Semaphore(0)
    ended: list[float] = []

    def restart_mid_burst() -> float:
        # wait for the burst to be under way, then restart with sessions terminated
        for _ in range(8):
            finished.acquire()
        began = time.monotonic()
        own_postgres.ctl("-w", "-m", "fast", "restart")
        return began

    def run(attempt: str) -> tuple[str, BaseException | None]:
        try:
            return _attempt(registry, tmp_path, attempt)
        finally:
            ended.append(time.monotonic())
            finished.release()

    with ThreadPoolExecutor(1) as restarter, ThreadPoolExecutor(8) as pool:
        restarted = restarter.submit(restart_mid_burst)
        outcomes = dict(pool.map(run, attempts))
        restart_began = restarted.result()
    assert sum(t > restart_began for t in ended) >= 8, "the burst was over before the restart"
    failures = {a: e for a, e in outcomes.items() if e is not None}
    for e in failures.values():
        assert isinstance(e, LeptonError) and "registry database" in str(e), repr(e)
    recorded = [v.metrics.get("attempt") for v in registry.list_versions("m")]
    assert all(recorded.count(a) == 1 for a in attempts if a not in failures), recorded
    assert all(recorded.count(a) <= 1 for a in attempts), recorded
    assert _check_consistent(registry) == set()
