"""SIGTERM and Ctrl-C as a clean stop, raised where the clean-up code expects it.

Schedulers stop a process with SIGTERM (Kubernetes, Slurm, `docker stop`, systemd), people
with Ctrl-C. Both become a KeyboardInterrupt (SIGTERM's is the subclass `Terminated`), so
every `except KeyboardInterrupt` clean-up (the trial FAIL, its run KILLED, the study's run
KILLED) handles both.

A stop raised at an arbitrary instruction would break the records. Inside a database client's
session it leaves the transaction open (MLflow's SQLite store then stays locked for the
clean-up's own writes); between two records it breaks the pairing of an Optuna trial with its
MLflow run: a run created but not yet recorded in its trial, a run ended COMPLETE whose trial
Optuna has not been told of, a dead worker's trial failed but its run not closed. So:

- in a `stops_deferred()` region (the whole of `python -m harness.search`) a stop is held;
- `interruptible` functions, pure computation (training and scoring epochs, loading data),
  raise it at once, and raise a held one on entry;
- `raise_if_stopping()` raises a held one (e.g. as an Optuna callback, between trials), and so
  does leaving a deferred region;
- outside any region (the other commands) a stop is raised at once, as Python does for Ctrl-C.

A signal reaches the main thread only, but `--n-jobs` trials run in threads: a thread inside an
`interruptible` function is sent the stop as an asynchronous exception (CPython's
PyThreadState_SetAsyncExc), which it raises at its next Python instruction (after the torch
operation it is in); any other thread raises it at its next `interruptible` entry or callback.
A second signal while stopping is ignored, so that it cannot cut the clean-up short; SIGKILL
still ends the process at once.
"""

import ctypes
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps

INTERRUPTED = "interrupted"  # the fail reason of a trial or job cut short by Ctrl-C
TERMINATED = "terminated (SIGTERM)"  # ... or by SIGTERM
STOP_REASONS = (INTERRUPTED, TERMINATED)

DEFERRED = "deferred"
INTERRUPTIBLE = "interruptible"


class Terminated(KeyboardInterrupt):
    """The process was sent SIGTERM."""


def stop_reason(stop: KeyboardInterrupt) -> str:
    return TERMINATED if isinstance(stop, Terminated) else INTERRUPTED


STOPS: dict[int, type[KeyboardInterrupt]] = {
    signal.SIGINT: KeyboardInterrupt,
    signal.SIGTERM: Terminated,
}


class _State:
    def __init__(self):
        # reentrant: the handler runs in the main thread, possibly while it holds the lock
        self.lock = threading.RLock()
        self.stop: type[KeyboardInterrupt] | None = None  # the stop asked for, once one was
        self.regions: dict[int, list[str]] = {}  # thread id -> its open regions, innermost last
        self.sent: set[int] = set()  # threads sent the stop as an asynchronous exception


_state = _State()


@contextmanager
def stops_handled() -> Iterator[None]:
    """SIGTERM and Ctrl-C handled as above for the duration of a command."""
    global _state
    _state = _State()
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set handlers (and receives the signals)
        return
    previous = {}
    for signum in STOPS:
        # a signal the parent process told us to ignore (a shell's background job) stays ignored
        if signal.getsignal(signum) in (signal.SIG_DFL, signal.default_int_handler):
            previous[signum] = signal.signal(signum, _on_signal)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _on_signal(signum: int, frame) -> None:
    stop = STOPS[signum]
    me = threading.get_ident()
    with _state.lock:
        if _state.stop is not None:
            return  # already stopping
        _state.stop = stop
        for ident, regions in _state.regions.items():
            if ident != me and regions[-1:] == [INTERRUPTIBLE]:
                _send(ident, stop)
                _state.sent.add(ident)
        held = _state.regions.get(me, [])[-1:] == [DEFERRED]
    if not held:
        raise stop()


def _send(ident: int, stop: type[BaseException] | None) -> None:
    """Raise `stop` in thread `ident` at its next instruction; None cancels a pending one."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(ident), None if stop is None else ctypes.py_object(stop)
    )


def raise_if_stopping(*_callback_args) -> None:
    """Raise the stop a signal asked for, if one did (usable as an Optuna callback)."""
    stop = _state.stop
    if stop is not None:
        raise stop()


@contextmanager
def _region(kind: str) -> Iterator[None]:
    me = threading.get_ident()
    try:
        with _state.lock:
            _state.regions.setdefault(me, []).append(kind)
        if kind == INTERRUPTIBLE:
            raise_if_stopping()
        yield
    finally:
        with _state.lock:
            regions = _state.regions.get(me, [])
            if regions[-1:] == [kind]:
                regions.pop()
            if not regions:
                _state.regions.pop(me, None)
            sent = me in _state.sent
            if sent:
                # not raised yet? then here, inside the region, not wherever the thread is next
                _send(me, None)
                _state.sent.discard(me)
        if sent:
            raise_if_stopping()
    if kind == DEFERRED:
        raise_if_stopping()


def stops_deferred():
    """A region of this thread in which a stop waits for a safe point (see above)."""
    return _region(DEFERRED)


def interruptible(function: Callable) -> Callable:
    """`function` may be stopped at any instruction: it keeps no records."""

    @wraps(function)
    def wrapper(*args, **kwargs):
        with _region(INTERRUPTIBLE):
            return function(*args, **kwargs)

    return wrapper
