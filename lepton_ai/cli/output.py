"""How the CLI speaks: JSON documents on stdout for scripts, rich tables for people."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from lepton_ai.errors import LeptonError

# ':x:' in a path or a message stays ':x:'
console = Console(emoji=False)
err_console = Console(stderr=True, emoji=False)


def print_error(message: object, label: str = "error") -> None:
    """Print one line on stderr: `label:` in colour, then `message` exactly as it is (no markup read in
    it)."""
    colour = "red" if label == "error" else "yellow"
    err_console.print(f"[{colour}]{label}:[/] {escape(str(message))}", highlight=False, soft_wrap=True)


def print_json(doc: Any) -> None:
    """Print one JSON document on stdout (never wrapped or coloured)."""
    sys.stdout.write(json.dumps(doc, indent=2, default=str) + "\n")
    sys.stdout.flush()


def print_table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Print rows as a table with a title."""
    table = Table(title=title, title_justify="left")
    for c in columns:
        table.add_column(c)
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    console.print(table)


def print_fields(title: str, fields: dict[str, Any]) -> None:
    """Print key/value pairs as a two-column table."""
    print_table(
        title,
        ("field", "value"),
        ((k, json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in fields.items()),
    )


def human_bytes(n: int | None) -> str:
    """Return a size such as '4.2 MB'."""
    if n is None:
        return "?"
    size = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"


def run_app(app: typer.Typer, argv: list[str] | None, prog_name: str) -> None:
    """Run the command line `app`; an error a user caused prints one line and exits with code 2."""
    try:
        app(args=argv, prog_name=prog_name)
    except LeptonError as e:
        print_error(e)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("interrupted (a training run resumes with --resume)")
        sys.exit(130)
