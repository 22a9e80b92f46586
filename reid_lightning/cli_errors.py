"""Short, actionable messages for the usual command-line mistakes: the cause in one line (the option, the config
file and line), a close match when there is one, and no 120-line usage dump or deep traceback."""

from __future__ import annotations

import contextlib
import difflib
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import yaml
from lightning.pytorch.cli import LightningArgumentParser

from .features.weights import WeightsNotFoundError

EXIT_USAGE = 2


class ConfigurationError(ValueError):
    """Settings that contradict each other or a checkpoint; the message says which and what to do."""


class ReIDArgumentParser(LightningArgumentParser):
    """LightningCLI's parser whose errors name the cause and a fix in a line or two (see :func:`explain`)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.command_line: list[str] = []
        """The arguments being parsed (set by ``ReIDCLI``), to tell a command-line typo from a config file's."""

    def option_names(self) -> list[str]:
        """Every ``--option`` this parser accepts (for close-match suggestions)."""
        return [option for action in self._actions for option in action.option_strings if option.startswith("--")]

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error:  # jsonargparse probing alternatives: it catches this
            super().error(message, ex)
        parser = getattr(ex, "subcommand_parser", None) or self
        prog = parser.prog.replace(" [options]", "")
        sys.stderr.write(f"{prog}: error: {explain(message, parser, self.command_line)}\n"
                         f"({prog} --help lists every option)\n")
        sys.exit(EXIT_USAGE)


def _config_files(argv: list[str]) -> list[Path]:
    return [Path(argv[i + 1]) for i, arg in enumerate(argv[:-1]) if arg in ("--config", "-c")]


def _has_key(data, dotted: str) -> bool:
    for part in dotted.split("."):
        if not isinstance(data, dict) or part not in data:
            return False
        data = data[part]
    return True


def where_given(key: str, argv: list[str]) -> str | None:
    """Where the dotted option ``key`` was set: ``"the command line"``, a config file's name, or None (a default)."""
    if any(arg.lstrip("-").split("=")[0] == key for arg in argv):
        return "the command line"
    files = [str(path) for path in _config_files(argv)
             if path.is_file() and _has_key(yaml.safe_load(path.read_text()) or {}, key)]
    return files[-1] if files else None


def explain(message: str, parser, argv: list[str]) -> str:
    """The cause of a parser error in words a user acts on: which option or config file, and a close match."""
    unknown = (re.search(r"does not accept option '([^']+)'", message)
               or re.search(r"ambiguous option: (--\S+)", message)
               or re.search(r"nrecognized arguments: (--\S+)", message))
    if unknown:
        key = unknown.group(1).lstrip("-").split("=")[0]
        where = where_given(key, argv) or "a config file"
        close = difflib.get_close_matches(f"--{key}", parser.option_names(), n=3, cutoff=0.75)
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        return f"unknown option '{key}' {'on' if where == 'the command line' else 'in'} {where}{hint}"
    choice = re.search(r"invalid choice: '([^']+)' \(choose from (.*)\)", message)
    if choice:
        choices = re.findall(r"'([^']+)'", choice.group(2))
        close = difflib.get_close_matches(choice.group(1), choices, n=1)
        return (f"unknown subcommand '{choice.group(1)}'; "
                + (f"did you mean '{close[0]}'?" if close else f"choose one of {', '.join(choices)}"))
    if "Problems parsing config" in message:
        for path in _config_files(argv):
            try:
                yaml.safe_load(path.read_text())
            except yaml.YAMLError as error:
                mark = getattr(error, "problem_mark", None)
                line = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
                return f"config file {path}{line} is not valid YAML: {getattr(error, 'problem', error)}"
            except OSError as error:
                return f"config file {path} cannot be read: {error}"
    lines = [line.strip() for line in message.strip().splitlines()]
    return " ".join(lines[:2]) + (" ..." if len(lines) > 2 else "")


def _user_error(error: BaseException) -> BaseException | None:
    """A user-facing error somewhere in ``error``'s chain (wrapped e.g. by jsonargparse), or None."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, (WeightsNotFoundError, ConfigurationError)):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


@contextlib.contextmanager
def friendly_errors() -> Iterator[None]:
    """Missing weights and contradictory settings printed as their message alone (exit code 2), instead of a
    traceback through the CLI's internals (parser errors: :class:`ReIDArgumentParser`)."""
    try:
        yield
    except Exception as error:
        cause = _user_error(error)
        if cause is None:
            raise
        sys.stderr.write(f"error: {cause}\n")
        sys.exit(EXIT_USAGE)
