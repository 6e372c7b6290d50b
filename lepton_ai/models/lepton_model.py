"""`LeptonModel`: a classifier that is a plain `torch.nn.Module`, built from a named
architecture, a Hugging Face directory or a registry reference, and trained in one call."""

from __future__ import annotations

import json
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_model, save_model
from torch import nn

from lepton_ai.data.inputs import Normalizer, as_inputs, batches
from lepton_ai.errors import InvalidInputError, NotFoundError
from lepton_ai.models.architectures import ARCHITECTURES, Standardize, build
from lepton_ai.models.text import TextClassifier, is_hf_dir, minilm_dir
from lepton_ai.train.loop import evaluate, fit

FORMAT = "lepton"
_META_FILE = "lepton.json"
_WEIGHTS_FILE = "model.safetensors"


def _as_size(input_size: int | Sequence[int] | None) -> tuple[int, ...]:
    if input_size is None:
        return ()
    return (int(input_size),) if isinstance(input_size, int) else tuple(int(s) for s in input_size)


class LeptonModel(nn.Module):
    """A classifier over `num_classes` for inputs of `input_size` ((features,), (C, H, W), or
    None for text). Call `load_pretrained_model` to choose the backbone, then `fit`.
    `num_classes=0` with a text backbone is an embedding model (normalised sentence embeddings)."""

    def __init__(
        self,
        num_classes: int,
        input_size: int | Sequence[int] | None = None,
        classes: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        if num_classes < 2 and num_classes != 0:
            raise InvalidInputError(
                f"num_classes must be at least 2 (or 0 for an embedding model), got {num_classes}"
            )
        self.num_classes = int(num_classes)
        self.input_size = _as_size(input_size)
        self.classes = list(classes) if classes else [str(i) for i in range(num_classes)]
        if num_classes and len(self.classes) != num_classes:
            raise InvalidInputError(f"{len(self.classes)} class names given for num_classes={num_classes}")
        self.arch: str | None = None
        self.net: nn.Module | None = None
        # how raw inputs map to features (e.g. pixel_max of images)
        self.preprocess: dict[str, Any] = {}
        # layers swapped for DP-SGD (BatchNorm → GroupNorm)
        self.replaced_modules: dict[str, dict[str, Any]] = {}

    # -- building ------------------------------------------------------------------------

    @property
    def is_text(self) -> bool:
        """Return whether the backbone takes strings."""
        return isinstance(self.net, TextClassifier)

    @property
    def is_embedding(self) -> bool:
        """Return whether this is an embedding model (num_classes=0): outputs are vectors, not logits."""
        return self.num_classes == 0

    @property
    def normalizer(self) -> Normalizer | None:
        """Return the backbone's input standardisation (fitted on the training data), if it has one."""
        norm = getattr(self.net, "normalize", None)
        return norm if isinstance(norm, Standardize) else None

    def tokenize(self, texts: Sequence[str], device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        """Return a text backbone's padded token tensors for `texts` on `device`."""
        if not isinstance(self.net, TextClassifier):
            raise InvalidInputError(f"{self.arch} takes tensors, not text: only a text backbone tokenizes")
        return self.net.tokenize(list(texts), device)

    def load_pretrained_model(
        self, name_or_path: str | Path, weights: str | Path | None = None
    ) -> LeptonModel:
        """Set the backbone from an architecture name, `minilm`, a Hugging Face directory, a
        saved Lepton model, a .safetensors file or a registry reference; return self."""
        key = str(name_or_path)
        path = Path(key).expanduser()
        if key in ARCHITECTURES:
            if self.is_embedding:
                raise InvalidInputError(
                    f"{key} is a classifier: embedding models (num_classes=0) need a text "
                    "backbone such as 'minilm' or a Hugging Face directory"
                )
            if not self.input_size:
                raise InvalidInputError(
                    f"{key} needs input_size, e.g. LeptonModel(num_classes=10, input_size=(1, 8, 8))"
                )
            self.arch, self.net = key, build(key, self.input_size, self.num_classes)
            if weights is None:
                warnings.warn(
                    f"{key}: weights are randomly initialised (no weights given); train it with fit() "
                    "or pass weights= a .safetensors file or a registry reference",
                    stacklevel=2,
                )
            else:
                self._load_weights(weights)
        elif key == "minilm" or is_hf_dir(path):
            self.arch, self.net = (
                "hf",
                TextClassifier(minilm_dir() if key == "minilm" else path, self.num_classes),
            )
            self.input_size = ()
            if weights is not None:
                self._load_weights(weights)
        elif path.is_dir() and (path / _META_FILE).exists():
            self._from_meta(json.loads((path / _META_FILE).read_text()), path)
        elif path.is_file() and path.suffix == ".safetensors":
            meta = _read_meta(path)
            if not meta:
                raise InvalidInputError(
                    f"{path} carries no Lepton metadata: name the architecture, e.g. "
                    f"load_pretrained_model('cnn-small', weights='{path}')"
                )
            self._from_meta(meta, path)
        elif path.exists():
            raise InvalidInputError(
                f"{path} is neither a Hugging Face directory, a saved Lepton model nor a .safetensors file"
            )
        else:
            # the registry (SQLAlchemy) only when a ref is loaded
            from lepton_ai.store import local_path

            try:
                local = local_path(key)
            except (NotFoundError, InvalidInputError) as e:
                raise NotFoundError(
                    f"no model {key!r}: not an architecture ({', '.join(ARCHITECTURES)}, minilm), "
                    f"a path, nor in the registry ({e})"
                ) from e
            return self.load_pretrained_model(local)
        return self

    def _configure(self, meta: dict[str, Any]) -> None:
        if meta["num_classes"] != self.num_classes:
            raise InvalidInputError(
                f"the saved model has {meta['num_classes']} classes but this LeptonModel was "
                f"built with num_classes={self.num_classes}"
            )
        saved_size = tuple(meta.get("input_size") or ())
        if self.input_size and saved_size and saved_size != self.input_size:
            raise InvalidInputError(
                f"the saved model takes input_size={saved_size} but this LeptonModel was "
                f"built with input_size={self.input_size}"
            )
        self.input_size = saved_size
        self.classes = list(meta.get("classes") or self.classes)
        self.preprocess = dict(meta.get("preprocess") or {})

    def _load_weights(self, weights: str | Path) -> None:
        from lepton_ai.store import local_path

        path = local_path(weights)
        if path.is_dir():
            path = path / _WEIGHTS_FILE
        assert self.net is not None
        _resize_to(self.net, path)
        missing, unexpected = load_model(self.net, str(path), strict=False)
        if missing or unexpected:
            raise InvalidInputError(
                f"{path} does not fit {self.arch}: missing {sorted(missing)[:5]}, "
                f"unexpected {sorted(unexpected)[:5]}"
            )

    def metadata(self) -> dict[str, Any]:
        """Return what lepton.json records: architecture, classes, input size."""
        meta = {
            "format_version": 1,
            "arch": self.arch,
            "num_classes": self.num_classes,
            "input_size": list(self.input_size),
            "classes": self.classes,
            "preprocess": self.preprocess,
        }
        if self.replaced_modules:
            meta["replaced_modules"] = self.replaced_modules
        return meta

    @classmethod
    def from_metadata(cls, meta: dict[str, Any]) -> LeptonModel:
        """Return an untrained model of the built-in architecture that `meta` (from `metadata()`) describes,
        with the layers it replaced (e.g. by a Flower client, whose weights come from the server)."""
        if meta.get("arch") not in ARCHITECTURES:
            raise InvalidInputError(
                f"cannot build {meta.get('arch')!r} from metadata alone: only the built-in "
                f"architectures ({', '.join(ARCHITECTURES)})"
            )
        model = cls(num_classes=int(meta["num_classes"]), input_size=meta.get("input_size") or None)
        model._from_meta(meta)
        return model

    def _from_meta(self, meta: dict[str, Any], weights: Path | None = None) -> None:
        """Build the saved architecture from its metadata, then load `weights` (a file or saved dir)."""
        self._configure(meta)
        if meta["arch"] == "hf":
            assert weights is not None
            self.arch, self.net = (
                "hf",
                TextClassifier(weights / "encoder", self.num_classes, pretrained=False),
            )
        else:
            self.arch, self.net = meta["arch"], build(meta["arch"], self.input_size, self.num_classes)
        self.replaced_modules = dict(meta.get("replaced_modules") or {})
        _replace_modules(self.net, self.replaced_modules)
        if weights is not None:
            self._load_weights(weights)

    # -- running -------------------------------------------------------------------------

    def forward(self, x: Any) -> torch.Tensor:
        if self.net is None:
            raise InvalidInputError(
                "no backbone yet: call load_pretrained_model('mlp' | 'cnn-small' | 'resnet18' | "
                "'minilm' | path) first"
            )
        return self.net(x)

    @torch.no_grad()
    def _outputs(self, inputs: Any, batch_size: int) -> torch.Tensor:
        self.eval()
        device = next(self.parameters()).device
        out = [self(x).float().cpu() for x in batches(self, as_inputs(self, inputs), batch_size, device)]
        return torch.cat(out) if out else torch.empty(0, self.num_classes)

    def predict_proba(self, inputs: Any, batch_size: int = 256) -> torch.Tensor:
        """Return class probabilities (N, num_classes) for a batch of inputs or a data set."""
        if self.is_embedding:
            raise InvalidInputError("an embedding model has no classes: use embed()")
        return torch.softmax(self._outputs(inputs, batch_size), -1)

    def embed(self, inputs: Any, batch_size: int = 64) -> torch.Tensor:
        """Return L2-normalised sentence embeddings (N, dim) of an embedding model (num_classes=0)."""
        if not self.is_embedding:
            raise InvalidInputError(
                "embed() is for embedding models (LeptonModel(num_classes=0)); use predict()"
            )
        return self._outputs(inputs, batch_size)

    def predict(self, inputs: Any, batch_size: int = 256) -> torch.Tensor:
        """Return the predicted class id of each input."""
        return self.predict_proba(inputs, batch_size).argmax(-1)

    def fit(self, train_data: Any, val_data: Any = None, **options: Any) -> dict[str, Any]:
        """Train on `train_data` (see `lepton_ai.train.fit` for options); return the history."""
        return fit(self, train_data, val_data, **options)

    def evaluate(self, data: Any, batch_size: int = 256) -> dict[str, float]:
        """Return {"accuracy", "loss", "f1_macro"} on labelled `data`."""
        return evaluate(self, data, batch_size=batch_size)

    # -- persistence ---------------------------------------------------------------------

    def save_dir(self, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
        """Write the model (safetensors weights, metadata plus `extra`, tokenizer) into directory `path`."""
        if self.net is None:
            raise InvalidInputError("nothing to save: the model has no backbone yet")
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        meta = {**self.metadata(), **(extra or {})}
        (path / _META_FILE).write_text(json.dumps(meta, indent=2))
        save_model(self.net, str(path / _WEIGHTS_FILE), metadata={"lepton": json.dumps(meta)})
        if isinstance(self.net, TextClassifier):
            self.net.tokenizer.save_pretrained(str(path / "encoder"))
            self.net.encoder.config.save_pretrained(str(path / "encoder"))
        return path

    def save(self, name: str, metrics: dict[str, Any] | None = None, **register: Any) -> str:
        """Register the model as the next version of `name`; return its `NAME:VERSION`."""
        from lepton_ai.store import Registry

        with tempfile.TemporaryDirectory() as tmp:
            folder = self.save_dir(Path(tmp) / name)
            return Registry().register(name, folder, metrics=metrics, format=FORMAT, **register).ref

    @classmethod
    def load(cls, ref: str | Path) -> LeptonModel:
        """Return the model saved at a registry reference or a saved-model directory."""
        from lepton_ai.store import local_path

        path = local_path(ref)
        if not (path / _META_FILE).exists():
            raise InvalidInputError(f"{ref} is not a saved Lepton model (no {_META_FILE})")
        meta = json.loads((path / _META_FILE).read_text())
        if meta.get("runtime") == "onnxruntime":
            raise InvalidInputError(
                f"{ref} is an ONNX Runtime model: load it with lepton_ai.compress.load_runnable"
            )
        model = cls(
            num_classes=meta["num_classes"], input_size=meta.get("input_size"), classes=meta.get("classes")
        )
        model._from_meta(meta, path)
        return model.eval()

    def extra_repr(self) -> str:
        return f"arch={self.arch}, num_classes={self.num_classes}, input_size={self.input_size}"


def _read_meta(path: Path) -> dict[str, Any] | None:
    with safe_open(str(path), framework="pt") as f:
        raw = (f.metadata() or {}).get("lepton")
    return json.loads(raw) if raw else None


def _replace_modules(net: nn.Module, specs: dict[str, dict[str, Any]]) -> None:
    """Swap in the layers a saved model was trained with in place of the architecture's (GroupNorm where
    DP-SGD replaced BatchNorm), so that its weights load."""
    for name, spec in specs.items():
        if spec.get("type") != "GroupNorm":
            raise InvalidInputError(
                f"the saved model replaced {name} with a {spec.get('type')}, which this version "
                "of lepton-ai cannot rebuild"
            )
        parent, _, child = name.rpartition(".")
        setattr(
            net.get_submodule(parent),
            child,
            nn.GroupNorm(spec["num_groups"], spec["num_channels"], affine=spec.get("affine", True)),
        )


def _resize_to(net: nn.Module, path: Path) -> None:
    """Give conv, linear and batch-norm layers the widths stored in `path`: a pruned model is
    the same architecture with fewer channels, and loads through the same code."""
    with safe_open(str(path), framework="pt") as f:
        # safe_open is not iterable: keys() is the only way to list its tensors
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    for name, m in net.named_modules():
        shape = shapes.get(f"{name}.weight" if name else "weight")
        if (
            shape is None
            or not isinstance(m, (nn.Conv2d, nn.Linear, nn.BatchNorm2d))
            or tuple(m.weight.shape) == shape
        ):
            continue
        if isinstance(m, nn.Conv2d):
            m.out_channels, m.in_channels = shape[0], shape[1] * m.groups
        elif isinstance(m, nn.Linear):
            m.out_features, m.in_features = shape
        else:
            m.num_features = shape[0]
            m.running_mean, m.running_var = torch.zeros(shape[0]), torch.ones(shape[0])
        m.weight = nn.Parameter(torch.empty(shape))
        if m.bias is not None:
            m.bias = nn.Parameter(torch.empty(shape[0]))
