"""Short, actionable messages for the usual command-line mistakes."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def friendly_errors(argv: list[str]) -> Iterator[None]:
    yield
