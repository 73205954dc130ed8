"""Every ``python -m soae_core.<cli>`` command recorded in the documentation, the model cards and
scripts/ names a module that still runs as a command and answers ``--help``."""

from __future__ import annotations

import re
import runpy
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RECORDS = [REPO / "README.md", REPO / "REPRODUCTION.md", *sorted((REPO / "assets" / "models").glob("*.json")),
           *sorted((REPO / "scripts").iterdir())]


def recorded_commands() -> list[str]:
    """The module names of every ``python -m soae_core.X`` in the records, in first-seen order."""
    found = re.findall(r"python -m (soae_core(?:\.\w+)+)", "\n".join(p.read_text() for p in RECORDS if p.is_file()))
    return list(dict.fromkeys(found))


def test_the_records_name_the_five_commands():
    assert set(recorded_commands()) == {"soae_core.train", "soae_core.evaluate", "soae_core.model_card",
                                        "soae_core.reproduction_tables", "soae_core.make_samples"}


@pytest.mark.parametrize("module", recorded_commands())
def test_recorded_command_answers_help(module, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [module, "--help"])
    monkeypatch.delitem(sys.modules, module, raising=False)  # run it afresh, as ``python -m`` would
    with pytest.raises(SystemExit) as finished:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    assert finished.value.code == 0
    assert f"python -m {module}" in capsys.readouterr().out  # the usage line names the command
