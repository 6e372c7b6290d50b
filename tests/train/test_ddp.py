"""Data-parallel training through torchrun: real processes, a real gloo process group, no mocks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lepton_ai.cli.main import main
from lepton_ai.store import Registry
from lepton_ai.train.distributed import shard, torchrun_argv

LEPTON = str(Path(sys.executable).with_name("lepton"))


def lepton_train(*args: str) -> subprocess.CompletedProcess:
    """Run `lepton train` in a child process (LEPTON_HOME is the test's own, from the autouse fixture)."""
    return subprocess.run(
        [LEPTON, "train", "--data", "digits", *args], capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
def test_two_processes_register_once_and_match_one_process() -> None:
    two = lepton_train("--model", "mlp", "--epochs", "10", "--name", "two", "--nproc", "2", "--json")
    assert two.returncode == 0, two.stderr
    # rank 0's document, and nothing else, on the parent's stdout
    doc = json.loads(two.stdout)
    assert doc["world_size"] == 2 and doc["version"] == 1 and len(doc["epoch_seconds"]) == 10
    registry = Registry()
    assert [v.version for v in registry.list_versions("two")] == [1]
    runs = registry.list_runs()
    assert len(runs) == 1 and runs[0].status == "completed" and runs[0].params["world_size"] == 2
    # one row per epoch, logged by rank 0 alone
    assert len(runs[0].history["train_loss"]) == 10

    one = lepton_train("--model", "mlp", "--epochs", "10", "--name", "one", "--json")
    assert one.returncode == 0, one.stderr
    assert "world_size" not in registry.get_run(json.loads(one.stdout)["run_id"]).params
    # each keeps its best epoch on the validation split, which may be a different one: a few test examples
    assert abs(doc["metrics"]["accuracy"] - json.loads(one.stdout)["metrics"]["accuracy"]) <= 0.025


@pytest.mark.slow
def test_two_processes_resume_from_rank_0s_checkpoint(lepton_home: Path) -> None:
    first = lepton_train("--model", "cnn-small", "--epochs", "2", "--name", "r", "--nproc", "2", "--json")
    assert first.returncode == 0, first.stderr
    assert (lepton_home / "checkpoints" / "r" / "last.pt").exists()
    again = lepton_train(
        "--model", "cnn-small", "--epochs", "3", "--name", "r", "--nproc", "2", "--resume", "--json"
    )
    assert again.returncode == 0, again.stderr
    doc = json.loads(again.stdout)
    assert doc["resumed_from_epoch"] == 2 and len(doc["epoch_seconds"]) == 3 and doc["version"] == 2
    assert len(Registry().list_runs()) == 2


@pytest.mark.slow
def test_a_failing_rank_fails_the_job_with_one_line() -> None:
    r = lepton_train("--model", "no-such-model", "--name", "f", "--nproc", "2", "--json")
    assert r.returncode != 0 and r.stdout == ""
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: data-parallel training failed: rank ") and "exited with code 2" in last
    # torchrun's own report is left out; the ranks' one-line errors stay
    assert "Traceback" not in r.stderr
    assert "error: no model 'no-such-model'" in r.stderr


@pytest.mark.parametrize("n", [10, 11, 1257])
@pytest.mark.parametrize("world_size", [1, 2, 3, 7])
def test_shards_are_equal_disjoint_and_cover_the_permutation(n: int, world_size: int) -> None:
    order = torch.randperm(n, generator=torch.Generator().manual_seed(n))
    shards = [shard(order, r, world_size) for r in range(world_size)]
    # every rank takes the same number of steps
    assert len({len(s) for s in shards}) == 1
    taken = torch.cat(shards).tolist()
    pad = len(taken) - n
    assert 0 <= pad < world_size
    # each index once, plus the wrap-around
    assert sorted(taken) == sorted(order.tolist() + order[:pad].tolist())
    if pad == 0:
        assert len(set(taken)) == n


def test_torchrun_command_lines() -> None:
    local = torchrun_argv(2, 1, None, None, ["train", "--json"])
    assert local[1:3] == ["-m", "torch.distributed.run"] and "--standalone" in local
    assert local[-4:] == ["-m", "lepton_ai.cli.main", "train", "--json"]
    static = torchrun_argv(4, 2, "node0:29400", 1, ["train"])
    assert {"--nnodes=2", "--rdzv-backend=static", "--rdzv-endpoint=node0:29400", "--node-rank=1"} <= set(
        static
    )
    joined = torchrun_argv(4, 2, "node0:29400", None, ["train"], rdzv_id="job7")
    assert {"--rdzv-backend=c10d", "--rdzv-id=job7"} <= set(joined)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--nproc", "0"], "--nproc must be at least 1"),
        (["--nproc", "5000"], "5000 processes but digits has 1257 training examples"),
        (["--nnodes", "2"], "--nnodes > 1 needs --rdzv HOST:PORT"),
        (["--nnodes", "2", "--rdzv", "node0"], "--rdzv must be HOST:PORT"),
    ],
)
def test_bad_launch_options_are_one_line_exit_2(
    args: list[str], message: str, lepton_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--model", "mlp", "--data", "digits", "--name", "bad", *args])
    out, err = capsys.readouterr()
    assert exit_.value.code == 2 and out == ""
    assert err.strip().splitlines() == [err.strip()] and message in err
    # nothing started, nothing written
    assert not (lepton_home / "registry.db").exists()
