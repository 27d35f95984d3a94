"""`nngpt run`: set up the run directory and Ray, drive the controller, show progress, end with the table.

The same command runs on a laptop (a local Ray started here) and on a cluster (`ray job submit`
sets RAY_ADDRESS, and ray.init joins it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import time
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from nngpt_ray.config import Config, load_config
from nngpt_ray.failures import UserError
from nngpt_ray.report import status_table
from nngpt_ray.rundir import RunDir
from nngpt_ray.store import Store

console = Console(stderr=True, highlight=False)


def run_from_cli(args: argparse.Namespace) -> int:
    overrides = list(args.set)
    for flag, key in (("cycles", "loop.cycles"), ("candidates", "loop.max_candidates"), ("minutes", "loop.max_minutes"),
                      ("out", "run.out_dir"), ("name", "run.name")):
        if getattr(args, flag) is not None:
            overrides.append(f"{key}={getattr(args, flag)}")
    if args.resume:
        if args.config:
            raise UserError("--resume continues a run with its own config.yaml; change settings with --set")
        run = RunDir.existing(args.resume)
        Store(run.store).close()  # a foreign or corrupted store fails here, with a clear message
        cfg = load_config(run.config, overrides)
    else:
        cfg = load_config(args.config, overrides)
        run = RunDir.new(cfg.run.out_dir, cfg.run.name)
        if run.store.exists():
            raise UserError(f"{run.root} already holds a run; use --resume {run.root} or another --name")
    run.config.write_text(cfg.to_yaml())
    summary = execute(cfg, run, resume=bool(args.resume))
    console.print(status_table(summary, title=f"{run.root}"))
    info = summary["run"]
    console.print(f"wall {info['wall_seconds']:.0f} s; adapters applied: {info['adapters_applied']}; "
                  f"trainer busy fraction: {info['trainer_busy_fraction']}")
    if info.get("interrupted"):
        console.print(f"interrupted: continue with  nngpt run --resume {run.root}")
        return 130
    console.print(f"results: {run.root}  (nngpt status {run.root}; nngpt export {run.root})")
    return 0


def execute(cfg: Config, run: RunDir, resume: bool = False, show_progress: bool = True) -> dict[str, Any]:
    """Run (or resume) the loop to the end of its budget; returns the summary (also saved as summary.json)."""
    from nngpt_ray.actors.controller import Controller

    if cfg.llm.model is None:
        from nngpt_ray.bootstrap import ensure_embedded_model

        ensure_embedded_model(console=console)
    _init_ray(cfg)
    controller = Controller(cfg, run, resume=resume)
    interrupted = False
    progress = _Progress(enabled=show_progress)
    try:
        controller.start_actors()
        with progress:
            summary = asyncio.run(controller.run(on_tick=progress.update))
    except KeyboardInterrupt:
        interrupted = True
        summary = controller.summary()
    finally:
        _shutdown(controller)
    summary["run"]["interrupted"] = interrupted
    (run.root / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _init_ray(cfg: Config) -> None:
    import ray

    if ray.is_initialized():
        return
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    for name in ("ray", "ray.serve"):
        logging.getLogger(name).setLevel(logging.WARNING)
    if address:
        ray.init(address=address, namespace=cfg.ray.namespace, log_to_driver=False)
    else:
        console.print("starting a local Ray instance ...")
        # it announces, as a warning, that token authentication is on: the safe default for an instance we own
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
        ray.init(num_cpus=cfg.ray.num_cpus, namespace=cfg.ray.namespace, log_to_driver=False,
                 include_dashboard=cfg.ray.dashboard, configure_logging=True, logging_level=logging.WARNING)


def _shutdown(controller) -> None:
    """Remove this run's actors and LLM application; a local Ray started here stops with the process."""
    import ray
    from ray import serve

    from nngpt_ray.serve.app import quiet

    quiet()
    try:
        serve.delete(f"nngpt-llm-{controller.name}")
    except Exception:  # the run is over either way; Serve may already be gone
        pass
    for handle in [getattr(controller, a, None) for a in ("learner", "dedup", "predictor", "store")] + list(
            getattr(controller, "trainers", [])):
        if handle is not None:
            try:
                ray.kill(handle)
            except Exception:
                pass


class _Progress:
    """Live view on a terminal; one line every 15 s otherwise (e.g. under `ray job submit`)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.live = Live(console=console, refresh_per_second=2, transient=True) if enabled and console.is_terminal else None
        self.last_line = 0.0

    def __enter__(self):
        if self.live:
            self.live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.live:
            self.live.__exit__(*exc)

    def update(self, snap: dict[str, Any]) -> None:
        if not self.enabled:
            return
        if self.live:
            self.live.update(self._render(snap))
        elif time.monotonic() - self.last_line >= 15:
            self.last_line = time.monotonic()
            c = snap["counts"].get(snap["cycle"], {})
            console.print(f"[{snap['elapsed']:5.0f} s] cycle {snap['cycle']}/{snap['cycles'] - 1} adapter "
                          f"v{snap['adapter']}: generated {c.get('generated', 0)}, valid {c.get('valid', 0)}, "
                          f"unique {c.get('unique', 0)}, trained {c.get('trained', 0)}; queue {snap['queue']}, "
                          f"training {snap['training']}/{snap['trainers']}"
                          f"{', learner busy' if snap['learning'] else ''}")

    @staticmethod
    def _render(snap: dict[str, Any]):
        table = Table(title=f"nngpt run  {snap['elapsed']:.0f} s", expand=False)
        for name in ("cycle", "generated", "valid", "unique", "trained", "best acc"):
            table.add_column(name, justify="right")
        for cycle, c in snap["counts"].items():
            best = "-" if c["best"] is None else f"{100 * c['best']:.1f}%"
            table.add_row(str(cycle), str(c["generated"]), str(c["valid"]), str(c["unique"]), str(c["trained"]), best)
        state = (f"cycle {snap['cycle']}/{snap['cycles'] - 1}, adapter v{snap['adapter']}, queue {snap['queue']}, "
                 f"training {snap['training']}/{snap['trainers']}, learner {'busy' if snap['learning'] else 'idle'}")
        return Group(table, Text(state), *[Text(f"  {e}", style="dim") for e in snap["events"]])
