"""`lepton quickstart`: the end-to-end main job, run by `make run`.

Today it checks the machine and makes a round trip through the registry; each
capability that lands extends it (train → optimize → serve → load-test → report)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import typer

from lepton_ai.cli.doctor import doctor
from lepton_ai.cli.output import console, human_bytes, print_fields


def quickstart(name: str = typer.Option("quickstart-demo", help="Registry name for the demo model.")) -> None:
    """Run the main job end to end on the embedded defaults."""
    import torch
    from safetensors.torch import load_file, save_file

    from lepton_ai.store import Registry

    console.rule("[bold]1. this machine")
    doctor(json=False)

    console.rule("[bold]2. registry round trip")
    t0 = time.perf_counter()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    weights = {k: v.contiguous() for k, v in model.state_dict().items()}
    registry = Registry()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.safetensors"
        save_file(weights, str(path))
        params = sum(v.numel() for v in weights.values())
        info = registry.register(name, path, metrics={"parameters": params},
                                 description="quickstart: a tiny MLP to prove the registry round trip")
    loaded = load_file(str(registry.fetch(info.ref)))  # sha256 checked on the way out
    same = all(torch.equal(loaded[k], v) for k, v in weights.items())
    if not same:
        raise RuntimeError("weights read back from the registry differ from those written")
    print_fields(f"registered {info.ref}", {"uri": info.uri, "sha256": info.sha256,
                                            "size": human_bytes(info.size_bytes), "metrics": info.metrics})
    console.print(f"[green]✓[/] stored, verified and reloaded {params} parameters "
                  f"in {time.perf_counter() - t0:.2f} s")
    console.rule("[bold]next")
    console.print(f"  lepton models list\n  lepton models show {info.ref} --json\n  lepton runs list")
