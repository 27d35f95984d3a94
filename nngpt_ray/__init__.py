"""nngpt-ray: a self-improving AutoML engine for vision networks on Ray.

An LLM writes PyTorch image-classification networks with their hyperparameters; trainer actors run
them in parallel, each in a sandbox; a learner fine-tunes the LLM on what worked. The public API:

    load_config(path=None, overrides=None) -> Config
    run(config=None, overrides=None, *, resume=None) -> dict   (the run's summary)
    evaluate(network_file, *, dataset=None, epochs=None, hyperparameters=None, config=None) -> EvalResult

The command line is `nngpt` (`nngpt --help`). `import nngpt_ray` does not import torch or Ray.
"""

import os as _os

# actors/, serve/ and baselines/ sit at the top of the repository (the design card's layout) and are installed
# as nngpt_ray.actors, nngpt_ray.serve and nngpt_ray.baselines. When this package is imported from a source
# tree instead of the installed copy (Ray puts the driver's working directory first on its workers' sys.path,
# so a run started in a checkout does this even with the package installed), they are found beside it.
_top = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if not _os.path.isdir(_os.path.join(__path__[0], "serve")) and \
        all(_os.path.isfile(_os.path.join(_top, part, "__init__.py")) for part in ("actors", "serve", "baselines")):
    __path__.append(_top)

from nngpt_ray.api import evaluate, run  # noqa: E402
from nngpt_ray.config import Config, load_config  # noqa: E402
from nngpt_ray.spec import CandidateSpec, EvalResult  # noqa: E402

__version__ = "0.2.0"
__all__ = ["CandidateSpec", "Config", "EvalResult", "evaluate", "load_config", "run"]
