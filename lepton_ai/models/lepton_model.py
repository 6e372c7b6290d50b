"""`LeptonModel`: a classifier that is a plain `torch.nn.Module`, built from a named
architecture, a Hugging Face directory or a registry reference, and trained in one call."""

from __future__ import annotations

import contextlib
import json
import re
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import torch
from safetensors.torch import load_file, save_file, save_model
from torch import nn

from lepton_ai.data import LabeledData
from lepton_ai.data.inputs import Normalizer, Tokens, as_inputs, batches, check_data
from lepton_ai.device import resolve_device
from lepton_ai.errors import InvalidInputError, NotFoundError
from lepton_ai.models import lora
from lepton_ai.models.architectures import ARCHITECTURES, Standardize, build, unit_features
from lepton_ai.models.features import encoder_features
from lepton_ai.models.lora import LoraSpec
from lepton_ai.models.text import TextClassifier, is_hf_dir, minilm_dir
from lepton_ai.models.weights import is_backbone, load_weights, read_meta, replace_modules, unpack_int8
from lepton_ai.train.head import fit_head
from lepton_ai.train.loop import evaluate, fit

FORMAT = "lepton"
_META_FILE = "lepton.json"
_WEIGHTS_FILE = "model.safetensors"
_ADAPTER_FILE = "adapter.safetensors"
# what a directory's name keeps as a registry name
_REGISTRY_NAME = re.compile(r"[^a-z0-9._-]+")


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
        # where the backbone's weights came from ("minilm", a directory, NAME:VERSION); None: random
        self.source: str | None = None
        # a LoRA adapter's shape, and the registered version whose weights it adapts
        self.lora: LoraSpec | None = None
        self.base: str | None = None
        # trainings that changed the encoder since it was loaded; whether one was a full one
        self.updates, self.tuned = 0, False

    # -- building ------------------------------------------------------------------------

    @property
    def is_text(self) -> bool:
        """Return whether the backbone takes strings."""
        return isinstance(self.net, TextClassifier)

    @property
    def family(self) -> str:
        """Return how it trains unless told otherwise: "lora" (an adapter on), "transformer" or "scratch"."""
        if self.lora is not None:
            return "lora"
        return "transformer" if self.is_text else "scratch"

    @property
    def is_embedding(self) -> bool:
        """Return whether this is an embedding model (num_classes=0): outputs are vectors, not logits."""
        return self.num_classes == 0

    @property
    def normalizer(self) -> Normalizer | None:
        """Return the backbone's input standardisation (fitted on the training data), if it has one."""
        norm = getattr(self.net, "normalize", None)
        return norm if isinstance(norm, Standardize) else None

    def _text_net(self) -> TextClassifier:
        if not isinstance(self.net, TextClassifier):
            raise InvalidInputError(f"{self.arch} takes tensors, not text: only a text backbone tokenizes")
        return self.net

    def tokenize(self, texts: Sequence[str], device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        """Return a text backbone's padded token tensors for `texts` on `device`."""
        return self._text_net().tokenize(list(texts), device, self.preprocess.get("max_length"))

    def encode(self, texts: Sequence[str]) -> Tokens:
        """Return `texts` tokenised once (cut at `preprocess["max_length"]`), to be batched with padding."""
        return self._text_net().encode(list(texts), self.preprocess.get("max_length"))

    def load_pretrained_model(
        self, name_or_path: str | Path, weights: str | Path | None = None, merge: bool = True
    ) -> LeptonModel:
        """Set the backbone from an architecture name, `minilm`, a Hugging Face directory, a
        saved Lepton model, a .safetensors file or a registry reference; return self. A saved LoRA adapter
        is folded into its base's weights unless `merge=False` (to train the adapter further)."""
        key = str(name_or_path)
        path = Path(key).expanduser()
        self.source, self.lora, self.base = key if weights is None else str(weights), None, None
        self.updates, self.tuned = 0, False
        if key in ARCHITECTURES:
            if not self.input_size:
                raise InvalidInputError(
                    f"{key} needs input_size, e.g. LeptonModel(num_classes=10, input_size=(1, 8, 8))"
                )
            self.arch, self.net = key, build(key, self.input_size, self.num_classes)
            if weights is None:
                self.source = None
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
            self._from_meta(json.loads((path / _META_FILE).read_text()), path, merge)
        elif path.is_file() and path.suffix == ".safetensors":
            meta = read_meta(path)
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
            from lepton_ai.store import Registry

            registry = Registry()
            try:
                ref = registry.get(key).ref
                local = registry.fetch(ref)
            except (NotFoundError, InvalidInputError) as e:
                raise NotFoundError(
                    f"no model {key!r}: not an architecture ({', '.join(ARCHITECTURES)}, minilm), "
                    f"a path, nor in the registry ({e})"
                ) from e
            self.load_pretrained_model(local, merge=merge)
            self.source = ref
        return self

    def _configure(self, meta: dict[str, Any]) -> None:
        if meta["num_classes"] != self.num_classes and not is_backbone(meta):
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
        if not is_backbone(meta):
            self.classes = list(meta.get("classes") or self.classes)
        self.preprocess = dict(meta.get("preprocess") or {})

    def _load_weights(self, weights: str | Path) -> None:
        assert self.net is not None
        load_weights(self.net, weights, _WEIGHTS_FILE, str(self.arch))

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

    def _from_meta(self, meta: dict[str, Any], weights: Path | None = None, merge: bool = True) -> None:
        """Build the saved architecture from its metadata, then load `weights` (a file or saved dir)."""
        self._configure(meta)
        if meta.get("adapter"):
            assert weights is not None
            self._load_adapter(meta["adapter"], weights, merge)
        elif meta["arch"] == "hf":
            assert weights is not None
            self.arch, self.net = (
                "hf",
                TextClassifier(weights / "encoder", self.num_classes, pretrained=False),
            )
        else:
            self.arch, self.net = meta["arch"], build(meta["arch"], self.input_size, self.num_classes)
        self.replaced_modules = dict(meta.get("replaced_modules") or {})
        assert self.net is not None
        replace_modules(self.net, self.replaced_modules)
        if self.preprocess.get("unit_features"):
            unit_features(self.net)
        if weights is None or meta.get("adapter"):
            return
        if is_backbone(meta) and self.num_classes:
            # a pretrained backbone under a fresh head for this model's classes
            head, self.net.head = self.net.head, nn.Identity()
            self._load_weights(weights)
            self.net.head = head
        else:
            self._load_weights(weights)

    # -- LoRA ----------------------------------------------------------------------------

    def add_lora(self, spec: LoraSpec | str | dict[str, Any]) -> LeptonModel:
        """Put a fresh LoRA adapter on the text encoder's attention layers (e.g. "r=8,alpha=16"); from then
        on only the adapter and the head train, and `save` registers the adapter alone; return self."""
        lora_spec = LoraSpec.of(spec)
        assert lora_spec is not None
        if not isinstance(self.net, TextClassifier):
            raise InvalidInputError(
                f"LoRA adapts a transformer's attention layers and {self.arch or 'this model'} has none: "
                "drop --lora, or fine-tune minilm or a Hugging Face directory"
            )
        if self.lora is not None:
            raise InvalidInputError("this model already carries a LoRA adapter: train it as it is")
        self.net.encoder = lora.add_adapter(self.net.encoder, lora_spec)
        self.lora = lora_spec
        return self

    def merge_lora(self) -> LeptonModel:
        """Fold the adapter into the encoder's weights: a plain model again, as fast as its base."""
        if self.lora is not None:
            assert isinstance(self.net, TextClassifier)
            self.net.encoder = lora.merged(self.net.encoder)
            # the merged weights are the adapter's version's, which the caller names if it knows it
            self.lora = self.base = self.source = None
        return self

    def _base_version(self) -> str:
        """Return the registered version whose encoder the adapter adapts, registering a pretrained base
        ("minilm", a Hugging Face directory, a saved model's directory) once."""
        from lepton_ai.store import Registry

        if self.base is not None:
            return self.base
        if self.source is None or self.tuned:
            raise InvalidInputError(
                "the adapter's base weights are saved nowhere (random, or trained since they were loaded): "
                "register the model first (model.save(name)), load that version, then add the adapter"
            )
        registry, source = Registry(), self.source
        path = Path(source).expanduser()
        if source != "minilm" and not path.exists():
            ref = registry.get(source).ref
            if (registry.fetch(ref) / _ADAPTER_FILE).exists():
                raise InvalidInputError(
                    f"{ref} is itself a LoRA adapter: train it on as one (lepton train --model {ref} --lora "
                    "..., or LeptonModel.load(ref, merge=False))"
                )
            return ref
        name = "minilm" if source == "minilm" else _REGISTRY_NAME.sub("-", path.name.lower())
        with contextlib.suppress(NotFoundError):
            for version in registry.list_versions(name):
                if (version.recipe or {}).get("pretrained") == source:
                    return version.ref
        about, recipe = f"{source}, the base of LoRA adapters", {"pretrained": source}
        if (path / _META_FILE).exists():
            return registry.register(name, path, format=FORMAT, description=about, recipe=recipe).ref
        return (
            LeptonModel(num_classes=0)
            .load_pretrained_model(source)
            .save(name, description=about, recipe=recipe)
        )

    def _load_adapter(self, adapter: dict[str, Any], path: Path, merge: bool) -> None:
        """Rebuild an adapter artifact: its base's encoder, the adapter and head on it, merged if asked."""
        from lepton_ai.store import local_path

        base = local_path(adapter["base"])
        self.arch, self.net = "hf", TextClassifier(base / "encoder", self.num_classes, pretrained=False)
        weights = unpack_int8(load_file(str(base / _WEIGHTS_FILE)))
        self.net.load_state_dict({k: v for k, v in weights.items() if k.startswith("encoder.")}, strict=False)
        self.add_lora({k: adapter.get(k) for k in ("r", "alpha", "dropout", "targets")})
        self.source = self.base = adapter["base"]
        state = load_file(str(path / _ADAPTER_FILE))
        lora.load_adapter_state(
            self.net.encoder, {k[len("encoder.") :]: v for k, v in state.items() if k.startswith("encoder.")}
        )
        assert self.net.head is not None
        self.net.head.load_state_dict(
            {k[len("head.") :]: v for k, v in state.items() if k.startswith("head.")}
        )
        if merge:
            self.merge_lora()

    # -- running -------------------------------------------------------------------------

    def forward(self, x: Any) -> torch.Tensor:
        if self.net is None:
            raise InvalidInputError(
                "no backbone yet: call load_pretrained_model('mlp' | 'cnn-small' | 'resnet18' | "
                "'minilm' | path) first"
            )
        if isinstance(x, (list, tuple)) and x and isinstance(x[0], str):
            x = self.tokenize(x, next(self.parameters()).device)
        return self.net(x)

    @torch.no_grad()
    def logits(self, inputs: Any, batch_size: int = 256) -> torch.Tensor:
        """Return the raw outputs of inputs or a data set: logits, or an embedding model's vectors."""
        self.eval()
        device = next(self.parameters()).device
        out = [self(x).float().cpu() for x in batches(self, as_inputs(self, inputs), batch_size, device)]
        return torch.cat(out) if out else torch.empty(0, self.num_classes)

    def predict_proba(self, inputs: Any, batch_size: int = 256) -> torch.Tensor:
        """Return class probabilities (N, num_classes) for a batch of inputs or a data set."""
        if self.is_embedding:
            raise InvalidInputError("an embedding model has no classes: use embed()")
        return torch.softmax(self.logits(inputs, batch_size), -1)

    def embed(self, inputs: Any, batch_size: int = 64) -> torch.Tensor:
        """Return L2-normalised embeddings (N, dim) of an embedding model (num_classes=0): a sentence
        encoder's, or a backbone's pretrained without labels."""
        if not self.is_embedding:
            raise InvalidInputError(
                "embed() is for embedding models (LeptonModel(num_classes=0)); use predict()"
            )
        return torch.nn.functional.normalize(self.logits(inputs, batch_size), dim=-1)

    def predict(self, inputs: Any, batch_size: int = 256) -> torch.Tensor:
        """Return the predicted class id of each input."""
        return self.predict_proba(inputs, batch_size).argmax(-1)

    def fit(
        self,
        train_data: Any,
        val_data: Any = None,
        *,
        head_only: bool = False,
        lora: LoraSpec | str | dict[str, Any] | None = None,
        **options: Any,
    ) -> dict[str, Any]:
        """Train on `train_data` (see `lepton_ai.train.fit` for options); return the history, whose "method"
        says what trained: "full", "lora" (`lora="r=8"` puts an adapter on first) or "head-only" (the head
        alone, on the frozen encoder's features, computed once per data set)."""
        if head_only and (lora is not None or self.lora is not None):
            raise InvalidInputError("--head-only and --lora are two ways to train less: choose one")
        if head_only:
            return self._fit_head(train_data, val_data, **options)
        if lora is not None and self.lora is None:
            self.add_lora(lora)
        history = fit(self, train_data, val_data, **options)
        self.updates, self.tuned = self.updates + 1, self.tuned or self.lora is None
        return {**history, "method": "lora" if self.lora is not None else "full"}

    def _fit_head(self, train_data: Any, val_data: Any, **options: Any) -> dict[str, Any]:
        head = getattr(self.net, "head", None)
        if self.source is None or not isinstance(head, nn.Linear):
            raise InvalidInputError(
                "--head-only trains the head on a pretrained encoder's features, and "
                f"{self.arch or 'this model'} has no pretrained backbone: drop --head-only, or start from "
                "minilm, a Hugging Face directory or a backbone of `lepton pretrain` (--init NAME)"
            )
        device, t0 = resolve_device(options.get("device", "auto")), time.perf_counter()
        train_features = self.features(train_data, device)
        val_features = self.features(val_data, device) if val_data is not None else None
        features_seconds = time.perf_counter() - t0
        history = fit_head(head, train_features, val_features, **options)
        self.to("cpu").eval()
        return {**history, "method": "head-only", "features_seconds": features_seconds}

    @torch.no_grad()
    def features(self, data: LabeledData, device: torch.device | str = "cpu") -> LabeledData:
        """Return `data` as the frozen encoder's features (what the head reads), computed once per set."""
        check_data(self, data)
        # features of an encoder trained since are stale
        key = ("features", self.preprocess.get("max_length"), self.updates)
        cached = data.cache.setdefault(self, {})
        if key not in cached:
            self.to(device).eval()
            out = encoder_features(cast(nn.Module, self.net), as_inputs(self, data), device)
            cached[key] = LabeledData(
                "tabular", data.labels, data.classes, out, name=data.name + "[features]"
            )
        return cast(LabeledData, cached[key])

    def evaluate(self, data: Any, batch_size: int = 256) -> dict[str, float]:
        """Return {"accuracy", "loss", "f1_macro"} on labelled `data`."""
        return evaluate(self, data, batch_size=batch_size)

    # -- persistence ---------------------------------------------------------------------

    def save_dir(self, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
        """Write the model (safetensors weights, metadata plus `extra`, tokenizer) into directory `path`; with
        a LoRA adapter, the adapter and head alone, naming their base's registered version."""
        if self.net is None:
            raise InvalidInputError("nothing to save: the model has no backbone yet")
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        meta = {**self.metadata(), **(extra or {})}
        if self.lora is not None and isinstance(self.net, TextClassifier) and self.net.head is not None:
            self.base = self._base_version()
            meta["adapter"] = {**self.lora.to_dict(), "method": "lora", "base": self.base}
            (path / _META_FILE).write_text(json.dumps(meta, indent=2))
            state = {f"encoder.{k}": v for k, v in lora.adapter_state(self.net.encoder).items()}
            state.update(
                {f"head.{k}": v.detach().cpu().contiguous() for k, v in self.net.head.state_dict().items()}
            )
            save_file(state, str(path / _ADAPTER_FILE), metadata={"lepton": json.dumps(meta)})
            return path
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
            if self.base is not None and self.lora is not None:
                register.setdefault("parent", self.base)
            return Registry().register(name, folder, metrics=metrics, format=FORMAT, **register).ref

    @classmethod
    def load(cls, ref: str | Path, merge: bool = True) -> LeptonModel:
        """Return the model saved at a registry reference or a saved-model directory (a LoRA adapter folded
        into its base, unless `merge=False`)."""
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
        model._from_meta(meta, path, merge)
        return model.eval()

    def extra_repr(self) -> str:
        return f"arch={self.arch}, num_classes={self.num_classes}, input_size={self.input_size}"
