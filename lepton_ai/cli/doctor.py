"""`lepton doctor`: what this machine has and where Lepton keeps its state."""

from __future__ import annotations

import importlib.util
from typing import Annotated, Any

import typer

from lepton_ai import config
from lepton_ai.cli.output import console, human_bytes, print_json, print_table
from lepton_ai.machine import machine_info
from lepton_ai.version import __version__

# extra -> the module that proves it is installed
EXTRAS = {
    "postgres": "psycopg",
    "s3": "s3fs",
    "onnx": "onnxruntime",
    "hf": "transformers",
    "lora": "peft",
    "serve": "fastapi",
    "ray": "ray",
    "k8s": "kubernetes",
    "fl": "flwr",
    "dp": "opacus",
    "explain": "captum",
    "plots": "matplotlib",
}


def doctor_report() -> dict[str, Any]:
    """Return the doctor's findings as a JSON-ready dict."""
    from lepton_ai.store import db

    url = db.normalize_url(config.db_url())
    registry: dict[str, Any] = {
        "db_url": db.safe_url(url),
        "artifacts": config.artifacts_url(),
        "home": str(config.home()),
    }
    try:
        from lepton_ai.store import Registry

        reg = Registry()
        registry.update(ok=True, schema=db.current_revision(reg.engine), models=len(reg.list_models()))
    except Exception as e:
        # the doctor reports a broken registry instead of dying on it
        registry.update(ok=False, error=f"{type(e).__name__}: {e}")
    return {
        "lepton": __version__,
        "machine": machine_info(),
        "extras": {name: importlib.util.find_spec(module) is not None for name, module in EXTRAS.items()},
        "registry": registry,
    }


def doctor(json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False) -> None:
    """Check Python, torch, CPU features, GPUs, optional extras and the registry."""
    report = doctor_report()
    if json:
        print_json(report)
        return
    m, cpu, reg = report["machine"], report["machine"]["cpu"], report["registry"]
    gpus = "; ".join(
        f"{g['name']} ({human_bytes(g['memory_bytes'])}, sm {g['capability']})" for g in m["gpus"]
    )
    print_table(
        f"lepton {report['lepton']} doctor",
        ("check", "value"),
        [
            ("python", m["python"]),
            ("torch", f"{m['torch']} ({m['torch_threads']} threads)" if m["torch"] else "[red]missing[/]"),
            (
                "cpu",
                f"{cpu['model']} · {cpu['arch']} · {cpu['cores']} cores · "
                f"{human_bytes(cpu['memory_bytes'])} RAM",
            ),
            ("cpu flags", " ".join(cpu["flags"]) or "none of note"),
            ("gpu", gpus or "none (CPU only)"),
            (
                "extras",
                " ".join(f"[green]✓{k}[/]" if ok else f"[dim]✗{k}[/]" for k, ok in report["extras"].items()),
            ),
            (
                "registry",
                reg["db_url"]
                + (
                    f" · schema {reg['schema']} · {reg['models']} models"
                    if reg["ok"]
                    else f" · [red]{reg['error']}[/]"
                ),
            ),
            ("artifacts", reg["artifacts"]),
        ],
    )
    if not reg["ok"]:
        console.print("[red]the registry is not usable: check LEPTON_DB_URL / LEPTON_HOME[/]")
        raise typer.Exit(1)
