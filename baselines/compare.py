"""`nngpt compare`: the LLM loop against Ray Tune + Optuna TPE and random search, at equal budget.

Every method runs once per seed into its own run directory under `--out` with the same config (dataset,
split, epochs, trainers, sandbox limits, training seed); the budget is N candidates sent to a trainer
(the loop: `loop.max_sent`, its cycles sharing it; the searchers: N Tune trials). Runs are done seed by
seed, the methods of one seed one after another, so a busy machine slows all of them alike. A run
already finished (its summary.json says so) is not run again: an interrupted comparison resumes
(a search with `Tuner.restore`, the loop with its store).

After its budget, each run's best network is retrained once and scored on the test split.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from nngpt_ray import comparison, datasets
from nngpt_ray.config import Config, with_overrides
from nngpt_ray.failures import UserError
from nngpt_ray.rundir import RunDir
from nngpt_ray.search import SearchSpace
from nngpt_ray.spec import CandidateSpec
from nngpt_ray.store import Store


def check(cfg: Config, methods: list[str], budget: int, seeds: int) -> SearchSpace:
    """Refuse what cannot run, before anything starts. Raises UserError (one line)."""
    unknown = [m for m in methods if m not in comparison.METHODS]
    if unknown or not methods:
        raise UserError(f"unknown method {', '.join(unknown) or '(none given)'}; "
                        f"choose from {', '.join(comparison.METHODS)}")
    if budget < 1:
        raise UserError(f"--budget must be at least 1 (got {budget})")
    if seeds < 1:
        raise UserError(f"--seeds must be at least 1 (got {seeds})")
    datasets.from_config(cfg.data)  # a missing dataset fails here, naming it
    return SearchSpace.of_families(cfg.task.families, cfg.data.dataset)


def method_config(cfg: Config, method: str, seed: int, budget: int, out: Path) -> Config:
    overrides = [f"run.seed={seed}", f"run.out_dir={out}", f"run.name={comparison.run_dir(out, method, seed).name}",
                 "run.final_test=0", "loop.max_minutes=null"]
    if method == "llm":
        per_cycle = math.ceil(budget / cfg.loop.cycles)
        overrides += [f"loop.max_sent={budget}", f"loop.candidates_per_cycle={per_cycle}", "loop.max_candidates=null"]
    return with_overrides(cfg, overrides)


def compare(cfg: Config, methods: list[str], budget: int, seeds: int, out: Path, *, scheduler: str | None = None,
            say=print) -> dict[str, Any]:
    from nngpt_ray.actors.driver import execute
    from nngpt_ray.actors.launcher import PARTS, check_placeable, init_ray
    from nngpt_ray.baselines.tune import search

    space = check(cfg, methods, budget, seeds)
    out.mkdir(parents=True, exist_ok=True)
    init_ray(cfg)
    check_placeable(cfg, PARTS if "llm" in methods else ("trainers",), say)
    runs = []
    for seed in range(seeds):
        for method in methods:
            run_cfg = method_config(cfg, method, seed, budget, out)
            run = RunDir(comparison.run_dir(out, method, seed)).create()
            if finished(run):
                say(f"{method}, seed {seed}: already finished in {run.root}")
            else:
                say(f"{method}, seed {seed}: {budget} candidates into {run.root}")
                run.config.write_text(run_cfg.to_yaml())
                if method == "llm":
                    outcome = execute(run_cfg, run)
                    if outcome.ended == "failed":
                        raise UserError(f"the llm run failed: {outcome.error}")
                    if outcome.ended == "interrupted":
                        raise KeyboardInterrupt
                else:
                    _search(run_cfg, run, method, seed, budget, space, scheduler, search)
                _final_test(run_cfg, run)
                mark_finished(run, method=method, seed=seed)
            store = Store(run.store, readonly=True)
            runs.append(comparison.read_run(store, method, seed))
            store.close()
    return comparison.summarize(runs, cfg.data.dataset, budget, cfg.train.epochs)


def finished(run: RunDir) -> bool:
    """The comparison already completed this run (an interrupted comparison skips it on resume)."""
    marker = run.root / "compare.json"
    return marker.exists() and json.loads(marker.read_text()).get("finished", False)


def mark_finished(run: RunDir, **info) -> None:
    (run.root / "compare.json").write_text(json.dumps({"finished": True, **info}))


def _search(cfg: Config, run: RunDir, method: str, seed: int, budget: int, space: SearchSpace, scheduler,
            search) -> None:
    from nngpt_ray.actors.launcher import store_only

    run.prepare_store(cfg)
    with store_only(run):
        search(cfg, run, method, seed, budget, space, scheduler=scheduler)


def _final_test(cfg: Config, run: RunDir) -> None:
    """The run's best network by validation accuracy, retrained once and scored on the test split."""
    from nngpt_ray.trainer import Trainer

    store = Store(run.store)
    try:
        best = store.best(cfg.data.dataset, 1)
        if not best or store.tests():
            return
        core = Trainer(cfg, owner=f"compare@{run.root.name}")
        try:
            result = core.train(CandidateSpec.model_validate_json(best[0]["spec"]), test=True)
        finally:
            core.close()
        store.add_test(best[0]["id"], "test", result)
    finally:
        store.close()
