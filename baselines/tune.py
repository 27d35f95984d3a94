"""The searches a user would run instead of the LLM loop, on Ray Tune: Optuna's TPE (through
`OptunaSearch`, a seeded `TPESampler` with constant liar for parallel trials, behind a
`ConcurrencyLimiter` at the trainer count) and random search (Tune's `BasicVariantGenerator`), with an
optional ASHA scheduler whose stopped trials reach Optuna as pruned, not complete.

Every trial trains in the same sandbox as the loop's candidates (`SandboxTrainable`) with the trainers'
resources, and lands in the run's store. The experiment directory stays under the run directory, and a
run that was interrupted resumes with `Tuner.restore`.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from typing import Any, Literal

from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search import ConcurrencyLimiter
from ray.tune.search.basic_variant import BasicVariantGenerator
from ray.tune.search.optuna import OptunaSearch

from nngpt_ray.baselines.trainable import METRIC, SandboxTrainable
from nngpt_ray.config import Config
from nngpt_ray.rundir import RunDir
from nngpt_ray.search import Dimension, SearchSpace

Method = Literal["tpe", "random"]


class PrunedAwareOptunaSearch(OptunaSearch):
    """Ray Tune's OptunaSearch tells Optuna that every trial completed, including those a scheduler stopped
    early (its study has a NopPruner). Here a trial stopped between epochs is told as PRUNED, so TPE does
    not take its early accuracy for a final one."""

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if result and not error and result.get("status") == "training" and trial_id not in self._completed_trials:
            import optuna

            self._ot_study.tell(self._ot_trials[trial_id], state=optuna.trial.TrialState.PRUNED)
            self._completed_trials.add(trial_id)
            return
        super().on_trial_complete(trial_id, result, error)


def domain(d: Dimension):
    if d.kind == "choice":
        return tune.choice(list(d.values))
    if d.kind == "loguniform":
        return tune.loguniform(*d.values)
    return tune.uniform(*d.values)


def searcher(method: Method, seed: int, concurrency: int):
    if method == "tpe":
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)  # not a line per study: the command says what runs
        sampler = optuna.samplers.TPESampler(seed=seed, constant_liar=True)
        return ConcurrencyLimiter(PrunedAwareOptunaSearch(metric=METRIC, mode="max", sampler=sampler),
                                  max_concurrent=concurrency)
    return BasicVariantGenerator(random_state=seed, max_concurrent=concurrency)


def search(cfg: Config, run: RunDir, method: Method, seed: int, budget: int, space: SearchSpace, *,
           scheduler: Literal["asha"] | None = None, code: str | None = None, every_network: bool = False) -> None:
    """Run `budget` trials of `space` (a fixed network's hyperparameters when `code` is given). The run's
    store actor must be up (the trials write to it). `every_network` (random search only): `budget`
    random settings for each network of the space, instead of `budget` trials in all."""
    logging.getLogger("ray.tune").setLevel(logging.ERROR)
    trainable = tune.with_resources(
        tune.with_parameters(SandboxTrainable, run=run.root.name, method=method,
                             settings=cfg.model_dump(mode="json"), space=space, code=code),
        {"cpu": cfg.trainers.num_cpus, "gpu": cfg.trainers.num_gpus, **cfg.trainers.resources})  # as a trainer asks
    path = run.root / "tune" / "search"
    if tune.Tuner.can_restore(str(path)):
        tuner = tune.Tuner.restore(str(path), trainable, resume_unfinished=True, restart_errored=True)
    else:
        schedule = ASHAScheduler(metric=METRIC, mode="max", max_t=cfg.train.epochs, grace_period=1) \
            if scheduler == "asha" else None
        tuner = tune.Tuner(
            trainable,
            param_space={d.name: tune.grid_search(list(d.values)) if every_network and d.name == "family" else domain(d)
                         for d in space.dimensions()},
            tune_config=tune.TuneConfig(search_alg=searcher(method, seed, cfg.trainers.count), scheduler=schedule,
                                        num_samples=budget, reuse_actors=True,
                                        max_concurrent_trials=cfg.trainers.count),
            run_config=tune.RunConfig(name="search", storage_path=str(run.root / "tune"), verbose=0,
                                      stop={"training_iteration": cfg.train.epochs},
                                      checkpoint_config=tune.CheckpointConfig(checkpoint_at_end=False),
                                      failure_config=tune.FailureConfig(max_failures=cfg.trainers.max_retries)))
    # Tune prints its experiment box to stdout even at verbose=0; the command's stdout is its table and JSON
    with contextlib.redirect_stdout(sys.stderr):
        results = tuner.fit()
    networks = next((len(d.values) for d in space.dimensions() if d.name == "family"), 1) if every_network else 1
    if results.num_terminated + results.num_errors < budget * networks:
        # Tune stops on Ctrl-C or SIGTERM, saves its state and returns: the search is not finished, and its
        # run must not be marked so (the next `nngpt compare` resumes it with Tuner.restore)
        raise KeyboardInterrupt


def best_point(run: RunDir) -> dict[str, Any] | None:
    """The config of the best trial of a finished search (for inspection)."""
    results = tune.Tuner.restore(str(run.root / "tune" / "search"), SandboxTrainable).get_results()
    best = results.get_best_result(metric=METRIC, mode="max")
    return best.config if best else None
