"""The search a user would run instead of the LLM: a model zoo (the seed families, or `task.families`)
as one categorical choice, times the hyperparameters (lr log-uniform, momentum, batch, and whatever
the networks declare in `supported_hyperparameters()`), times the transform where it matters (a
horizontal flip only for natural images). Ray-free: Ray Tune's searchers (baselines/) sample it, and
the one-shot HPO comparison samples the hyperparameter part for a fixed network.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from nngpt_ray.contract import check_contract
from nngpt_ray.corpus import CorpusEntry, seed_entries
from nngpt_ray.failures import UserError
from nngpt_ray.source import parse_tree
from nngpt_ray.spec import CandidateSpec, Hyperparameters, Origin, Transform

BATCHES = (16, 32, 64, 128)
LR = (1e-4, 0.5)
MOMENTUM = (0.0, 0.99)
KNOWN_RANGES = {"dropout": (0.0, 0.5)}  # declared hyperparameters the space knows a range for; others: (0, 1)
FLIP_DATASETS = frozenset({"cifar10", "cifar100"})  # where a mirrored image keeps its label


@dataclass(frozen=True)
class Dimension:
    name: str
    kind: Literal["choice", "loguniform", "uniform"]
    values: tuple  # the choices, or (low, high)


def declared(code: str) -> set[str]:
    """The hyperparameter names a network declares (statically), beyond the three every network gets."""
    names = check_contract(parse_tree(code)).declared or set()
    return names - {"lr", "momentum", "batch", "epochs"}


@dataclass(frozen=True)
class SearchSpace:
    families: tuple[str, ...]  # the networks to choose from, by name; empty: the network is fixed
    extra: tuple[str, ...]  # declared hyperparameters beyond lr, momentum, batch
    hflip: bool  # whether the flip is a choice
    codes: dict[str, str] = field(default_factory=dict, compare=False)  # name -> network code
    defaults: dict[str, dict] = field(default_factory=dict, compare=False)  # name -> its own hyperparameters

    @classmethod
    def of_families(cls, families: list[str] | None, dataset: str) -> SearchSpace:
        """The zoo search over seed families (all of them when None). Raises UserError for unknown names."""
        seeds = seed_entries(families)
        if families is not None:
            unknown = sorted(set(families) - {s.name for s in seeds})
            if unknown:
                raise UserError(f"the search space names unknown seed families: {', '.join(unknown)}")
        return cls.of_networks({s.name: s for s in seeds}, dataset)

    @classmethod
    def of_networks(cls, networks: dict[str, CorpusEntry], dataset: str) -> SearchSpace:
        extra = sorted(set().union(*(declared(n.code) for n in networks.values())))
        return cls(tuple(networks), tuple(extra), dataset in FLIP_DATASETS,
                   codes={k: n.code for k, n in networks.items()},
                   defaults={k: n.hyperparameters for k, n in networks.items()})

    @classmethod
    def of_network(cls, code: str, dataset: str) -> SearchSpace:
        return cls((), tuple(sorted(declared(code))), dataset in FLIP_DATASETS)

    def dimensions(self) -> list[Dimension]:
        dims = [Dimension("family", "choice", self.families)] if self.families else []
        dims += [Dimension("lr", "loguniform", LR), Dimension("momentum", "uniform", MOMENTUM),
                 Dimension("batch", "choice", BATCHES)]
        dims += [Dimension(name, "uniform", KNOWN_RANGES.get(name, (0.0, 1.0))) for name in self.extra]
        if self.hflip:
            dims.append(Dimension("hflip", "choice", (False, True)))
        return dims

    def spec(self, params: dict[str, Any], *, dataset: str, epochs: int, transform: Transform, origin: Origin,
             code: str | None = None) -> CandidateSpec:
        """The candidate for one point of the space: the chosen network (or `code`, for a fixed network) with
        these hyperparameters; declared values the point lacks get the network's own, else the range's low end."""
        family = params.get("family")
        if code is None:
            code = self.codes[family]
        defaults = self.defaults.get(family, {}) if family else {}
        values = {k: float(params[k]) for k in ("lr", "momentum")} | {"batch": int(params["batch"])}
        values |= {k: float(params.get(k, defaults.get(k, KNOWN_RANGES.get(k, (0.0, 1.0))[0]))) for k in declared(code)}
        if "hflip" in params:
            transform = transform.model_copy(update={"hflip": bool(params["hflip"])})
        return CandidateSpec(code=code, hyperparameters=Hyperparameters(**values, epochs=epochs), transform=transform,
                             dataset=dataset, origin=origin)
