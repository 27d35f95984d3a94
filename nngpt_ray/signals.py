"""Ctrl-C and SIGTERM (what `ray job stop`, Kubernetes and batch schedulers send) stop a command the same way:
by raising KeyboardInterrupt where the main thread is.

An exception raised by a signal handler can land where Python swallows it: in a destructor or a weakref
callback run by the garbage collector, which prints "Exception ignored in ..." and carries on. A stop request
is therefore also remembered, and the run checks it at its next step (`check()`), so a request that
arrived at an unlucky moment still stops the run instead of being lost. Such a swallowed interrupt is not
printed either (it is the request, not an error); any other unraisable exception still is."""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Iterator

_requested = False


def interrupt(signum, frame) -> None:
    """The handler for SIGINT and SIGTERM."""
    global _requested
    _requested = True
    raise KeyboardInterrupt


def install() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, interrupt)
    sys.unraisablehook = _unraisable


@contextlib.contextmanager
def installed() -> Iterator[None]:
    """The handlers for the length of a block (a run), then the ones found before it, put back. A request
    made during the block was its to handle: it is not left pending for a later block in the same process
    (a second run from the Python API)."""
    global _requested
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}, sys.unraisablehook
    install()
    try:
        yield
    finally:
        for sig, handler in previous[0].items():
            signal.signal(sig, handler)
        sys.unraisablehook = previous[1]
        _requested = False


def _unraisable(info) -> None:
    if issubclass(info.exc_type, KeyboardInterrupt) and _requested:
        return
    sys.__unraisablehook__(info)


def requested() -> bool:
    return _requested


def check() -> None:
    """Raise KeyboardInterrupt if a stop was requested, even if the exception it raised was swallowed."""
    if _requested:
        raise KeyboardInterrupt
