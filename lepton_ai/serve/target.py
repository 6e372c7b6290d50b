"""What a serving process serves: the Photon a target names (`path.py:Class`, `package.module:Class`, or a
registered model), and the garbage-collector settings every serving process uses. The HTTP server and the
model process both load their Photon here."""

from __future__ import annotations

import gc
import importlib
import importlib.util
import os
import sys
import traceback
from pathlib import Path
from types import ModuleType

from lepton_ai.errors import InvalidInputError, LeptonError, NotFoundError, one_line
from lepton_ai.serve.photon import Photon


def is_class_target(target: str) -> bool:
    """Return whether `target` names a class (`path.py:Class`, `pkg.module:Class`), not a model
    (`NAME:VERSION`)."""
    module, sep, name = target.rpartition(":")
    if not sep or not name.isidentifier() or name == "latest":
        return False
    return module.endswith(".py") or all(p.isidentifier() for p in module.split("."))


def load_photon(target: str, device: str = "cpu", threads: int | None = None) -> Photon:
    """Return the Photon for `target`: `path.py:Class`, `package.module:Class`, or a model (registry
    reference or saved dir)."""
    if not is_class_target(target):
        from lepton_ai.serve.model import model_photon

        return model_photon(target, device, threads)
    module_name, _, class_name = target.rpartition(":")
    try:
        module = _import(module_name)
    except LeptonError:
        raise
    except Exception as e:
        raise _import_error(target, e) from e
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Photon)):
        raise InvalidInputError(f"{target}: {class_name} is not a Photon subclass in {module_name}")
    if threads:
        _limit_threads(threads)
    return cls()


def _import(module_name: str) -> ModuleType:
    """Import `package.module`, or the file `path.py` under a name of its own."""
    if not module_name.endswith(".py"):
        if os.getcwd() not in sys.path and "" not in sys.path:
            # the current directory's modules, as `python -m` and uvicorn find them
            sys.path.insert(0, os.getcwd())
        return importlib.import_module(module_name)
    path = Path(module_name).resolve()
    if not path.is_file():
        raise NotFoundError(f"no file {module_name}")
    # not path.stem: a file named like a real module must not shadow it
    name = f"lepton_photon_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = sys.modules[name] = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _import_error(target: str, e: Exception) -> LeptonError:
    """Return a one-line error for code that raised while it was imported, with the line that raised it."""
    frames: list[tuple[str | None, int | None]] = [
        (f.filename, f.lineno)
        for f in traceback.extract_tb(e.__traceback__)
        if f.filename not in (__file__, importlib.__file__) and not f.filename.startswith("<frozen")
    ]
    # raised where the code was compiled, not by a line of it
    if isinstance(e, SyntaxError):
        frames.insert(0, (e.filename, e.lineno))
    where = ""
    if frames:
        file, line = frames[0]
        where = f" ({file}, line {line})"
    message = e.msg if isinstance(e, SyntaxError) else one_line(e)
    return LeptonError(f"cannot import {target}: {type(e).__name__}: {message}{where}")


def _limit_threads(threads: int) -> None:
    """Cap PyTorch's compute threads so that several workers do not fight over the cores."""
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(threads)


def serving_gc() -> None:
    """Set this process's garbage collector for serving; call `gc.freeze()` once the model is loaded.

    It runs less often: with hundreds of requests in flight each request's objects live long enough to be
    promoted, and at the default thresholds (700, 10, 10) collection took a large share of the event loop's
    CPU per request; garbage is still collected, in rarer sweeps. Frozen after `init`, everything loaded
    so far (libraries, the model: hundreds of thousands of objects) is out of its sight: they live as long
    as the process, and a full collection that walked them all stalled every request in flight. The
    figures are in benchmarks/RESULTS.md (serving: the garbage collector)."""
    gc.set_threshold(10_000, 20, 20)
