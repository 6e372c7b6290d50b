"""Job specs: YAML, JSON and Python files; every bad field named at submit."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lepton_ai.errors import InvalidInputError, NotFoundError
from lepton_ai.jobs.spec import JobSpec, load_spec, memory_bytes, parse

TRAIN_YAML = """\
kind: train            # train | optimize | evaluate | federated | command
name: digits-nightly
resources: {cpus: 2, gpus: 0, memory: 4Gi}
spec: {model: cnn-small, data: digits, epochs: 10, name: digits-cnn}
"""


def test_the_issues_yaml_spec_loads(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(TRAIN_YAML)
    job = load_spec(path)
    assert (job.kind, job.name, job.resources.cpus, job.resources.memory_bytes) == (
        "train",
        "digits-nightly",
        2,
        4 << 30,
    )
    assert job.command() == [
        *"lepton train --model cnn-small --data digits --name digits-cnn --epochs 10".split(),
        *"--device auto --precision auto --seed 0 --json".split(),
    ]
    assert job.command("/ck", resume=True)[-3:] == ["--checkpoint-dir", "/ck", "--resume"]
    # what is stored reads back the same
    assert parse(job.to_dict()) == job


def test_json_and_python_specs(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(
        '{"kind": "command", "name": "echo", "spec": {"argv": ["echo", "; rm -rf /"]}}'
    )
    # an argv, never a shell string
    assert load_spec(tmp_path / "a.json").command() == ["echo", "; rm -rf /"]
    (tmp_path / "b.py").write_text(
        "from lepton_ai.jobs import parse\n"
        "job = parse({'kind': 'evaluate', 'name': 'ev', 'spec': {'model': 'm:1', 'data': 'digits'}})\n"
    )
    assert load_spec(tmp_path / "b.py").command() == [
        *"lepton evaluate m:1 --data digits --split test --json".split()
    ]
    (tmp_path / "d.py").write_text(
        "from lepton_ai.jobs.spec import CommandSpec, JobSpec\n"
        "job = JobSpec(kind='train', name='mm', spec=CommandSpec(argv=['true']))\n"
    )
    with pytest.raises(InvalidInputError, match="kind train needs a TrainSpec"):
        # a spec built in Python is checked again like any other
        load_spec(tmp_path / "d.py")
    with pytest.raises(InvalidInputError, match="is a directory"):
        load_spec(tmp_path)
    (tmp_path / "c.py").write_text("x = 1\n")
    with pytest.raises(InvalidInputError, match="defines no `job`"):
        load_spec(tmp_path / "c.py")
    with pytest.raises(NotFoundError):
        load_spec(tmp_path / "missing.yaml")


def test_privacy_reaches_the_commands_flags() -> None:
    train = parse(
        {
            "kind": "train",
            "name": "dp",
            "spec": {"model": "mlp", "data": "digits", "name": "digits-dp", "privacy": {"epsilon": 3}},
        }
    )
    assert train.command()[-7:] == ["--seed", "0", "--dp-epsilon", "3.0", "--dp-delta", "1e-05", "--json"]
    # left out: the DP-SGD defaults of `lepton train` apply
    assert "--epochs" not in train.command()
    fl = parse(
        {
            "kind": "federated",
            "name": "fl",
            "spec": {
                "clients": 100,
                "partition": "dirichlet:0.1",
                "privacy": {"epsilon": 8, "delta": 1e-6, "clip": 0.5},
            },
        }
    )
    assert fl.command() == [
        *"lepton fl run --data digits --clients 100 --rounds 30 --partition dirichlet:0.1".split(),
        *"--strategy fedavg --fraction 1.0 --seed 0".split(),
        *"--dp-epsilon 8.0 --dp-delta 1e-06 --dp-clip 0.5 --json".split(),
    ]


@pytest.mark.parametrize(
    "doc, message",
    [
        (
            {
                "kind": "train",
                "name": "a",
                "spec": {"model": "m", "data": "d", "name": "n", "privacy": {"epsilon": 0}},
            },
            "spec.privacy.epsilon: Input should be greater than 0",
        ),
        (
            {"kind": "federated", "name": "a", "spec": {"privacy": {"epsilon": 8, "delta": 1}}},
            "spec.privacy.delta: Input should be less than 1",
        ),
        (
            {
                "kind": "train",
                "name": "a",
                "spec": {"model": "m", "data": "d", "name": "n", "privacy": {"epsilon": "inf"}},
            },
            "spec.privacy.epsilon: Input should be a finite number",
        ),
        (
            {
                "kind": "train",
                "name": "a",
                "resources": {"cpus": 2},
                "spec": {"model": "m", "data": "d", "name": "n", "nproc": 2, "privacy": {"epsilon": 3}},
            },
            "privacy .DP-SGD. trains in one process",
        ),
        (
            {
                "kind": "federated",
                "name": "a",
                "spec": {"strategy": "trimmed:0.1", "privacy": {"epsilon": 8}},
            },
            "trimmed mean cannot be combined with privacy",
        ),
        ({"kind": "trian", "name": "a", "spec": {}}, "kind: 'trian' is not one of train, optimize"),
        ({"kind": "train", "name": "a", "spec": {"model": "m", "data": "d"}}, "spec.name: Field required"),
        (
            {"kind": "train", "name": "a", "spec": {"model": "m", "data": "d", "name": "n", "epochs": "ten"}},
            "spec.epochs: Input should be a valid integer",
        ),
        (
            {"kind": "train", "name": "a", "spec": {"model": "m", "data": "d", "name": "n", "epochs": 0}},
            "spec.epochs: Input should be greater than or equal to 1",
        ),
        (
            {
                "kind": "train",
                "name": "a",
                "resources": {"cpus": "x"},
                "spec": {"model": "m", "data": "d", "name": "n"},
            },
            "resources.cpus: Input should be a valid number",
        ),
        (
            {
                "kind": "train",
                "name": "a",
                "resources": {"memory": "4GB"},
                "spec": {"model": "m", "data": "d", "name": "n"},
            },
            "resources.memory: .*not a memory size",
        ),
        ({"kind": "command", "name": "Bad Name", "spec": {"argv": ["x"]}}, "name: .*lowercase"),
        (
            {"kind": "command", "name": "a", "spec": {"argv": []}},
            "spec.argv: List should have at least 1 item",
        ),
        ({"kind": "command", "name": "a", "spec": {"argv": ["x"], "shell": "x"}}, "spec.shell: Extra inputs"),
        ({"kind": "command", "name": "a", "spec": {"argv": ["x"]}, "retry": 2}, "retry: Extra inputs"),
        ({"kind": "command", "spec": {"argv": ["x"]}}, "^name: Field required"),
        (["kind", "train"], "a job spec is a mapping"),
        ({"kind": "command", "name": "a", "spec": {"argv": ["echo", "a\x00b"]}}, "spec.argv: .*NUL"),
        (
            {"kind": "command", "name": "a", "spec": {"argv": ["x"], "env": {"A=B": "1"}}},
            "spec.env: .*cannot be set",
        ),
        (
            {"kind": "train", "name": "a", "spec": {"model": "m", "data": "d", "name": "n", "nproc": 4}},
            "spec.nproc 4 processes need resources.cpus",
        ),
        (
            {"kind": "command", "name": "a", "priority": "high", "spec": {"argv": ["x"]}},
            "priority: Input should be",
        ),
    ],
)
def test_bad_specs_are_refused_naming_the_field(doc: object, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        parse(doc)


def test_bad_yaml_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("kind: [train\nname: x\n")
    with pytest.raises(InvalidInputError, match="is not valid YAML") as e:
        load_spec(tmp_path / "bad.yaml")
    assert "\n" not in str(e.value)


def test_memory_quantities() -> None:
    assert [memory_bytes(x) for x in ("512Mi", "4Gi", "2G", "1000", "1.5Gi")] == [
        512 << 20,
        4 << 30,
        2 * 10**9,
        1000,
        3 << 29,
    ]
    with pytest.raises(ValueError):
        memory_bytes("lots")
    assert (
        JobSpec.model_validate({"kind": "command", "name": "a", "spec": {"argv": ["x"]}}).resources.cpus
        == 1.0
    )


@pytest.mark.parametrize(
    "doc",
    [
        {"kind": "command", "name": "echo\n", "spec": {"argv": ["true"]}},
        {"kind": "command", "name": "echo", "spec": {"argv": ["true"], "env": {"MY_VAR\n": "1"}}},
    ],
)
def test_a_name_with_a_trailing_newline_is_refused(doc: dict) -> None:
    with pytest.raises((InvalidInputError, ValueError)):
        parse(doc)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
fields = st.sampled_from(
    ["kind", "name", "spec", "resources", "retries", "priority", "argv", "env", "model", "data"]
)
documents = st.dictionaries(
    fields, json_values | st.sampled_from(["command", "train", "optimize"]), max_size=6
)


@settings(max_examples=300, deadline=None)
@given(doc=documents | json_values)
def test_any_document_is_a_job_spec_or_one_clear_error(doc: object) -> None:
    try:
        spec = parse(doc)
    except InvalidInputError as e:
        assert str(e) and "\n" not in str(e)
    else:
        assert spec.kind in ("command", "train", "optimize", "evaluate", "federated")


def test_env_values_can_be_references_each_backend_resolves() -> None:
    from lepton_ai.jobs.spec import CommandSpec, FromEnv, SecretKey

    env = {
        "PLAIN": "1",
        "TOKEN": {"from_env": "WORKER_TOKEN"},
        "DB": {"secret": "db-creds", "key": "password"},
    }
    spec = parse({"kind": "command", "name": "refs", "spec": {"argv": ["true"], "env": env}}).spec
    assert isinstance(spec, CommandSpec)
    assert spec.env == {
        "PLAIN": "1",
        "TOKEN": FromEnv(from_env="WORKER_TOKEN"),
        "DB": SecretKey(secret="db-creds", key="password"),
    }
    for backend, refused in (("local", "DB"), ("ray", "DB"), ("kubernetes", "TOKEN")):
        with pytest.raises(InvalidInputError, match=f"spec.env.{refused}: .* not on {backend}"):
            spec.check_backend(backend)
    with pytest.raises(InvalidInputError, match="no WORKER_TOKEN"):
        CommandSpec(argv=["true"], env={"TOKEN": FromEnv(from_env="WORKER_TOKEN")}).resolved_env({})
    local = CommandSpec(argv=["true"], env={"PLAIN": "1", "TOKEN": FromEnv(from_env="WORKER_TOKEN")})
    assert local.resolved_env({"WORKER_TOKEN": "s3"}) == {"PLAIN": "1", "TOKEN": "s3"}
    with pytest.raises(InvalidInputError, match="from_env"):
        parse(
            {"kind": "command", "name": "bad", "spec": {"argv": ["true"], "env": {"X": {"from_env": "A B"}}}}
        )
