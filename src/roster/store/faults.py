"""Fault injection at named points, for tests: a crash exactly where crash-only promises must hold.

The points (:data:`POINTS`):

- ``store.before_commit`` - a write transaction has done all its work and is about to commit;
- ``store.after_commit`` - it has committed, and the caller has not been told yet (no return, no
  work listeners called): the acknowledgement is lost;
- ``run.mid_run`` - a run's runner has answered and nothing of its result has been applied.

Unarmed (always, outside tests), a point costs one truth test of an empty dict: the call sites read
``if faults.ARMED: faults.hit(...)``. A test arms one point with :func:`armed` (in-process), or a
process it starts with the environment variable ``ROSTER_FAULTS`` (``point=action[,point=action]``),
read once when this module is imported. Actions: ``raise`` an :class:`InjectedFault` (a
``BaseException``, so that no ``except Exception`` of the code under test mistakes it for a failure
it can handle: it unwinds like a crash), or ``kill`` the process with ``SIGKILL`` (``kill -9`` at that
exact point). Either way a point fires ``times`` times (default once) and then disarms itself.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from roster.errors import UsageError

POINTS: dict[str, str] = {
    "store.before_commit": "a write transaction is about to commit (nothing of it is kept)",
    "store.after_commit": "a write transaction has committed and its caller has not been told",
    "run.mid_run": "a run's runner has answered and nothing of its result is applied yet",
}
"""The named points, each with what has (and has not) happened when it fires."""

ACTIONS = ("raise", "kill")
ENVIRONMENT = "ROSTER_FAULTS"
"""``point=action[,point=action]``: points armed (once each) in a process started with it."""


class InjectedFault(BaseException):  # not an error: nothing under test may handle it
    """Raised at an armed point whose action is ``raise``. ``point`` names it."""

    def __init__(self, point: str) -> None:
        self.point = point
        super().__init__(f"fault injected at {point}: {POINTS[point]}")


@dataclass
class Arming:
    """One armed point: its ``action``, how many more ``times`` it fires, and how often it ``fired``."""

    point: str
    action: str = "raise"
    times: int = 1
    fired: int = 0


ARMED: dict[str, Arming] = {}
"""The armed points by name: empty unless a test armed one (the call sites test it before calling)."""
_lock = threading.Lock()


def arm(point: str, *, action: str = "raise", times: int = 1) -> Arming:
    """Arm ``point`` to fire ``times`` times with ``action`` (``raise`` or ``kill``). Raises
    :class:`~roster.errors.UsageError` for an unknown point or action, naming the known ones."""
    if point not in POINTS:
        raise UsageError(f"no fault point '{point}'; the points are: {', '.join(POINTS)}")
    if action not in ACTIONS:
        raise UsageError(f"no fault action '{action}'; the actions are: {', '.join(ACTIONS)}")
    if times < 1:
        raise UsageError(f"a fault fires at least once, not {times} times")
    arming = Arming(point, action, times)
    with _lock:
        ARMED[point] = arming
    return arming


def disarm(point: str | None = None) -> None:
    """Disarm ``point`` (every point when None)."""
    with _lock:
        if point is None:
            ARMED.clear()
        else:
            ARMED.pop(point, None)


@contextmanager
def armed(point: str, *, action: str = "raise", times: int = 1) -> Iterator[Arming]:
    """Arm ``point`` while the block runs (see :func:`arm`); yields the :class:`Arming`, whose ``fired``
    tells the test whether the point was reached. Disarmed on the way out, fired or not."""
    arming = arm(point, action=action, times=times)
    try:
        yield arming
    finally:
        with _lock:
            if ARMED.get(point) is arming:
                del ARMED[point]


def hit(point: str) -> None:
    """The point ``point`` is reached: fire it if it is armed (raise :class:`InjectedFault`, or SIGKILL
    this process), else nothing."""
    with _lock:
        arming = ARMED.get(point)
        if arming is None:
            return
        arming.fired += 1
        arming.times -= 1
        if arming.times <= 0:
            del ARMED[point]
    if arming.action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    raise InjectedFault(point)


def _from_environment(value: str) -> None:
    for item in filter(None, (part.strip() for part in value.split(","))):
        point, _, action = item.partition("=")
        arm(point.strip(), action=action.strip() or "raise")


if os.environ.get(ENVIRONMENT):
    _from_environment(os.environ[ENVIRONMENT])
