"""nngpt-ray: a self-improving AutoML engine for vision networks on Ray.

An LLM writes PyTorch image-classification networks with their hyperparameters; trainer actors run
them in parallel, each in a sandbox; a learner fine-tunes the LLM on what worked. The public API:

    load_config(path=None, overrides=None) -> Config
    run(config=None, overrides=None, *, resume=None) -> dict   (the run's summary)
    evaluate(network_file, *, dataset=None, epochs=None, hyperparameters=None, config=None) -> EvalResult

The command line is `nngpt` (`nngpt --help`). `import nngpt_ray` does not import torch or Ray.
"""

from nngpt_ray.api import evaluate, run
from nngpt_ray.config import Config, load_config
from nngpt_ray.spec import CandidateSpec, EvalResult

__version__ = "0.2.0"
__all__ = ["CandidateSpec", "Config", "EvalResult", "evaluate", "load_config", "run"]
