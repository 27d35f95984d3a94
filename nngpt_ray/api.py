"""The public Python API: load a config, run (or resume) the loop, evaluate one network file.

    import nngpt_ray
    cfg = nngpt_ray.load_config("configs/local.yaml", ["loop.cycles=2"])
    summary = nngpt_ray.run(cfg)                       # the per-cycle table as a dict
    result = nngpt_ray.evaluate("my_net.py", epochs=2)  # an EvalResult, trained in the sandbox

`run` needs Ray (it starts a private local instance, or joins RAY_ADDRESS); `evaluate` does not.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nngpt_ray.config import Config, load_config, with_overrides
from nngpt_ray.failures import CandidateFileError, UserError
from nngpt_ray.rundir import RunDir
from nngpt_ray.source import parse_tree
from nngpt_ray.spec import CandidateSpec, EvalResult


def prepare_run(config: Config | str | Path | None = None, overrides: list[str] | None = None,
                resume: str | Path | None = None) -> tuple[Config, RunDir]:
    """The config and run directory of a new run, or of the run to resume (with its own config.yaml)."""
    from nngpt_ray.store import Store

    if resume is not None:
        if config is not None:
            raise UserError("--resume continues a run with its own config.yaml; change settings with --set")
        run = RunDir.existing(resume)
        Store(run.store).close()  # a foreign or corrupted store fails here, with a clear message
        cfg = load_config(run.config, overrides)
    else:
        cfg = with_overrides(config, overrides or []) if isinstance(config, Config) else load_config(config, overrides)
        run = RunDir.new(cfg.run.out_dir, cfg.run.name)
        if run.store.exists():
            raise UserError(f"{run.root} already holds a run; use --resume {run.root} or another --name")
    run.config.write_text(cfg.to_yaml())
    return cfg, run


def run(config: Config | str | Path | None = None, overrides: list[str] | None = None, *,
        resume: str | Path | None = None) -> dict[str, Any]:
    """Run the loop to the end of its budget (or resume `resume`); returns the summary (summary.json)."""
    from nngpt_ray.actors.driver import execute

    cfg, run_dir = prepare_run(config, overrides, resume)
    return execute(cfg, run_dir).summary


def evaluate(network: str | Path, *, dataset: str | None = None, epochs: int | None = None,
             hyperparameters: dict[str, float] | None = None, config: Config | str | Path | None = None,
             test: bool = False, on_epoch=None) -> EvalResult:
    """Train one network file (LEMUR contract) in the sandbox; accuracies are on the validation split,
    and with `test` the test split is scored once after the last epoch. `on_epoch(epoch)` is called after
    each epoch; returning False stops training."""
    from nngpt_ray import datasets
    from nngpt_ray.harness import evaluate as run_sandboxed

    cfg = config if isinstance(config, Config) else load_config(config)
    spec = network_spec(network, dataset=dataset, epochs=epochs, hyperparameters=hyperparameters, config=cfg)
    data = datasets.from_config(cfg.data, spec.dataset)
    return run_sandboxed(spec, data, cfg.sandbox, epochs=spec.hyperparameters.epochs, device=cfg.train.device,
                         threads=cfg.train.threads, seed=cfg.run.seed, test=test,
                         on_epoch=(lambda epoch, _features: on_epoch(epoch)) if on_epoch else None)


def network_spec(network: str | Path, *, dataset: str | None = None, epochs: int | None = None,
                 hyperparameters: dict[str, float] | None = None, config: Config | None = None) -> CandidateSpec:
    """A network file as a candidate: its `# hyperparameters:` line and declared defaults, then the given
    values on top. Raises UserError (unreadable file, unknown dataset, bad values) before anything runs."""
    from pydantic import ValidationError

    from nngpt_ray import datasets
    from nngpt_ray.config import describe_validation_error
    from nngpt_ray.contract import check_contract
    from nngpt_ray.corpus import hyperparameters_comment
    from nngpt_ray.spec import DEFAULT_HYPERPARAMETERS, CandidateSpec, Hyperparameters, Transform

    cfg = config or Config()
    path = Path(network)
    try:
        code = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise CandidateFileError(f"cannot read network file {path}: {getattr(err, 'strerror', None) or err}") from None
    name = dataset or cfg.data.dataset
    datasets.dataset_info(name)
    epochs = cfg.train.epochs if epochs is None else epochs
    if epochs < 1:
        raise UserError("--epochs must be at least 1")
    values: dict[str, Any] = {"lr": DEFAULT_HYPERPARAMETERS["lr"], "momentum": DEFAULT_HYPERPARAMETERS["momentum"]}
    try:
        declared = check_contract(parse_tree(code)).declared or set()
    except SyntaxError:
        declared = set()
    values.update({k: DEFAULT_HYPERPARAMETERS[k] for k in declared if k in DEFAULT_HYPERPARAMETERS})
    values.update(hyperparameters_comment(code))
    values.update(hyperparameters or {})
    values["epochs"] = epochs
    try:
        prm = Hyperparameters(**values)
    except ValidationError as err:
        raise UserError(f"bad hyperparameters: {describe_validation_error(err, Hyperparameters)}") from None
    transform = Transform(resize=cfg.data.resize, normalize=cfg.data.normalize, hflip=cfg.data.hflip)
    return CandidateSpec(code=code, dataset=name, hyperparameters=prm, transform=transform)
