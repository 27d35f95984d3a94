"""`nngpt run` on Ray: start-up, the controller's event loop, and a summary however the run ends.

The same code runs on a laptop (a private local Ray started here) and on a cluster (`ray job submit`
sets RAY_ADDRESS). Ctrl-C and SIGTERM (what `ray job stop`, Kubernetes and batch schedulers send) are
the same request: stop now, keep everything recorded, print the summary so far; a second one stops
without waiting for the clean-up. A stage that fails beyond its retries ends the run with one line.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nngpt_ray import signals
from nngpt_ray.config import Config
from nngpt_ray.report import status
from nngpt_ray.rundir import RunDir
from nngpt_ray.store import Store


@dataclass
class Outcome:
    summary: dict[str, Any]
    ended: str  # "done" | "deadline" | "interrupted" | "failed"
    error: str | None = None


def execute(cfg: Config, run: RunDir, *, on_tick=None, console=None) -> Outcome:
    """Run (or resume) the loop to the end of its budget. The summary is also saved as summary.json.
    Raises UserError for bad input (a model that does not load, a missing dataset)."""
    from nngpt_ray.actors.controller import Controller, StageError
    from nngpt_ray.actors.launcher import check_placeable, cluster_address, init_ray, launched

    say = console.print if console is not None else print
    started = time.monotonic()
    ended, error, controller = "interrupted", None, None
    with signals.installed():  # Ctrl-C and SIGTERM raise KeyboardInterrupt while the run starts and ends
        try:
            cfg.preflight()
            cfg = with_embedded_model(cfg, run.root, say)
            started = time.monotonic()  # the deadline counts from here: the model build is a one-time step
            run.prepare_store(cfg)
            address = cluster_address(cfg)
            say(f"joining Ray at {address} ..." if address else "starting Ray ...")
            init_ray(cfg)
            signals.install()  # ray.init installed its own
            check_placeable(cfg, say=say)
            signals.check()
            with launched(cfg, run) as handles:

                async def drive() -> str:
                    nonlocal controller
                    controller = Controller(cfg, run, handles)
                    _interrupt_on_signals(controller)
                    signals.check()  # a request whose KeyboardInterrupt was swallowed while the actors started
                    deadline = None if cfg.loop.max_minutes is None else \
                        cfg.loop.max_minutes * 60 - (time.monotonic() - started)
                    return await controller.run(deadline_s=deadline, on_tick=on_tick)

                ended = asyncio.run(drive())
        except KeyboardInterrupt:
            ended = "interrupted"
        except StageError as err:
            ended, error = "failed", str(err)
    summary = summarize(run, controller, ended, time.monotonic() - started)
    if cfg.corpus.path and run.store.exists():
        from nngpt_ray.corpus import add_run_to_corpus

        with Store(run.store, readonly=True) as store:
            summary["corpus"] = add_run_to_corpus(cfg, store, run.root.name) | {"path": cfg.corpus.path}
    (run.root / "summary.json").write_text(json.dumps(summary, indent=2))
    return Outcome(summary, ended, error)


def with_embedded_model(cfg: Config, folder: Path, say=print) -> Config:
    """Where `llm.model` is not set: the embedded model (built once per machine) copied into `folder` (a run's
    or a comparison's), and the config pointed at the copy: on a cluster that folder is on the storage every
    node sees, a node's cache is not. A config that names its model is returned as it is."""
    if cfg.llm.model is not None:
        return cfg
    import shutil

    from nngpt_ray.bootstrap import ensure_embedded_model
    from nngpt_ray.config import with_overrides

    source = ensure_embedded_model(say=say)
    copy = folder / "model"
    if not (copy / "manifest.json").exists():
        shutil.copytree(source, copy.with_name("model.partial"), dirs_exist_ok=True)
        copy.with_name("model.partial").rename(copy)
    return with_overrides(cfg, [f"llm.model={copy}"])


def summarize(run: RunDir, controller, ended: str, wall: float) -> dict[str, Any]:
    """The run's table (from the store, so it is what `nngpt status` shows) and how the run went."""
    if not run.store.exists():
        return {"cycles": [], "totals": {}, "tests": [], "run": {"dir": str(run.root), "ended": ended}}
    store = Store(run.store, readonly=True)
    try:
        out = status(store)
        adapters = sum(1 for a in store.adapters() if a["activated"])
    finally:
        store.close()
    out["run"] = {"dir": str(run.root), "ended": ended, "wall_seconds": round(wall, 1),
                  "trainer_busy_fraction": controller.busy_fraction() if controller else None,
                  "adapters_applied": adapters, "events": controller.events if controller else []}
    return out


def _interrupt_on_signals(controller) -> None:
    """Inside the event loop: the first Ctrl-C or SIGTERM asks the controller to stop (it returns with
    what is recorded); a second one raises KeyboardInterrupt at once."""
    loop = asyncio.get_running_loop()

    def first(signum: int) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        signals.install()
        controller.interrupt()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, first, sig)
