from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture
def weights(tmp_path: Path) -> Path:
    p = tmp_path / "model.safetensors"
    p.write_bytes(os.urandom(512))
    return p


def test_register_show_list_rm(cli, weights: Path) -> None:
    code, out, _ = cli(
        "models", "register", "digits", str(weights), "--metrics", '{"accuracy": 0.98}', "--json"
    )
    assert code == 0 and json.loads(out)["ref"] == "digits:1"
    cli("models", "register", "digits", str(weights), "--parent", "digits:1")
    code, out, _ = cli("models", "show", "digits", "--json")
    doc = json.loads(out)
    for key in ("name", "version", "uri", "sha256", "size_bytes", "metrics", "parent"):
        assert key in doc
    assert (doc["version"], doc["parent"], doc["size_bytes"]) == (2, "digits:1", 512)
    assert Path(doc["uri"]).read_bytes() == weights.read_bytes()
    assert json.loads(cli("models", "show", "digits:1", "--json")[1])["metrics"] == {"accuracy": 0.98}
    [m] = json.loads(cli("models", "list", "--json")[1])
    assert (m["name"], m["latest_version"], m["num_versions"]) == ("digits", 2, 2)
    assert [v["version"] for v in json.loads(cli("models", "list", "digits", "--json")[1])] == [1, 2]
    code, out, _ = cli("models", "list")
    assert code == 0 and "digits" in out
    code, out, _ = cli("models", "verify", "digits:1")
    assert code == 0 and "verified" in out
    assert json.loads(cli("models", "rm", "digits:1", "--json")[1]) == {"removed": ["digits:1"]}
    assert json.loads(cli("models", "rm", "digits", "--json")[1]) == {"removed": ["digits:2"]}
    assert json.loads(cli("models", "list", "--json")[1]) == []


@pytest.mark.parametrize(
    "args, message",
    [
        (["models", "register", "m", "MISSING"], "no such file or directory"),
        (["models", "register", "m", "WEIGHTS", "--metrics", "{accuracy: 1}"], "--metrics is not valid JSON"),
        (["models", "register", "m", "WEIGHTS", "--metrics", "[1, 2]"], "--metrics must be a JSON object"),
        (["models", "register", "m", "WEIGHTS", "--parent", "ghost"], "unknown model 'ghost'"),
        (["models", "register", "a/b", "WEIGHTS"], "invalid model name"),
        (["models", "show", "unknown"], "unknown model 'unknown'"),
        (["models", "show", "m:zero"], "invalid version"),
        (["models", "rm", "unknown:3"], "unknown model"),
        (["runs", "show", "42"], "unknown run 42"),
    ],
)
def test_user_errors_are_one_line_exit_2_and_write_nothing(
    cli, weights: Path, lepton_home: Path, args: list[str], message: str
) -> None:
    args = [str(weights) if a == "WEIGHTS" else a for a in args]
    code, out, err = cli(*args)
    assert code == 2
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert "Traceback" not in err and out == ""
    assert json.loads(cli("models", "list", "--json")[1]) == []
    assert not (lepton_home / "artifacts" / "objects").exists()


def test_corrupted_artifact_is_refused(cli, weights: Path) -> None:
    doc = json.loads(cli("models", "register", "m", str(weights), "--json")[1])
    stored = Path(doc["uri"])
    data = bytearray(stored.read_bytes())
    data[0] ^= 0xFF
    stored.write_bytes(bytes(data))
    code, _, err = cli("models", "verify", "m:1")
    assert code == 2 and str(stored) in err and doc["sha256"] in err and "corrupted" in err


def test_runs_cli(cli) -> None:
    from lepton_ai.store import Registry

    reg = Registry()
    run = reg.start_run("train", {"epochs": 3})
    reg.log_metrics(run.id, {"accuracy": 0.5}, step=0)
    reg.log_metrics(run.id, {"accuracy": 0.9}, step=1)
    reg.end_run(run.id)
    [r] = json.loads(cli("runs", "list", "--json")[1])
    assert (r["id"], r["kind"], r["status"]) == (run.id, "train", "completed")
    doc = json.loads(cli("runs", "show", str(run.id), "--json")[1])
    assert doc["metrics"] == {"accuracy": 0.9} and doc["history"]["accuracy"] == [[0, 0.5], [1, 0.9]]
    assert "train" in cli("runs", "list")[1]


def test_version_help_and_usage_errors(cli) -> None:
    from lepton_ai import __version__

    assert cli("version")[1].strip() == __version__
    code, out, _ = cli("--help")
    assert code == 0 and "models" in out and "doctor" in out
    # missing argument: click's usage error
    assert cli("models", "show")[0] == 2


@pytest.mark.slow
def test_two_processes_times_twenty_concurrent_registrations(tmp_path: Path, lepton_home: Path) -> None:
    """2 driver processes each start 20 `lepton models register` at once: 40 versions, no error."""
    for i in range(20):
        (tmp_path / f"w{i}.bin").write_bytes(os.urandom(128))
    lepton_bin = str(Path(sys.executable).with_name("lepton"))
    driver = (
        "import subprocess, sys\n"
        "procs = [subprocess.Popen([sys.argv[1], 'models', 'register', 'shared', f'{sys.argv[2]}/w{i}.bin', "
        "'--json'],"
        " stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(20)]\n"
        "bad = [(p.wait(), p.stderr.read().decode()) for p in procs]\n"
        "bad = [b for b in bad if b[0] != 0]\n"
        "print(bad); sys.exit(1 if bad else 0)\n"
    )
    drivers = [
        subprocess.Popen(
            [sys.executable, "-c", driver, lepton_bin, str(tmp_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    for d in drivers:
        out, _ = d.communicate(timeout=300)
        assert d.returncode == 0, out
    env = {**os.environ}
    listing = subprocess.run(
        [lepton_bin, "models", "list", "shared", "--json"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    versions = json.loads(listing.stdout)
    assert sorted(v["version"] for v in versions) == list(range(1, 41))
    # each file registered by both drivers
    assert len({v["sha256"] for v in versions}) == 20


@pytest.mark.parametrize(
    "args, message",
    [
        (["models", "show", "m:²"], "invalid version"),
        (["models", "show", "m:99999999999999999999"], "invalid version"),
    ],
)
def test_odd_references_are_one_line_errors(cli, args: list[str], message: str) -> None:
    code, _, err = cli(*args)
    assert code == 2 and message in err and "Traceback" not in err


def test_unreachable_registry_is_one_line(cli, monkeypatch) -> None:
    monkeypatch.setenv("LEPTON_DB_URL", "postgresql://u:secret@127.0.0.1:1/none")
    code, _, err = cli("models", "list")
    assert code == 2 and err.startswith("error: cannot open the registry") and "secret" not in err


def test_verify_all_checks_the_stores_copy_not_the_cache(cli, tmp_path: Path, monkeypatch) -> None:
    from lepton_ai.store import Registry

    monkeypatch.setenv("LEPTON_ARTIFACTS", "memory://verify-all")
    for name in ("a", "b"):
        path = tmp_path / f"{name}.bin"
        path.write_bytes(name.encode() * 100)
        cli("models", "register", name, str(path))
    registry = Registry()
    # fetched once: a good copy sits in the local cache
    registry.fetch("b:1")
    info = registry.get("b:1")
    with registry.artifacts.fs.open(registry.artifacts.path(info.key), "wb") as f:
        f.write(b"tampered in the store")
    code, out, err = cli("models", "verify", "--all")
    assert code == 1 and "1 of 2 versions verified" in out and "b:1: " in err and "corrupted" in err
    failed = json.loads(cli("models", "verify", "--all", "--json")[1])
    assert failed["checked"] == 2 and [f["ref"] for f in failed["failed"]] == ["b:1"]
    assert cli("models", "verify", "a:1")[0] == 0
    assert cli("models", "verify", "b:1")[0] == 2
    code, _, err = cli("models", "verify")
    assert code == 2 and "or --all" in err
