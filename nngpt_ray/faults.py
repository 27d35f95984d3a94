"""Fault injection at named points of a candidate's life, for tests (off unless NNGPT_FAULTS is set).

    NNGPT_FAULTS="controller.trainer_returned=kill@2,learner.trained=raise@1"

Each rule is `point=action[@n]`: on the n-th pass of `point` (default: the first), do `action`. Passes
are counted per process, or across all processes of the run (restarted actors included) when
NNGPT_FAULTS_STATE names a directory:

- `raise`: raise `InjectedFault` (an ordinary exception, as a bug would);
- `kill`: SIGKILL this process;
- `kill-driver`: SIGKILL the run's driver (NNGPT_DRIVER_PID), then wait to be killed with it, so nothing
  after the point runs (an actor's way of dying at the same moment as its driver).

The launcher forwards these variables to the actors it starts (and sets NNGPT_DRIVER_PID). Points are plain names in the code
(`faults.point("trainer.completed")`), listed in POINTS so tests cannot name one that does not exist.
"""

from __future__ import annotations

import fcntl
import os
import signal
import time
from collections import Counter
from pathlib import Path

ENV, DRIVER_ENV, STATE_ENV = "NNGPT_FAULTS", "NNGPT_DRIVER_PID", "NNGPT_FAULTS_STATE"
POINTS = frozenset({
    "controller.admitted",  # a new candidate is recorded as queued, no trainer has it yet
    "trainer.train",  # a trainer task starts (before its attempt is opened)
    "trainer.attempt_started",  # the trainer opened its attempt
    "trainer.epoch_recorded",  # an epoch is in the store, the candidate is still training
    "trainer.completed",  # the completion transaction committed, the trainer has not returned yet
    "controller.trainer_returned",  # the trainer returned, the controller has not recorded it yet
    "controller.recorded",  # the controller recorded the result in the loop
    "controller.advanced",  # a cycle boundary was recorded
    "learner.loaded",  # the learner loaded its base model (the end of its start-up)
    "learner.trained",  # an update's adapter is written, not yet published under its version
})


class InjectedFault(RuntimeError):
    pass


_passes: Counter[str] = Counter()


def rules() -> dict[str, dict[int, str]]:
    """point -> {pass number: action}, from NNGPT_FAULTS."""
    out: dict[str, dict[int, str]] = {}
    for item in filter(None, (s.strip() for s in os.environ.get(ENV, "").split(","))):
        name, _, action = item.partition("=")
        action, _, nth = action.partition("@")
        if name not in POINTS or action not in ("raise", "kill", "kill-driver"):
            raise ValueError(f"{ENV}: cannot read {item!r} (points: {', '.join(sorted(POINTS))})")
        out.setdefault(name, {})[int(nth or 1)] = action
    return out


def point(name: str) -> None:
    """Pass a named point; does nothing unless NNGPT_FAULTS names it."""
    if ENV not in os.environ:
        return
    actions = rules().get(name)
    if not actions:
        return
    action = actions.get(_count(name))
    if action is None:
        return
    if action == "raise":
        raise InjectedFault(f"injected fault at {name}")
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    os.kill(int(os.environ[DRIVER_ENV]), signal.SIGKILL)
    while True:  # the driver is gone; Ray kills this actor with it
        time.sleep(1)


def _count(name: str) -> int:
    """This pass's number: in this process, or across processes through a locked file."""
    state = os.environ.get(STATE_ENV)
    if not state:
        _passes[name] += 1
        return _passes[name]
    path = Path(state) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        count = len(f.read()) + 1
        f.write("x")
    return count


def forwarded() -> dict[str, str]:
    """The variables the launcher passes on to actors (empty unless faults are configured)."""
    if ENV not in os.environ:
        return {}
    return {k: os.environ[k] for k in (ENV, STATE_ENV) if k in os.environ} | {DRIVER_ENV: str(os.getpid())}
