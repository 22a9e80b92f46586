"""Every ``train.py`` and ``python -m reid_lightning.export`` command in the README and the docs parses: a renamed
argument breaks this test, not a user's first hour. Each command runs in-process with ``--print_config`` (parsing
only: nothing is trained, no data or checkpoint is read); config paths are taken from the repository."""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
ENTRY_POINTS = ("train.py", "reid_lightning.export")


def shell_lines(markdown: str) -> list[str]:
    """The command lines of the fenced ``bash`` blocks, continuation lines joined, comments dropped."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", markdown, flags=re.DOTALL):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.split("\n"):
            line = line.split(" #")[0].strip()
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


def documented_commands() -> list[tuple[str, list[str]]]:
    """``(where, [entry point, arguments...])`` of every documented command."""
    found = []
    for document in DOCUMENTS:
        for line in shell_lines(document.read_text()):
            tokens = shlex.split(line)
            for position, token in enumerate(tokens):
                if token.endswith(ENTRY_POINTS):
                    found.append((f"{document.relative_to(REPO)}: {line[:90]}", tokens[position:]))
                    break
    return found


def in_repository(arguments: list[str]) -> list[str]:
    """Config files named relative to the repository, made absolute (the test runs in a temporary folder)."""
    return [str(REPO / argument) if argument.startswith("configs/") else argument for argument in arguments]


def parse(command: list[str], monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    """Exit code and stderr of parsing ``command`` with ``--print_config``."""
    entry, arguments = command[0], in_repository(command[1:])
    monkeypatch.setattr("sys.argv", [entry])  # the arguments are given to main, not read from pytest's command line
    if entry.endswith("train.py"):
        from reid_lightning.cli import main
    else:
        from reid_lightning.export import main
    errors = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(errors):
        try:
            main([*arguments, "--print_config"])
        except SystemExit as stop:
            return int(stop.code or 0), errors.getvalue()
    return 0, errors.getvalue()


COMMANDS = documented_commands()


def test_the_documents_hold_the_commands_a_user_runs():
    entry_points = [command[0] for _, command in COMMANDS]
    assert sum(entry.endswith("train.py") for entry in entry_points) >= 20
    assert any(entry.endswith("reid_lightning.export") for entry in entry_points)
    subcommands = {command[1] for _, command in COMMANDS if command[0].endswith("train.py")}
    assert {"fit", "test", "predict"} <= subcommands


@pytest.mark.parametrize("where,command", COMMANDS, ids=[where for where, _ in COMMANDS])
def test_documented_command_parses(where, command, monkeypatch):
    code, errors = parse(command, monkeypatch)
    assert code == 0, f"{where}\n{errors[-2000:]}"


def test_a_renamed_argument_is_caught(monkeypatch):
    _, command = next(c for c in COMMANDS if "--data.val_unseen_ratio" in c[1])
    renamed = [argument.replace("--data.val_unseen_ratio", "--data.val_unseen_fraction") for argument in command]
    code, errors = parse(renamed, monkeypatch)
    assert code == 2 and "data.val_unseen_fraction" in errors
