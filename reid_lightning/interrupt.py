"""Cooperative interruption of long phases: SIGTERM and SIGINT stop a loop at its next safe point.

A long loop (feature extraction, pair matching, an embedding pass) runs inside :func:`interruptible` and calls
:func:`check` between its batches, where nothing is half-written. While a phase is active in the main thread,
SIGTERM and SIGINT are recorded and handed on to the handler that was there before (so Lightning still sees its
SIGTERM and sets ``trainer.received_sigterm``); the next :func:`check`, or the end of the phase, raises
:class:`Interrupted`, a ``KeyboardInterrupt`` that names the phase and the signal (Lightning treats it as a
Ctrl-C: graceful shutdown, exit code 1). A second signal before that safe point stops at once.

Phases nest, and their names make the progress-bar labels, e.g. ``calibration (validation): ALIKED features``::

    with interruptible("calibration (validation)"):
        scores = reranker.pair_scores(results, query_dataset, gallery_dataset)  # its loops check()

No Lightning needed. Outside the main thread a phase only names the progress bars: no handler is installed and
:func:`check` never raises. A signal the process ignores (``SIG_IGN``, e.g. SIGINT of a background job) stays
ignored.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

__all__ = ["Interrupted", "check", "current_phase", "interruptible", "label"]

SIGNALS = (signal.SIGTERM, signal.SIGINT)

log = logging.getLogger(__name__)


class Interrupted(KeyboardInterrupt):
    """A phase stopped by a signal at a safe point (or at once, on a second signal).

    Attributes:
        phase: the phase's label when it stopped, e.g. ``"test: LightGlue pairs"`` (empty outside any phase).
        signal: the signal, e.g. ``signal.SIGTERM``.
    """

    def __init__(self, phase: str, signum: int, immediately: bool = False) -> None:
        self.phase = phase
        self.signal = signal.Signals(signum)
        where = f" during {phase}" if phase else ""
        how = "stopped at once (second signal)" if immediately else "stopped at a safe point"
        self.immediately = immediately
        super().__init__(f"{self.signal.name} received: {how}{where}")

    def __reduce__(self):
        return type(self), (self.phase, int(self.signal), self.immediately)


@dataclass
class _Phase:
    name: str
    installed: dict[int, _Handler] = field(default_factory=dict)
    sigterm_received: Callable[[], bool] | None = None


class _Phases(threading.local):
    def __init__(self) -> None:
        self.stack: list[_Phase] = []


_phases = _Phases()
_received: int | None = None  # the signal recorded by a handler and not raised yet (main thread only)
_handling = False  # a handler of this module is running: one delivery that passes through several is one signal


def _is_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


class _Handler:
    """Records the signal for :func:`check`, then hands it on to the handler it replaced."""

    def __init__(self, previous: Callable | int) -> None:
        self.previous = previous
        self.pid = os.getpid()
        self.active = True

    def _hand_on(self, signum: int, frame) -> None:
        if callable(self.previous) and self.previous is not signal.default_int_handler:
            self.previous(signum, frame)  # e.g. Lightning's: logs it and sets trainer.received_sigterm

    def __call__(self, signum: int, frame) -> None:
        global _handling, _received
        if os.getpid() != self.pid or not self.active:  # a forked child (DataLoader worker), or a stale reference
            self._act_as_before(signum, frame)
            return
        if _handling:
            self._hand_on(signum, frame)
            return
        _handling = True
        try:
            again = _received is not None
            if not again:
                _received = signum
            # Python's own SIGINT handler raises KeyboardInterrupt wherever the program is and SIG_DFL kills it:
            # both are replaced by the Interrupted that check() raises; any other handler is called
            self._hand_on(signum, frame)
        finally:
            _handling = False
        if again:
            _received = None
            _raise(label(), signum, immediately=True)

    def _act_as_before(self, signum: int, frame) -> None:
        """What the replaced handler would have done."""
        if callable(self.previous):
            self.previous(signum, frame)
        elif self.previous == signal.SIG_DFL:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)


def label(description: str | None = None) -> str:
    """``description`` after the names of the active phases of this thread, e.g. ``test: LightGlue pairs``."""
    names = [phase.name for phase in _phases.stack if phase.name]
    if description:
        names.append(description)
    return ": ".join(names)


def shows_progress(trainer) -> bool:
    """Whether this process draws progress bars: the reporting process (rank 0) of a trainer whose progress bar is
    on (``--trainer.enable_progress_bar false`` silences the project's own bars too)."""
    return trainer.is_global_zero and trainer.progress_bar_callback is not None


def current_phase() -> str | None:
    """The label of the active phases of this thread (outermost first), or None outside any phase."""
    return label() if _phases.stack else None


def _install(phase: _Phase, signals: tuple[int, ...]) -> None:
    for signum in signals:
        current = signal.getsignal(signum)
        if isinstance(current, _Handler) or current in (signal.SIG_IGN, None):
            continue  # already recorded by an outer phase; deliberately ignored; or set outside Python
        handler = _Handler(current)
        signal.signal(signum, handler)
        phase.installed[signum] = handler


def _restore(phase: _Phase) -> None:
    for signum, handler in reversed(phase.installed.items()):
        handler.active = False
        signal.signal(signum, handler.previous)


def _handlers_installed() -> bool:
    return any(phase.installed for phase in _phases.stack)


@contextlib.contextmanager
def interruptible(name: str, *, sigterm_received: Callable[[], bool] | None = None,
                  signals: tuple[int, ...] = SIGNALS) -> Iterator[str]:
    """A phase in which SIGTERM/SIGINT stop the work at the next :func:`check` (or at the phase's end).

    Args:
        name: the phase, as progress bars show it, e.g. ``"calibration (validation)"`` or ``"ALIKED features"``.
        sigterm_received: optional; True when a SIGTERM reached another handler before this phase installed its
            own (e.g. ``lambda: trainer.received_sigterm``): :func:`check` then raises as if this phase had
            recorded it.
        signals: the signals handled.

    Yields the phase's label: the names of the enclosing phases and ``name``, joined by ``": "``. In the main
    thread the handlers are installed (unless an enclosing phase's already are) and the previous ones restored on
    exit; a signal recorded and not raised by the end of the phase raises there.
    """
    global _received
    phase = _Phase(name, sigterm_received=sigterm_received)
    main = _is_main_thread()
    if main:
        _install(phase, signals)
    _phases.stack.append(phase)
    late = None
    try:
        yield label()
        check()  # the end of a phase is a safe point too: a signal recorded after its last check stops here
    finally:
        title = label()
        _phases.stack.pop()
        if main:
            _restore(phase)
            if not _handlers_installed():
                # a signal recorded after the check above is raised below; on an exception it is dropped: the
                # phase is being left anyway
                late, _received = _received, None
    if late is not None:  # only after a normal exit
        _raise(title, late)


def check() -> None:
    """Raise :class:`Interrupted` if a signal was received during the active phases (main thread only).

    Call it only where stopping leaves everything consistent: between batches, never inside a cache write."""
    global _received
    if not _is_main_thread() or not _phases.stack:
        return
    signum = _received
    if signum is None and any(p.sigterm_received is not None and p.sigterm_received() for p in _phases.stack):
        signum = signal.SIGTERM
        for phase in _phases.stack:  # raised once, like a signal recorded here
            phase.sigterm_received = None
    if signum is None:
        return
    _received = None
    _raise(label(), signum)


def _raise(phase: str, signum: int, immediately: bool = False) -> None:
    error = Interrupted(phase, signum, immediately)
    log.warning(str(error))
    raise error
