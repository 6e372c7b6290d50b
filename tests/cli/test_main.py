from __future__ import annotations

import subprocess
import sys

import pytest


def test_the_cli_starts_without_importing_torch() -> None:
    # `lepton --help` and `lepton serve`'s HTTP process should not wait for torch to import; the privacy
    # package keeps its names (torch loads when one that needs it is asked for).
    code = (
        "import sys, lepton_ai.cli.main, lepton_ai.privacy.partition; "
        "from lepton_ai.privacy import partition; "
        "print('torch' in sys.modules, callable(partition) and partition.__module__); "
        "from lepton_ai.privacy import DPConfig; print('torch' in sys.modules, DPConfig.__name__)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["False", "lepton_ai.privacy.partition", "True", "DPConfig"]


def test_an_error_line_prints_the_message_as_it_is(capsys: pytest.CaptureFixture[str]) -> None:
    from lepton_ai.cli.main import main

    # rich would read "[/]" as markup (and crash) and ":x:" as an emoji
    with pytest.raises(SystemExit) as exit_:
        main(["models", "show", "a:x:[/]"])
    assert exit_.value.code == 2
    said = "error: invalid version in 'a:x:[/]': expected NAME or NAME:VERSION with VERSION ≥ 1"
    assert capsys.readouterr().err.strip() == said
