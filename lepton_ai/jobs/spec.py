"""Job specs: what to run (a `lepton` command or any argv) and the resources it needs,
from YAML, JSON or Python, validated with pydantic so a bad field is named at submit."""

from __future__ import annotations

import json
import re
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from lepton_ai.errors import InvalidInputError, NotFoundError

Kind = Literal["train", "optimize", "evaluate", "federated", "command"]
KINDS: tuple[str, ...] = typing.get_args(Kind)
_MEMORY = re.compile(r"(\d+(?:\.\d+)?)\s*(Ki|Mi|Gi|Ti|K|M|G|T)?")
_UNITS = {
    None: 1,
    "K": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}
# also a valid Kubernetes / Ray name
_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,51}[a-z0-9])?")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def memory_bytes(text: str) -> int:
    """Return the bytes in a Kubernetes-style quantity ("4Gi", "512Mi", "2G", "1000000")."""
    m = _MEMORY.fullmatch(str(text).strip())
    if not m:
        raise ValueError(f"{text!r} is not a memory size like 512Mi or 4Gi")
    return int(float(m.group(1)) * _UNITS[m.group(2)])


class Resources(_Strict):
    """What one job holds while it runs: CPU slots, whole GPUs and memory."""

    cpus: float = Field(1.0, gt=0, le=1024)
    gpus: int = Field(0, ge=0, le=64)
    memory: str | None = None

    @field_validator("memory")
    @classmethod
    def _memory(cls, v: str | None) -> str | None:
        if v is not None:
            memory_bytes(v)
        return v

    @property
    def memory_bytes(self) -> int:
        """Return the memory asked for, in bytes (0 when unspecified)."""
        return memory_bytes(self.memory) if self.memory else 0


def _flags(**values: Any) -> list[str]:
    """Return `--name value` for each value given, None left out (`batch_size` → `--batch-size`)."""
    argv: list[str] = []
    for name, value in values.items():
        if value is not None:
            argv += [
                f"--{name.replace('_', '-')}",
                ",".join(value) if isinstance(value, list) else str(value),
            ]
    return argv


class Privacy(_Strict):
    """Differential privacy: the ε to spend over the run, δ, and the clipping norm (of each example's
    gradient in `train`, of each client's update in `federated`; the command's default when left out)."""

    epsilon: float = Field(gt=0)
    delta: float = Field(1e-5, gt=0, lt=1)
    clip: float | None = Field(None, gt=0)


class TrainSpec(_Strict):
    """`lepton train`: one process, or `nproc` × `nnodes` data-parallel processes. Epochs, lr and batch size
    left out take the command's defaults (the DP-SGD defaults with `privacy`)."""

    model: str
    data: str
    name: str
    epochs: int | None = Field(None, ge=1)
    lr: float | None = Field(None, gt=0)
    batch_size: int | None = Field(None, ge=1)
    device: str = "auto"
    precision: str = "auto"
    seed: int = 0
    nproc: int = Field(1, ge=1)
    nnodes: int = Field(1, ge=1)
    privacy: Privacy | None = None

    @model_validator(mode="after")
    def _private_in_one_fp32_process(self) -> TrainSpec:
        if self.privacy and (self.nproc > 1 or self.nnodes > 1 or self.precision in ("fp16", "bf16")):
            raise ValueError(
                "privacy (DP-SGD) trains in one process in fp32: drop nproc/nnodes or use precision "
                "auto or fp32"
            )
        return self

    def args(self) -> list[str]:
        """Return the `lepton` arguments that run this step."""
        dp = self.privacy
        return [
            "train",
            *_flags(
                model=self.model,
                data=self.data,
                name=self.name,
                epochs=self.epochs,
                lr=self.lr,
                batch_size=self.batch_size,
                device=self.device,
                precision=self.precision,
                seed=self.seed,
                nproc=self.nproc if self.nproc > 1 else None,
                dp_epsilon=dp and dp.epsilon,
                dp_delta=dp and dp.delta,
                max_grad_norm=dp and dp.clip,
            ),
        ]


class OptimizeSpec(_Strict):
    """`lepton optimize`: search compression recipes for a registered model."""

    model: str
    data: str
    name: str | None = None
    max_accuracy_drop: float | None = Field(None, ge=0)
    max_fidelity_drop: float | None = Field(None, ge=0)
    objective: Literal["throughput", "latency", "size"] = "throughput"
    batch_size: int = Field(64, ge=1)
    time_budget: float = Field(600, gt=0)
    techniques: list[str] | None = None

    def args(self) -> list[str]:
        """Return the `lepton` arguments that run this step."""
        return [
            "optimize",
            self.model,
            *_flags(
                data=self.data,
                objective=self.objective,
                batch_size=self.batch_size,
                time_budget=self.time_budget,
                name=self.name,
                max_accuracy_drop=self.max_accuracy_drop,
                max_fidelity_drop=self.max_fidelity_drop,
                techniques=self.techniques or None,
            ),
        ]


class EvaluateSpec(_Strict):
    """`lepton evaluate`: test a registered model on a data split."""

    model: str
    data: str
    split: Literal["train", "val", "test"] = "test"

    def args(self) -> list[str]:
        """Return the `lepton` arguments that run this step."""
        return ["evaluate", self.model, *_flags(data=self.data, split=self.split)]


class FederatedSpec(_Strict):
    """`lepton fl run`: a federated-learning simulation (the command's defaults for what is left out;
    client-level DP with `privacy`)."""

    model: str | None = None
    data: str = "digits"
    clients: int = Field(10, ge=1)
    rounds: int = Field(30, ge=1)
    partition: str = "iid"
    strategy: str = "fedavg"
    fraction: float = Field(1.0, gt=0, le=1)
    local_epochs: int | None = Field(None, ge=1)
    lr: float | None = Field(None, gt=0)
    batch_size: int | None = Field(None, ge=1)
    seed: int = 0
    name: str | None = None
    privacy: Privacy | None = None

    @model_validator(mode="after")
    def _private_strategy(self) -> FederatedSpec:
        if self.privacy and self.strategy.strip().lower().startswith("trimmed"):
            raise ValueError("a trimmed mean cannot be combined with privacy (client-level DP)")
        return self

    def args(self) -> list[str]:
        """Return the `lepton` arguments that run this step."""
        dp = self.privacy
        return [
            "fl",
            "run",
            *_flags(
                model=self.model,
                data=self.data,
                clients=self.clients,
                rounds=self.rounds,
                partition=self.partition,
                strategy=self.strategy,
                fraction=self.fraction,
                local_epochs=self.local_epochs,
                lr=self.lr,
                batch_size=self.batch_size,
                seed=self.seed,
                name=self.name,
                dp_epsilon=dp and dp.epsilon,
                dp_delta=dp and dp.delta,
                dp_clip=dp and dp.clip,
            ),
        ]


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SECRET_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
_SECRET_KEY = re.compile(r"[-._a-zA-Z0-9]{1,253}")


class FromEnv(_Strict):
    """An environment value read where the job runs — the local worker's environment, a Ray node's — so the
    value itself is never stored or sent."""

    from_env: str

    @field_validator("from_env")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _ENV_NAME.fullmatch(v):
            raise ValueError(f"from_env: {v!r} is not an environment variable's name")
        return v


class SecretKey(_Strict):
    """An environment value taken by Kubernetes from a key of a Secret: the value never leaves the cluster."""

    secret: str
    key: str

    @model_validator(mode="after")
    def _names(self) -> SecretKey:
        if not _SECRET_NAME.fullmatch(self.secret) or not _SECRET_KEY.fullmatch(self.key):
            raise ValueError(
                f"secret {self.secret!r}, key {self.key!r}: not a Kubernetes Secret's name and key"
            )
        return self


# where each kind of reference can be resolved
_RESOLVED_ON: dict[type[BaseModel], tuple[str, ...]] = {FromEnv: ("local", "ray"), SecretKey: ("kubernetes",)}


class CommandSpec(_Strict):
    """Any program, given as an argv list (never a shell string), with extra environment: values, or
    references to values held where the job runs (`{"from_env": NAME}`, `{"secret": S, "key": K}`)."""

    argv: list[str] = Field(min_length=1)
    env: dict[str, str | FromEnv | SecretKey] = Field(default_factory=dict)

    @field_validator("argv")
    @classmethod
    def _argv(cls, v: list[str]) -> list[str]:
        if not v[0] or any("\x00" in a for a in v):
            raise ValueError("an empty program name or a NUL character cannot be run")
        return v

    @field_validator("env")
    @classmethod
    def _env(cls, v: dict[str, str | FromEnv | SecretKey]) -> dict[str, str | FromEnv | SecretKey]:
        for name, value in v.items():
            nul = isinstance(value, str) and "\x00" in value
            if not _ENV_NAME.fullmatch(name) or nul or name.startswith("LEPTON_JOB_"):
                raise ValueError(f"{name!r} cannot be set (a name like MY_VAR, no NUL, not LEPTON_JOB_*)")
        return v

    def check_backend(self, backend: str) -> None:
        """Refuse references the backend cannot resolve, naming the one that can."""
        for name, value in self.env.items():
            if isinstance(value, str):
                continue
            where = _RESOLVED_ON[type(value)]
            if backend not in where:
                raise InvalidInputError(
                    f"spec.env.{name}: {value.model_dump()} is read on {' or '.join(where)} only, not on "
                    f"{backend}: use {{'from_env': NAME}} locally and on Ray, {{'secret': S, 'key': K}} on "
                    "Kubernetes"
                )

    def resolved_env(self, environ: Mapping[str, str]) -> dict[str, str]:
        """Return the environment with each `from_env` reference read from `environ` (the worker's)."""
        self.check_backend("local")
        out = {}
        for name, value in self.env.items():
            if isinstance(value, FromEnv):
                if value.from_env not in environ:
                    raise InvalidInputError(f"spec.env.{name}: this worker has no {value.from_env} to give")
                out[name] = environ[value.from_env]
            elif isinstance(value, str):
                out[name] = value
        return out


SPECS: dict[str, type[_Strict]] = {
    "train": TrainSpec,
    "optimize": OptimizeSpec,
    "evaluate": EvaluateSpec,
    "federated": FederatedSpec,
    "command": CommandSpec,
}


class JobSpec(_Strict):
    """A whole job: its kind, a name, resources, the kind's own fields, and how often to retry."""

    kind: Kind
    name: str
    resources: Resources = Field(default_factory=lambda: Resources.model_validate({}))
    spec: TrainSpec | OptimizeSpec | EvaluateSpec | FederatedSpec | CommandSpec
    retries: int = Field(0, ge=0, le=10)
    priority: int = Field(0, ge=-1000, le=1000)

    @model_validator(mode="after")
    def _spec_fits_kind(self) -> JobSpec:
        if not isinstance(self.spec, SPECS[self.kind]):
            raise ValueError(
                f"kind {self.kind} needs a {SPECS[self.kind].__name__}, not a {type(self.spec).__name__}"
            )
        if (
            isinstance(self.spec, TrainSpec)
            and self.spec.nproc > max(1, self.resources.cpus)
            and self.resources.gpus < self.spec.nproc
        ):
            raise ValueError(
                f"spec.nproc {self.spec.nproc} processes need resources.cpus (or gpus) >= {self.spec.nproc}"
            )
        return self

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.fullmatch(v):
            raise ValueError(
                "use 1-53 lowercase letters, digits and '-' (it names Kubernetes and Ray objects)"
            )
        return v

    def command(self, checkpoint_dir: str | None = None, resume: bool = False) -> list[str]:
        """Return the argv this job runs, starting with `lepton` for the built-in kinds."""
        if isinstance(self.spec, CommandSpec):
            return list(self.spec.argv)
        argv = ["lepton", *self.spec.args(), "--json"]
        if isinstance(self.spec, TrainSpec):
            argv += (["--checkpoint-dir", checkpoint_dir] if checkpoint_dir else []) + (
                ["--resume"] if resume else []
            )
        return argv

    def to_dict(self) -> dict[str, Any]:
        """Return the spec as plain data (what is stored and what `parse` reads back)."""
        return self.model_dump(mode="json")


def _where(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc if not (isinstance(p, str) and p[0].isupper())) or "spec"


def parse(doc: Any) -> JobSpec:
    """Return the validated JobSpec for a mapping; raise InvalidInputError naming the bad field."""
    if not isinstance(doc, dict):
        raise InvalidInputError(f"a job spec is a mapping with kind, name and spec, not {type(doc).__name__}")
    kind = doc.get("kind")
    if not isinstance(kind, str) or kind not in SPECS:
        raise InvalidInputError(f"kind: {kind!r} is not one of {', '.join(KINDS)}")
    body = doc.get("spec")
    try:
        typed = SPECS[kind].model_validate(body if body is not None else {})
        return JobSpec.model_validate({**doc, "spec": typed})
    except ValidationError as e:
        raise _explain(e) from None


def _explain(e: ValidationError) -> InvalidInputError:
    """Return a one-line error naming the first bad field ("spec.epochs: …") of a validation error."""
    err = e.errors()[0]
    prefix = "spec." if e.title in {c.__name__ for c in SPECS.values()} else ""
    got = (
        f" (got {err['input']!r})" if err["type"] not in ("missing", "extra_forbidden", "value_error") else ""
    )
    return InvalidInputError(f"{prefix}{_where(err['loc'])}: {err['msg']}{got}")


def load_spec(source: str | Path) -> JobSpec:
    """Read a job spec from a YAML or JSON file, or from a Python file defining `job` (a JobSpec or dict)."""
    path = Path(source)
    if path.is_dir():
        raise InvalidInputError(f"{path} is a directory: give a .yaml, .json or .py job spec file")
    if not path.is_file():
        raise NotFoundError(f"no such job spec file: {path}")
    if path.suffix == ".py":
        import runpy

        try:
            job = runpy.run_path(str(path)).get("job")
        except ValidationError as e:
            raise _explain(e) from None
        if job is None:
            raise InvalidInputError(f"{path} defines no `job` (a JobSpec or a dict)")
        # checked again, whatever built it
        return parse(job.to_dict() if isinstance(job, JobSpec) else job)
    text = path.read_text(encoding="utf-8")
    try:
        doc = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise InvalidInputError(
            f"{path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {str(e).splitlines()[0]}"
        ) from None
    return parse(doc)
