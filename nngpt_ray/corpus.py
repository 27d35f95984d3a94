"""The corpus the LLM learns from and is prompted with: seed networks plus accepted results.

Seeds ship inside the package (`nngpt_ray/seeds/*.py`, one family per file). During a run the corpus
grows by the candidates that trained well, which is what makes few-shot prompts and fill references
better over time.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources

_HP_LINE = re.compile(r"^# hyperparameters: (\{.*\})\s*$", re.M)


@dataclass(frozen=True)
class CorpusEntry:
    name: str  # seed family name or candidate id
    code: str
    hyperparameters: dict = field(default_factory=dict)
    accuracy: float | None = None  # best validation accuracy, when known
    dataset: str | None = None
    family: str = ""  # the seed family it descends from

    @property
    def description(self) -> str:
        doc = re.match(r'\s*"""(.*?)"""', self.code, re.S)
        return " ".join(doc.group(1).split()) if doc else self.name


def hyperparameters_comment(code: str) -> dict:
    """The `# hyperparameters: {...}` line of a corpus file, or {} (a malformed line counts as none)."""
    match = _HP_LINE.search(code)
    if not match:
        return {}
    try:
        values = json.loads(match.group(1))
    except ValueError:
        return {}
    return values if isinstance(values, dict) else {}


def seed_names() -> list[str]:
    """The seed families shipped with the package, sorted."""
    return sorted(p.name[:-3] for p in resources.files("nngpt_ray.seeds").iterdir()
                  if p.name.endswith(".py") and not p.name.startswith("_"))


def seed_entries(families: Sequence[str] | None = None) -> list[CorpusEntry]:
    """The seed networks, sorted by name; only `families` when given (names checked by the config)."""
    out = []
    for name in seed_names():
        if families is not None and name not in families:
            continue
        code = resources.files("nngpt_ray.seeds").joinpath(f"{name}.py").read_text()
        out.append(CorpusEntry(name=name, code=code, hyperparameters=hyperparameters_comment(code), family=name))
    return out


def seed_spec(seed: CorpusEntry):
    """A seed network as a candidate with its own hyperparameters (what the corpus already holds)."""
    from nngpt_ray.spec import CandidateSpec, Hyperparameters, Origin

    values = {k: v for k, v in seed.hyperparameters.items() if k != "epochs"}
    return CandidateSpec(code=seed.code, hyperparameters=Hyperparameters(**values),
                         origin=Origin(task="seed", family=seed.name))


@cache
def _seed_sketches() -> tuple:
    from nngpt_ray.dedup import Deduplicator

    index = Deduplicator(num_perm=128)
    return index, tuple((s.name, index.sketch(s.code)) for s in seed_entries())


def family_of(code: str) -> str:
    """The seed family `code` is most similar to (MinHash Jaccard over code tokens)."""
    index, sketches = _seed_sketches()
    sketch = index.sketch(code)
    return max(sketches, key=lambda item: item[1].jaccard(sketch))[0]
